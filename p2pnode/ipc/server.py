"""The IPC server: accepts clients on a Unix socket and dispatches their requests.

Frames: see :mod:`p2pnode_protocols.framing`. A request is ``{"id": int, "method": str, "params":
map}``; the reply is ``{"id", "result"}`` or ``{"id", "error": {"code", "message"}}``; a
subscription pushes ``{"id": <its request id>, "event": map}`` until ``unsubscribe`` or disconnect.

Errors: a frame whose body is not a CBOR map gets a ``bad_request`` reply and the connection
stays open (the length prefix keeps us in sync). A frame over ``ipc.max_frame`` gets
``too_large`` and the connection is closed, since its body cannot be skipped safely without
reading it. A truncated frame (client gone mid-frame) is logged. Nothing a client sends can
affect another client.

Resources: at most ``ipc.max_clients`` connections are served at once. A new client finding
them all taken evicts the connection idle the longest (no request in flight, no subscription),
so 256 idle clients cannot lock out the CLI; only when every connection is busy does it wait in
the kernel's accept queue (``LISTEN_BACKLOG``). A connection idle for ``idle_timeout`` seconds is
closed, and one that stalls ``frame_timeout`` seconds inside a frame too. Partial frames share a
budget of ``max_buffered`` bytes across all clients: a frame larger than ``READ_CHUNK`` reserves
its whole announced size before its body is read (and waits while the budget is spent), so
stalled 16 MiB frames pin at most that much memory, not 16 MiB per connection. At most
``MAX_INFLIGHT`` requests per connection run at once.

Cancellation: the server runs until its nursery is cancelled; connection handlers are children
of it, and the socket file is removed on the way out.
"""

from __future__ import annotations

import errno
import logging
import os
import socket as stdsocket
import sqlite3
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from p2pnode.ipc.errors import BadRequest, InternalError, IpcError, NoSpace, UnknownMethod
from p2pnode_protocols.framing import (
    FrameDecoder,
    FrameError,
    FrameTooLarge,
    MalformedFrame,
    encode_frame,
    encode_frame_with_data,
)

log = logging.getLogger(__name__)

MAX_INFLIGHT = 64
READ_CHUNK = 1 << 16  # also the part of a frame read before its memory is reserved
LISTEN_BACKLOG = 4096  # the kernel caps it at net.core.somaxconn
IDLE_TIMEOUT = 600.0
FRAME_TIMEOUT = 30.0
MAX_BUFFERED = 64 << 20
EVICTION_LOG_INTERVAL = 10.0  # a flood of connects must not flood the log


