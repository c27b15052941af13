"""The web view's server: one small trio HTTP/1.1 server on 127.0.0.1.

Routes: ``/`` (the page) and ``/static/*`` (its script and style, shipped in this package);
``/api/<section>`` and ``/api/snapshot`` (JSON, see :mod:`p2pnode.web.snapshots`); ``/events``
(server-sent events fed by the daemon's event bus, so the page updates without a reload, plus
``section`` events that push what changes without a bus event, so the page never polls).

Resources: every connection first sends its request head, at most :data:`~p2pnode.web.http.MAX_HEAD`
bytes within ``http.read_timeout``; at most ``MAX_REQUESTS`` requests are served at once besides
``http.max_clients`` event streams (one more is answered 503). The bus feeds one queue per
stream of ``http.queue_size`` events: a browser that falls that far behind is disconnected
rather than buffered for (``EventSource`` reconnects and the page reloads its snapshot), and
every write must finish within ``http.read_timeout``.

Cancellation: everything runs in :meth:`WebServer.serve`'s nursery and ends with it; each
connection is closed in ``finally`` under a shielded, bounded scope.

Errors: a request this view does not serve gets a 4xx with a one-line reason; an unexpected
error in a handler is logged and answered 500, and never stops the daemon.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from importlib import resources
from typing import Any

import trio

from p2pnode.config.load import HttpConfig
from p2pnode.events import EventBus
from p2pnode.ipc.server import Method
from p2pnode.web.http import (
    MAX_HEAD,
    HttpError,
    Request,
    check_host,
    error_response,
    head_complete,
    int_query,
    parse_head,
    response,
    response_head,
)
from p2pnode.web.snapshots import MAX_LOG, SECTIONS, Snapshots

log = logging.getLogger(__name__)

#: Bus topics forwarded to browsers (docs/web.md lists what each carries).
TOPICS = ("members", "commits", "jobs", "rounds")
#: Plain requests served at once besides the event streams; one more is answered 503 at once.
MAX_REQUESTS = 32
#: Seconds between comment lines on an idle event stream: proxies keep it open, and a browser
#: that went away is noticed by a failed write at the latest then.
KEEPALIVE = 15.0
DEFAULT_LOG = 50
#: Seconds between the pushes of what changes without a bus event (transfers in flight, the
#: members' "last heard"), made only while a stream is open: an in-process read costs far less
#: than the HTTP request a polling page would make (benchmarks/idle_cost.py).
TICK = 3.0
#: The members' snapshot is pushed every this many ticks (every 15 s).
MEMBERS_EVERY = 5

STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/app.css": ("app.css", "text/css; charset=utf-8"),
}


def _load_static() -> dict[str, tuple[bytes, str]]:
    folder = resources.files("p2pnode.web") / "static"
    return {
        path: (folder.joinpath(name).read_bytes(), ctype) for path, (name, ctype) in STATIC.items()
    }


def to_json(value: Any) -> bytes:
    """Compact JSON a browser can parse: bytes as hex, and NaN or infinity (a diverged loss) as
    null, since ``JSON.parse`` refuses Python's ``NaN``."""
    return json.dumps(_finite(value), default=_plain, separators=(",", ":")).encode()


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


class _Stream:
    """One browser's event stream: its bounded queue and the scope that ends it."""

    def __init__(self, queue_size: int) -> None:
        self.send, self.receive = trio.open_memory_channel[bytes](queue_size)
        self.scope = trio.CancelScope()
        self.overflowed = False


