"""The IPC server: accepts clients on a Unix socket and dispatches their requests.

Frames: see :mod:`protocols.framing`. A request is ``{"id": int, "method": str, "params": map}``;
the reply is ``{"id", "result"}`` or ``{"id", "error": {"code", "message"}}``; a subscription
pushes ``{"id": <its request id>, "event": map}`` until ``unsubscribe`` or disconnect.

Errors: a frame whose body is not a CBOR map gets a ``bad_request`` reply and the connection
stays open (the length prefix keeps us in sync). A frame over ``ipc.max_frame`` gets
``too_large`` and the connection is closed, since its body cannot be skipped safely without
reading it. A truncated frame (client gone mid-frame) is logged. Nothing a client sends can
affect another client.

Resources: at most ``ipc.max_clients`` connections are served at once (more wait in the
kernel's accept queue) and at most ``MAX_INFLIGHT`` requests per connection run at once.

Cancellation: the server runs until its nursery is cancelled; connection handlers are children
of it, and the socket file is removed on the way out.
"""

from __future__ import annotations

import errno
import logging
import os
import socket as stdsocket
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from p2pnode.ipc.errors import BadRequest, InternalError, IpcError, UnknownMethod
from protocols.framing import (
    FrameDecoder,
    FrameError,
    FrameTooLarge,
    MalformedFrame,
    encode_frame,
    encode_frame_with_data,
)

log = logging.getLogger(__name__)

MAX_INFLIGHT = 64
READ_CHUNK = 1 << 16


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
    ) -> None:
        """``on_request(method, outcome, seconds)`` is told of every request answered
        (outcome ``ok`` or an error code): the metrics hook."""
        self.path = path
        self.methods = methods
        self.max_frame = max_frame
        self._clients = trio.Semaphore(max_clients)
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
        sock.listen(128)
        return sock

    async def run(self, *, task_status: trio.TaskStatus[IpcServer] = trio.TASK_STATUS_IGNORED):
        sock = self._bind()
        listener = trio.SocketListener(sock)
        try:
            async with trio.open_nursery() as nursery:
                task_status.started(self)
                # Accept loop written out (not serve_listeners) so max_clients gates accept().
                while True:
                    await self._clients.acquire()
                    try:
                        stream = await listener.accept()
                    except OSError as exc:
                        log.warning("IPC accept failed: %s", exc)
                        self._clients.release()
                        await trio.sleep(0.1)
                        continue
                    nursery.start_soon(self._serve_client, stream)
        finally:
            with suppress(OSError):
                self.path.unlink()
            with trio.CancelScope(shield=True):
                await listener.aclose()

    async def _serve_client(self, stream: trio.SocketStream) -> None:
        decoder = FrameDecoder(self.max_frame)
        inflight = trio.Semaphore(MAX_INFLIGHT)
        session: Session | None = None
        try:
            async with trio.open_nursery() as nursery:
                session = Session(stream, nursery)
                while True:
                    try:
                        frame = decoder.next_frame()
                    except MalformedFrame as exc:
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
                        await inflight.acquire()
                        nursery.start_soon(self._dispatch, frame, session, inflight)
                        continue
                    try:
                        data = await stream.receive_some(READ_CHUNK)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        data = b""
                    if not data:
                        if decoder.buffered:
                            log.info("IPC client left mid-frame (%d bytes)", decoder.buffered)
                        break
                    decoder.receive_data(data)
                for scope in session.subscriptions.values():
                    scope.cancel()
                nursery.cancel_scope.cancel()
        except FrameError as exc:
            log.info("IPC client sent bad framing: %s", exc)
        finally:
            if session is not None:
                session.closed = True
                for release in session.on_close:
                    try:
                        release()
                    except Exception:
                        log.exception("IPC session cleanup failed")
            self._clients.release()
            with trio.CancelScope(shield=True):
                await stream.aclose()

    async def _dispatch(
        self, frame: dict[str, Any], session: Session, inflight: trio.Semaphore
    ) -> None:
        rid = frame.get("id")
        method_name = frame.get("method")
        started = trio.current_time()
        outcome = "ok"
        try:
            if isinstance(rid, bool) or not isinstance(rid, int):
                raise BadRequest("request needs an integer 'id'")
            if not isinstance(method_name, str):
                raise BadRequest("request needs a string 'method'")
            params = frame.get("params", {})
            if params is None:
                params = {}
            if not isinstance(params, dict):
                raise BadRequest("'params' must be a map")
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
            outcome = "internal"
            log.exception("IPC method %s failed", method_name)
            await session.send(_error(rid, InternalError(f"{type(exc).__name__}: {exc}")))
        finally:
            inflight.release()
            name = (
                method_name if isinstance(method_name, str) and method_name in self.methods else "?"
            )
            self._count(name, outcome)
            if self.on_request is not None:
                self.on_request(name, outcome, trio.current_time() - started)

    def _count(self, method: str, outcome: str) -> None:
        key = (method, outcome)
        self.requests_total[key] = self.requests_total.get(key, 0) + 1


def _error(rid: int | None, exc: IpcError) -> dict[str, Any]:
    return {"id": rid, "error": {"code": exc.code, "message": exc.message}}