class ByteBudget:
    """Bytes that partial frames may hold across all connections; a reservation waits until
    the bytes are free. Reservations are whole frames, so a holder never waits for more and
    every holder can finish: no deadlock, only queueing (a stalled holder is closed after
    ``frame_timeout``)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._lot = trio.lowlevel.ParkingLot()

    async def acquire(self, n: int) -> None:
        while self.used + n > self.limit:
            await self._lot.park()
        self.used += n

    def release(self, n: int) -> None:
        self.used -= n
        self._lot.unpark_all()


@dataclass(frozen=True, slots=True)
class DataResult:
    """A method's result ``{"data": b"".join(parts)}``, sent with the parts as they are: a
    4 MiB read is neither joined nor copied into a CBOR encoding on its way out."""

    parts: list[bytes | memoryview]


class Session:
    """One client connection: lets a method push events for a subscription."""

    def __init__(self, stream: trio.SocketStream, nursery: trio.Nursery) -> None:
        self._stream = stream
        self.nursery = nursery  # subscription forwarders live here, dying with the connection
        self._lock = trio.Lock()
        self.subscriptions: dict[int, trio.CancelScope] = {}
        self.closed = False
        # Per-connection resources (upload sessions...) released when the client goes.
        self.on_close: list[Callable[[], None]] = []
        #: What a method keeps for this connection (an external trainer's task inbox).
        self.extras: dict[Any, Any] = {}
        self.busy = 0  # requests in flight
        self.last_active = trio.current_time()  # last byte received or reply finished

    @property
    def evictable(self) -> bool:
        """Nothing would be lost by closing it: no request runs, nothing is subscribed and no
        external trainer is attached."""
        return self.busy == 0 and not self.subscriptions and not self.extras

    def evict(self) -> None:
        self.nursery.cancel_scope.cancel()

    async def send(self, frame: dict[str, Any]) -> None:
        await self.send_buffers([encode_frame(frame)])

    async def send_buffers(self, buffers: list[bytes | memoryview]) -> None:
        """Send one frame given as consecutive buffers, whole, between other frames."""
        async with self._lock:
            if self.closed:
                return
            try:
                for data in buffers:
                    await self._stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self.closed = True


Method = Callable[[dict[str, Any], Session, int], Awaitable[Any]]


class IpcServer:
    def __init__(
        self,
        path: Path,
        methods: dict[str, Method],
        *,
        max_frame: int,
        max_clients: int,
        on_request: Callable[[str, str, float], None] | None = None,
        idle_timeout: float = IDLE_TIMEOUT,
        frame_timeout: float = FRAME_TIMEOUT,
        max_buffered: int = MAX_BUFFERED,
    ) -> None:
        """``on_request(method, outcome, seconds)`` is told of every request answered
        (outcome ``ok`` or an error code): the metrics hook."""
        self.path = path
        self.methods = methods
        self.max_frame = max_frame
        self.max_clients = max_clients
        self.idle_timeout = idle_timeout
        self.frame_timeout = frame_timeout
        # At least one frame of the largest size must fit, or such a frame would wait forever.
        self.budget = ByteBudget(max(max_buffered, max_frame))
        self.sessions: set[Session] = set()
        self._starting = 0  # accepted, their Session not made yet: they hold slots too
        self.evicted = 0
        self._evictions_logged_at = -EVICTION_LOG_INTERVAL
        self._slot_freed = trio.lowlevel.ParkingLot()
        self.requests_total: dict[tuple[str, str], int] = {}  # (method, outcome) -> count
        self.on_request = on_request

    def _bind(self) -> trio.socket.SocketType:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() or self.path.is_symlink():
            probe = stdsocket.socket(stdsocket.AF_UNIX, stdsocket.SOCK_STREAM)
            try:
                probe.connect(str(self.path))
            except OSError:
                self.path.unlink()  # stale socket from a daemon that died
            else:
                raise OSError(errno.EADDRINUSE, f"a daemon is already serving {self.path}")
            finally:
                probe.close()
        sock = trio.socket.socket(stdsocket.AF_UNIX, stdsocket.SOCK_STREAM)
        old = os.umask(0o177)  # the socket is born 0600: no window where others can connect
        try:
            sock._sock.bind(str(self.path))  # sync bind: a filesystem path, no network wait
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        sock.listen(LISTEN_BACKLOG)
        return sock

    async def run(self, *, task_status: trio.TaskStatus[IpcServer] = trio.TASK_STATUS_IGNORED):
        sock = self._bind()
        listener = trio.SocketListener(sock)
        try:
            async with trio.open_nursery() as nursery:
                task_status.started(self)
                # Accept loop written out (not serve_listeners) so max_clients gates accept().
                while True:
                    await self._wait_for_slot()
                    try:
                        stream = await listener.accept()
                    except OSError as exc:
                        log.warning("IPC accept failed: %s", exc)
                        await trio.sleep(0.1)
                        continue
                    self._make_room()
                    self._starting += 1
                    nursery.start_soon(self._serve_client, stream)
        finally:
            with suppress(OSError):
                self.path.unlink()
            with trio.CancelScope(shield=True):
                await listener.aclose()

    def _oldest_idle(self) -> Session | None:
        idle = [s for s in self.sessions if s.evictable and not s.closed]
        return min(idle, key=lambda s: s.last_active, default=None)

    async def _wait_for_slot(self) -> None:
        """Until a new client can be served: a free slot, or an idle connection to evict.
        Polled as well as woken, since a connection turns idle in places that do not wake us
        (a subscription ending)."""
        while self._open() >= self.max_clients and self._oldest_idle() is None:
            with trio.move_on_after(0.2):
                await self._slot_freed.park()

    def _open(self) -> int:
        return len(self.sessions) + self._starting

    def _make_room(self) -> None:
        if self._open() < self.max_clients:
            return
        victim = self._oldest_idle()
        if victim is None:
            return  # turned busy since the check: one connection over the limit, briefly
        victim.closed = True
        self.sessions.discard(victim)
        self.evicted += 1
        now = trio.current_time()
        if now - self._evictions_logged_at >= EVICTION_LOG_INTERVAL:
            self._evictions_logged_at = now
            log.info(
                "IPC: %d clients connected; closing the one idle longest (%d so far)",
                self.max_clients,
                self.evicted,
            )
        victim.evict()

    async def _serve_client(self, stream: trio.SocketStream) -> None:
        decoder = FrameDecoder(self.max_frame)
        inflight = trio.Semaphore(MAX_INFLIGHT)
        session: Session | None = None
        reserved = 0
        try:
            async with trio.open_nursery() as nursery:
                session = Session(stream, nursery)
                self.sessions.add(session)
                self._starting -= 1
                while True:
                    try:
                        frame = decoder.next_frame()
                    except MalformedFrame as exc:
                        self.budget.release(reserved)
                        reserved = 0
                        self._count("?", "bad_request")
                        await session.send(_error(None, BadRequest(str(exc))))
                        continue
                    except FrameTooLarge as exc:
                        self._count("?", "too_large")
                        await session.send(
                            {"id": None, "error": {"code": "too_large", "message": str(exc)}}
                        )
                        break
                    if frame is not None:
                        self.budget.release(reserved)
                        reserved = 0
                        await inflight.acquire()
                        session.busy += 1
                        nursery.start_soon(self._dispatch, frame, session, inflight)
                        continue
                    size = decoder.frame_size
                    if size is not None and size > READ_CHUNK and not reserved:
                        await self.budget.acquire(size)
                        reserved = size
                    data = await self._receive(stream, session, decoder)
                    if data is None:
                        break
                    if not data:
                        if decoder.buffered:
                            log.info("IPC client left mid-frame (%d bytes)", decoder.buffered)
                        break
                    session.last_active = trio.current_time()
                    decoder.receive_data(data)
                for scope in session.subscriptions.values():
                    scope.cancel()
                nursery.cancel_scope.cancel()
        except FrameError as exc:
            log.info("IPC client sent bad framing: %s", exc)
        finally:
            self.budget.release(reserved)
            if session is not None:
                session.closed = True
                self.sessions.discard(session)
                for release in session.on_close:
                    try:
                        release()
                    except Exception:
                        log.exception("IPC session cleanup failed")
            self._slot_freed.unpark_all()
            with trio.CancelScope(shield=True):
                await stream.aclose()

    async def _receive(
        self, stream: trio.SocketStream, session: Session, decoder: FrameDecoder
    ) -> bytes | None:
        """The next bytes (b"" at end of input), or None when the connection should close:
        stalled inside a frame for ``frame_timeout``, or idle for ``idle_timeout``."""
        while True:
            mid_frame = decoder.buffered > 0 or decoder.frame_size is not None
            limit = self.frame_timeout if mid_frame else self.idle_timeout
            deadline = session.last_active + limit
            with trio.move_on_at(deadline):
                try:
                    return await stream.receive_some(READ_CHUNK)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return b""
            if mid_frame:
                log.info("IPC client stalled inside a frame for %g s: closing it", limit)
                return None
            if session.evictable and trio.current_time() >= session.last_active + limit:
                log.info("IPC client idle for %g s: closing it", limit)
                return None
            if not session.evictable:
                session.last_active = trio.current_time()  # a long request is not idleness

    async def _dispatch(
        self, frame: dict[str, Any], session: Session, inflight: trio.Semaphore
    ) -> None:
        rid = frame.get("id")
        method_name = frame.get("method")
        started = trio.current_time()
        outcome = "ok"
        try:
            rid, method_name, params = parse_request(frame)
            method = self.methods.get(method_name)
            if method is None:
                raise UnknownMethod(f"unknown method {method_name!r}")
            result = await method(params, session, rid)
            if isinstance(result, DataResult):
                frame = {"id": rid, "result": {}}
                await session.send_buffers(
                    encode_frame_with_data(frame, ("result", "data"), result.parts)
                )
            else:
                await session.send({"id": rid, "result": result})
        except IpcError as exc:
            outcome = exc.code
            await session.send(_error(rid if isinstance(rid, int) else None, exc))
        except Exception as exc:
            if _disk_full(exc):
                # Any method that writes (dht.put, consensus.submit) meets a full disk here
                # first: say so, as the blob methods do, rather than "internal".
                outcome = "no_space"
                await session.send(_error(rid, NoSpace(f"the daemon's disk is full: {exc}")))
            else:
                outcome = "internal"
                log.exception("IPC method %s failed", method_name)
                await session.send(_error(rid, InternalError(f"{type(exc).__name__}: {exc}")))
        finally:
            inflight.release()
            session.busy -= 1
            session.last_active = trio.current_time()
            name = (
                method_name if isinstance(method_name, str) and method_name in self.methods else "?"
            )
            self._count(name, outcome)
            if self.on_request is not None:
                self.on_request(name, outcome, trio.current_time() - started)

    def _count(self, method: str, outcome: str) -> None:
        key = (method, outcome)
        self.requests_total[key] = self.requests_total.get(key, 0) + 1


def parse_request(frame: dict[str, Any]) -> tuple[int, str, dict[str, Any]]:
    """The id, method name and params of a request frame, or :class:`BadRequest`."""
    rid = frame.get("id")
    method_name = frame.get("method")
    if isinstance(rid, bool) or not isinstance(rid, int):
        raise BadRequest("request needs an integer 'id'")
    if not isinstance(method_name, str):
        raise BadRequest("request needs a string 'method'")
    params = frame.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise BadRequest("'params' must be a map")
    return rid, method_name, params


def _error(rid: int | None, exc: IpcError) -> dict[str, Any]:
    return {"id": rid, "error": {"code": exc.code, "message": exc.message}}


def _disk_full(exc: BaseException) -> bool:
    """SQLite's "database or disk is full", or an OSError ENOSPC/EDQUOT."""
    if isinstance(exc, sqlite3.OperationalError):
        return "full" in str(exc)
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