class WebServer:
    def __init__(
        self,
        *,
        methods: Mapping[str, Method],
        events: EventBus,
        peer_id: str,
        cfg: HttpConfig,
        tick: float = TICK,
    ) -> None:
        self.snapshots = Snapshots(methods)
        self.events = events
        self.peer_id = peer_id
        self.cfg = cfg
        self.tick = tick
        self.static = _load_static()
        self.streams: set[_Stream] = set()
        self.connections = 0
        self.counters = {"requests": 0, "refused": 0, "streams_dropped": 0, "errors": 0}

    async def serve(
        self, port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve on 127.0.0.1:``port`` until cancelled; ``started`` with the bound port."""
        listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
        async with trio.open_nursery() as nursery:
            for topic in TOPICS:
                # Subscribed before started: an event published once we are up is not missed.
                nursery.start_soon(self._forward, topic, self.events.subscribe(topic))
            nursery.start_soon(self._push_sections)
            task_status.started(listeners[0].socket.getsockname()[1])
            await trio.serve_listeners(self._handle, listeners, handler_nursery=nursery)

    # -- the bus to the browsers --------------------------------------------------------------

    async def _forward(
        self, topic: str, received: trio.MemoryReceiveChannel[dict[str, Any]]
    ) -> None:
        try:
            async for event in received:
                self.broadcast(topic, event)
        finally:
            self.events.unsubscribe(topic, received)

    async def _push_sections(self) -> None:
        """While a stream is open: the transfers when they changed, each tick, and the members
        every ``MEMBERS_EVERY`` ticks, as ``section`` events carrying the snapshot itself."""
        last: Any = None
        ticks = 0
        while True:
            await trio.sleep(self.tick)
            if not self.streams:
                last, ticks = None, 0
                continue
            ticks += 1
            transfers = await self.snapshots.section("transfers")
            if transfers != last:
                self.broadcast("section", {"name": "transfers", "data": transfers})
                last = transfers
            if ticks % MEMBERS_EVERY == 0:
                members = await self.snapshots.section("members")
                self.broadcast("section", {"name": "members", "data": members})

    def broadcast(self, topic: str, event: dict[str, Any]) -> None:
        """Queue one event for every stream; a stream whose queue is full is ended."""
        if not self.streams:
            return
        frame = b"event: " + topic.encode() + b"\ndata: " + to_json(event) + b"\n\n"
        for stream in list(self.streams):
            try:
                stream.send.send_nowait(frame)
            except trio.WouldBlock:
                stream.overflowed = True
                stream.scope.cancel()
                self.streams.discard(stream)
                self.counters["streams_dropped"] += 1

    # -- connections --------------------------------------------------------------------------

    async def _handle(self, conn: trio.SocketStream) -> None:
        try:
            if self.connections >= self.cfg.max_clients + MAX_REQUESTS:
                self.counters["refused"] += 1
                await self._refuse(conn, HttpError(503, "too many requests at once"))
                return
            self.connections += 1
            try:
                await self._serve_one(conn)
            finally:
                self.connections -= 1
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError):
            pass  # the browser went away, or stopped reading
        except Exception:
            self.counters["errors"] += 1
            log.exception("web: handler failed")
        finally:
            with trio.move_on_after(1, shield=True):
                await conn.aclose()

    async def _send(self, conn: trio.SocketStream, data: bytes) -> None:
        with trio.fail_after(self.cfg.read_timeout):
            await conn.send_all(data)

    async def _refuse(self, conn: trio.SocketStream, err: HttpError) -> None:
        await self._send(conn, error_response(err))
        # What the client sent is read (briefly, and thrown away) before the close: closing on
        # unread bytes resets the connection, and the client might never see the answer.
        await conn.send_eof()
        with trio.move_on_after(min(1.0, self.cfg.read_timeout)):
            while await conn.receive_some(MAX_HEAD):
                pass

    async def _read_head(self, conn: trio.SocketStream) -> bytes:
        buffer = b""
        with trio.move_on_after(self.cfg.read_timeout) as scope:
            while not head_complete(buffer) and len(buffer) < MAX_HEAD:
                chunk = await conn.receive_some(MAX_HEAD)
                if not chunk:
                    break
                buffer += chunk
        if scope.cancelled_caught:
            raise HttpError(408, f"no complete request head within {self.cfg.read_timeout:g} s")
        return buffer

    async def _serve_one(self, conn: trio.SocketStream) -> None:
        self.counters["requests"] += 1
        try:
            request = parse_head(await self._read_head(conn))
            check_host(request)
            if request.method != "GET":
                raise HttpError(405, "only GET is served here")
            if request.path == "/events":
                await self._events(conn)
                return
            try:
                body, ctype = await self._route(request)
            except HttpError:
                raise
            except Exception:  # a bug behind one section: say so, and serve on
                self.counters["errors"] += 1
                log.exception("web: %s failed", request.path)
                raise HttpError(500, "the daemon failed to answer this; see its log") from None
        except HttpError as err:
            self.counters["refused"] += 1
            await self._refuse(conn, err)
            return
        await self._send(conn, response(200, body, ctype))

    async def _route(self, request: Request) -> tuple[bytes, str]:
        static = self.static.get(request.path)
        if static is not None:
            return static
        limit = int_query(request, "limit", DEFAULT_LOG, 1, MAX_LOG)
        if request.path == "/api/snapshot":
            return self._json({"peer_id": self.peer_id, **await self.snapshots.all(limit)})
        name = request.path.removeprefix("/api/")
        if request.path.startswith("/api/") and name in SECTIONS:
            kw = {"limit": limit} if name == "log" else {}
            return self._json(await self.snapshots.section(name, **kw))
        raise HttpError(404, f"nothing at {request.path}")

    @staticmethod
    def _json(value: Any) -> tuple[bytes, str]:
        return to_json(value), "application/json"

    async def _events(self, conn: trio.SocketStream) -> None:
        if len(self.streams) >= self.cfg.max_clients:
            raise HttpError(503, f"{self.cfg.max_clients} event streams are open already")
        stream = _Stream(self.cfg.queue_size)
        self.streams.add(stream)
        try:
            await self._send(
                conn, response_head(200, "text/event-stream", None, (("X-Accel-Buffering", "no"),))
            )
            hello = {"peer_id": self.peer_id, "topics": list(TOPICS)}
            await self._send(conn, b"retry: 2000\nevent: hello\ndata: " + to_json(hello) + b"\n\n")
            with stream.scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._watch_close, conn, stream.scope)
                    while True:
                        frame = b": keepalive\n\n"
                        with trio.move_on_after(KEEPALIVE):
                            frame = await stream.receive.receive()
                        # Outside the keepalive scope: a write is never cut in the middle.
                        await self._send(conn, frame)
        finally:
            self.streams.discard(stream)
            stream.send.close()

    @staticmethod
    async def _watch_close(conn: trio.SocketStream, scope: trio.CancelScope) -> None:
        """End the stream as soon as the browser closes its side (it sends nothing more)."""
        try:
            while await conn.receive_some(1024):
                pass
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        scope.cancel()
