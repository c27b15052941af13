"""Python clients for the daemon's IPC socket: :class:`Client` (blocking) and
:class:`AsyncClient` (trio).

Both expose the same methods (``status()``, ``dht_put(key, value)``, ...), defined once in
:class:`_Api` in terms of ``_call``: the blocking client returns results, the async one returns
awaitables. Errors arrive as the typed exceptions of :mod:`p2pnode.ipc.errors`.

The async client multiplexes: many tasks may call it at once, each reply is routed by id.
"""

from __future__ import annotations

import itertools
import os
import socket
import struct
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import cbor2
import trio

from p2pnode.config import SOCKET_FILE, resolve_data_dir
from p2pnode.ipc.errors import DaemonNotRunning, InternalError, IpcError, error_from_wire
from protocols.framing import (
    HEADER_SIZE,
    FrameDecoder,
    FrameError,
    decode_payload,
    encode_frame,
    encode_frame_with_data,
)

DEFAULT_TIMEOUT = 60.0
MAX_REPLY = 1 << 30


def socket_path_for(
    *,
    socket_path: str | os.PathLike[str] | None = None,
    data_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """--socket wins; else <data dir>/p2pnode.sock with the usual data-dir precedence."""
    if socket_path is not None:
        return Path(socket_path).expanduser()
    return resolve_data_dir(data_dir, os.environ) / SOCKET_FILE


def _result(frame: dict[str, Any]) -> Any:
    error = frame.get("error")
    if error is not None:
        if not isinstance(error, dict):
            raise InternalError(f"malformed error reply: {error!r}")
        raise error_from_wire(error.get("code"), error.get("message"))
    return frame.get("result")


class _Api:
    """Typed wrappers over the IPC methods; see docs/ipc.md for fields and errors."""

    def _call(self, method: str, params: dict[str, Any]) -> Any:
        raise NotImplementedError

    def status(self) -> Any:
        return self._call("status", {})

    def peers(self) -> Any:
        return self._call("peers", {})

    def connect(self, addr: str) -> Any:
        return self._call("connect", {"addr": addr})

    def disconnect(self, peer_id: str) -> Any:
        return self._call("disconnect", {"peer_id": peer_id})

    def dht_put(self, key: str, value: bytes) -> Any:
        return self._call("dht.put", {"key": key, "value": value})

    def dht_get(self, key: str) -> Any:
        return self._call("dht.get", {"key": key})

    def dht_provide(self, key: str) -> Any:
        return self._call("dht.provide", {"key": key})

    def dht_find_providers(self, key: str, limit: int = 20) -> Any:
        return self._call("dht.find_providers", {"key": key, "limit": limit})

    def dht_find_peer(self, peer_id: str) -> Any:
        return self._call("dht.find_peer", {"peer_id": peer_id})

    def members(self) -> Any:
        return self._call("members", {})

    def consensus_submit(
        self,
        tx: Mapping[str, Any] | None = None,
        *,
        op: bytes | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Commit one transaction (``{"type": "kv_put", "key": k, "value": v}``, or encoded
        ``op`` bytes); returns its seq, digest, status and certificate once committed."""
        params: dict[str, Any] = {}
        if tx is not None:
            params["tx"] = dict(tx)
        if op is not None:
            params["op"] = op
        if timeout is not None:
            params["timeout"] = timeout
        return self._call("consensus.submit", params)

    def consensus_status(self) -> Any:
        return self._call("consensus.status", {})

    def consensus_log(self, first: int = 1, last: int | None = None) -> Any:
        params: dict[str, Any] = {"from": first}
        if last is not None:
            params["to"] = last
        return self._call("consensus.log", params)

    def blob_put(
        self,
        data: bytes | None = None,
        *,
        path: str | os.PathLike[str] | None = None,
        media_type: str = "application/octet-stream",
        pin: bool = True,
    ) -> Any:
        """Store bytes (up to one frame) or a file the daemon can read; see blob_upload."""
        params: dict[str, Any] = {"media_type": media_type, "pin": pin}
        if data is not None:
            params["data"] = data
        if path is not None:
            params["path"] = str(Path(path).absolute())
        return self._call("blob.put", params)

    def blob_fetch(self, key: str) -> Any:
        return self._call("blob.fetch", {"key": key})

    def blob_get(self, key: str, *, path: str | os.PathLike[str] | None = None) -> Any:
        params: dict[str, Any] = {"key": key}
        if path is not None:
            params["path"] = str(Path(path).absolute())
        return self._call("blob.get", params)

    def blob_read(self, key: str, offset: int, length: int) -> Any:
        return self._call("blob.read", {"key": key, "offset": offset, "length": length})

    def blob_stat(self, key: str) -> Any:
        return self._call("blob.stat", {"key": key})

    def blob_pin(self, key: str) -> Any:
        return self._call("blob.pin", {"key": key})

    def blob_unpin(self, key: str) -> Any:
        return self._call("blob.unpin", {"key": key})

    def ptr_set(self, name: str, key: str, *, seq: int | None = None) -> Any:
        params: dict[str, Any] = {"name": name, "key": key}
        if seq is not None:
            params["seq"] = seq
        return self._call("ptr.set", params)

    def ptr_get(self, name: str, *, owner: str | None = None) -> Any:
        params: dict[str, Any] = {"name": name}
        if owner is not None:
            params["owner"] = owner
        return self._call("ptr.get", params)


PIECE = 4 << 20  # bytes per upload/read frame: well under the daemon's frame limit


class Client(_Api):
    """Blocking client; one request at a time per instance (thread-safe by a lock)."""

    def __init__(
        self,
        *,
        socket_path: str | os.PathLike[str] | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.path = socket_path_for(socket_path=socket_path, data_dir=data_dir)
        self.timeout = timeout
        self._sock = _connect_blocking(self.path, timeout)
        self._decoder = FrameDecoder(MAX_REPLY)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        return self._request(method, params or {})

    def _request(
        self, method: str, params: dict[str, Any], data: list[memoryview] | None = None
    ) -> Any:
        """One request; ``data`` (if given) goes out as ``params["data"]`` without a copy."""
        with self._lock:
            rid = next(self._ids)
            self._send({"id": rid, "method": method, "params": params}, data)
            return _result(self._reply(rid))

    _call = call

    def subscribe(self, topic: str) -> Iterator[dict[str, Any]]:
        """Subscribe now; iterate the result for events until the daemon goes away.

        The connection is then dedicated to the subscription: use another Client for calls.
        """
        self._lock.acquire()  # held for the life of the subscription
        rid = next(self._ids)
        try:
            self._send({"id": rid, "method": "subscribe", "params": {"topic": topic}})
            while True:
                frame = self._recv()
                if frame.get("id") in (rid, None) and "event" not in frame:
                    _result(frame)  # the acknowledgement, or an error
                    break
        except BaseException:
            self._lock.release()
            raise
        self._sock.settimeout(None)  # events come when they come
        return self._events(rid)

    def _events(self, rid: int) -> Iterator[dict[str, Any]]:
        try:
            while True:
                frame = self._recv()
                if frame.get("id") == rid and "event" in frame:
                    yield frame["event"]
        finally:
            self._lock.release()

    def blob_upload(
        self,
        pieces: Iterable[bytes | memoryview],
        *,
        media_type: str = "application/octet-stream",
        meta: dict[str, Any] | None = None,
        pin: bool = True,
    ) -> Any:
        """Stream a blob of any size to the daemon in frames of at most PIECE bytes."""
        begin = {"media_type": media_type, "meta": meta or {}, "pin": pin}
        upload = self.call("blob.upload.begin", begin)["upload"]
        try:
            for group in _groups(pieces):
                self._request("blob.upload.write", {"upload": upload}, group)
        except BaseException:
            with suppress(IpcError):
                self.call("blob.upload.abort", {"upload": upload})
            raise
        return self.call("blob.upload.commit", {"upload": upload})

    def put_tensors(self, tensors: Mapping[str, Any]) -> str:
        """Store a state dict (names to numpy arrays); returns its blob key."""
        from p2pnode.blobs import tensors as codec

        result = self.blob_upload(
            codec.encode_pieces(tensors), media_type=codec.MEDIA_TYPE, meta=codec.metadata(tensors)
        )
        return str(result["key"])

    def get_tensors(self, key: str) -> dict[str, Any]:
        """Fetch a state dict stored with put_tensors (from any provider in the swarm)."""
        from p2pnode.blobs import tensors as codec

        size = self.blob_fetch(key)["size"]
        # One buffer of the final size, filled in place; the arrays are views of it.
        buf = bytearray(size)
        with memoryview(buf) as view:
            at = 0
            while at < size:
                got = self.read_into(key, at, view[at : at + PIECE])
                if not got:
                    raise InternalError(f"blob {key} ended at {at} of {size} bytes")
                at += got
        return codec.decode(buf)

    def read_into(self, key: str, offset: int, dest: memoryview) -> int:
        """``blob.read`` of up to ``len(dest)`` (at most PIECE) bytes from ``offset``, received
        straight into ``dest``; returns how many came (0: the blob ends at ``offset``).

        The reply's frame is parsed as it arrives and its data lands in ``dest`` with no copy
        in between; a reply of another shape (an error) is decoded as usual."""
        with self._lock:
            rid = next(self._ids)
            params = {"key": key, "offset": offset, "length": len(dest)}
            self._send({"id": rid, "method": "blob.read", "params": params})
            if self._decoder.buffered:  # bytes of a reply already here: the plain way
                return _copy_data(self._reply(rid), dest)
            try:
                got = self._read_reply_into(rid, dest)
            except (IpcError, KeyboardInterrupt):
                # A reply cut off part-way leaves the socket out of step with the frames:
                # close it, so the next call fails plainly instead of reading garbage.
                self._sock.close()
                raise
            return got if isinstance(got, int) else _copy_data(got, dest)

    def _read_reply_into(self, rid: int, dest: memoryview) -> int | dict[str, Any]:
        """How many bytes of data landed in ``dest``, or the whole reply when it was not
        data (an error, for the caller to raise once the frame is consumed)."""
        while True:
            (size,) = _FRAME_HEADER.unpack(self._recv_exactly(HEADER_SIZE))
            if size > MAX_REPLY:
                raise InternalError(f"reply of {size} bytes from the daemon")
            # A success is {"id": rid, "result": {"data": <byte string>}}: this prefix,
            # the byte string's head, then its bytes to the end of the frame.
            prefix = _data_reply_prefix(rid)
            body = bytearray(self._recv_exactly(min(size, len(prefix) + 1)))
            if body[:-1] == prefix and len(body) == len(prefix) + 1 and body[-1] >> 5 == 2:
                info = body[-1] & 31
                extra = 0 if info < 24 else _CBOR_EXTRA.get(info, size)
                if extra <= size - len(body):
                    more = self._recv_exactly(extra)
                    body += more
                    n = int.from_bytes(more, "big") if extra else info
                    if len(body) + n == size and n <= len(dest):
                        self._recv_into(dest[:n])
                        return n
            body += self._recv_exactly(size - len(body))
            try:
                frame = decode_payload(bytes(body))
            except FrameError as exc:
                raise InternalError(f"malformed reply from the daemon: {exc}") from None
            if frame.get("id") in (rid, None):
                return frame

    def _reply(self, rid: int) -> dict[str, Any]:
        while True:
            frame = self._recv()
            if frame.get("id") in (rid, None):
                return frame

    def _recv_exactly(self, n: int) -> bytes:
        buf = bytearray(n)
        self._recv_into(memoryview(buf))
        return bytes(buf)

    def _recv_into(self, view: memoryview) -> None:
        while view.nbytes:
            view = view[self._receive(self._sock.recv_into, view) :]

    def _receive(self, op: Callable[[Any], Any], arg: Any) -> Any:
        """``op(arg)`` (a receive on the socket), failing as the client fails: no data is a
        closed connection."""
        try:
            got = op(arg)
        except TimeoutError:
            raise IpcError(f"no reply from the daemon within {self.timeout:g} s") from None
        except OSError as exc:
            raise DaemonNotRunning(f"lost the daemon at {self.path}: {exc}") from None
        if not got:
            raise DaemonNotRunning(f"the daemon at {self.path} closed the connection")
        return got

    def _send(self, frame: dict[str, Any], data: list[memoryview] | None = None) -> None:
        try:
            for buffer in _frame_buffers(frame, data):
                self._sock.sendall(buffer)
        except OSError as exc:
            self._sock.close()  # a frame sent in part: the daemon would read garbage next
            raise DaemonNotRunning(f"lost the daemon at {self.path}: {exc}") from None

    def _recv(self) -> dict[str, Any]:
        while True:
            try:
                frame = self._decoder.next_frame()
            except FrameError as exc:
                raise InternalError(f"malformed reply from the daemon: {exc}") from None
            if frame is not None:
                return frame
            self._decoder.receive_data(self._receive(self._sock.recv, 1 << 16))


_FRAME_HEADER = struct.Struct(">I")
_CBOR_EXTRA = {24: 1, 25: 2, 26: 4, 27: 8}  # CBOR head: additional info -> argument bytes


def _data_reply_prefix(rid: int) -> bytes:
    """The bytes of ``{"id": rid, "result": {"data": b"..."}}`` before the byte string's head."""
    return cbor2.dumps({"id": rid, "result": {"data": b""}}, canonical=True)[:-1]


def _copy_data(frame: dict[str, Any], dest: memoryview) -> int:
    data = _result(frame)["data"]
    if len(data) > len(dest):
        raise InternalError(f"the daemon sent {len(data)} bytes for {len(dest)} asked")
    dest[: len(data)] = data
    return len(data)


def _groups(pieces: Iterable[bytes | memoryview]) -> Iterator[list[memoryview]]:
    """Regroup arbitrary pieces into groups of at most PIECE bytes, as views of them: an upload
    frame is sent from the caller's own buffers (a model's arrays), never copied into one."""
    group: list[memoryview] = []
    have = 0
    for piece in pieces:
        view = memoryview(piece).cast("B")
        while view.nbytes:
            take = min(PIECE - have, view.nbytes)
            group.append(view[:take])
            have += take
            view = view[take:]
            if have == PIECE:
                yield group
                group, have = [], 0
    if group:
        yield group


def _frame_buffers(
    frame: dict[str, Any], data: list[memoryview] | None
) -> list[bytes | memoryview]:
    if data is None:
        return [encode_frame(frame)]
    return encode_frame_with_data(frame, ("params", "data"), data)


def _connect_blocking(path: Path, timeout: float) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
    except (FileNotFoundError, ConnectionRefusedError):
        sock.close()
        raise DaemonNotRunning(f"no daemon is running at {path}") from None
    except OSError as exc:
        sock.close()
        raise DaemonNotRunning(f"cannot reach the daemon at {path}: {exc}") from None
    return sock


class AsyncClient(_Api):
    """Trio client. Open with ``async with AsyncClient.open(...) as client:``."""

    def __init__(self, stream: trio.SocketStream, path: Path, timeout: float) -> None:
        self._stream = stream
        self.path = path
        self.timeout = timeout
        self._ids = itertools.count(1)
        self._waiting: dict[int, trio.MemorySendChannel[dict[str, Any]]] = {}
        self._send_lock = trio.Lock()
        self._broken: IpcError | None = None

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        *,
        socket_path: str | os.PathLike[str] | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> AsyncIterator[AsyncClient]:
        path = socket_path_for(socket_path=socket_path, data_dir=data_dir)
        try:
            stream = await trio.open_unix_socket(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            raise DaemonNotRunning(f"no daemon is running at {path}") from None
        except OSError as exc:
            raise DaemonNotRunning(f"cannot reach the daemon at {path}: {exc}") from None
        client = cls(stream, path, timeout)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client._read_loop)
                try:
                    yield client
                finally:
                    nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await stream.aclose()

    async def _read_loop(self) -> None:
        decoder = FrameDecoder(MAX_REPLY)
        try:
            while True:
                frame = decoder.next_frame()
                if frame is None:
                    data = await self._stream.receive_some(1 << 16)
                    if not data:
                        raise DaemonNotRunning(f"the daemon at {self.path} closed the connection")
                    decoder.receive_data(data)
                    continue
                rid = frame.get("id")
                channel = self._waiting.get(rid) if isinstance(rid, int) else None
                if channel is not None:
                    # A subscriber that stopped reading loses events, not the client.
                    with suppress(trio.WouldBlock, trio.BrokenResourceError):
                        channel.send_nowait(frame)
                elif rid is None and "error" in frame:
                    self._broken = error_from_wire(
                        frame["error"].get("code"), frame["error"].get("message")
                    )
        except (IpcError, FrameError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._broken = exc if isinstance(exc, IpcError) else DaemonNotRunning(str(exc))
        finally:
            for channel in self._waiting.values():
                channel.close()

    async def _send(self, frame: dict[str, Any], data: list[memoryview] | None = None) -> None:
        if self._broken is not None:
            raise self._broken
        async with self._send_lock:
            try:
                for buffer in _frame_buffers(frame, data):
                    await self._stream.send_all(buffer)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise DaemonNotRunning(f"lost the daemon at {self.path}: {exc}") from None

    async def call(
        self, method: str, params: dict[str, Any] | None = None, *, timeout: float | None = None
    ) -> Any:
        return await self._request(method, params or {}, timeout=timeout)

    async def _request(
        self,
        method: str,
        params: dict[str, Any],
        data: list[memoryview] | None = None,
        *,
        timeout: float | None = None,
    ) -> Any:
        """One request; ``data`` (if given) goes out as ``params["data"]`` without a copy."""
        rid = next(self._ids)
        send, receive = trio.open_memory_channel[dict[str, Any]](1)
        self._waiting[rid] = send
        try:
            await self._send({"id": rid, "method": method, "params": params}, data)
            with trio.fail_after(self.timeout if timeout is None else timeout):
                try:
                    frame = await receive.receive()
                except trio.EndOfChannel:
                    raise self._broken or DaemonNotRunning("connection closed") from None
            return _result(frame)
        except trio.TooSlowError:
            raise IpcError(f"no reply to {method} within {self.timeout:g} s") from None
        finally:
            self._waiting.pop(rid, None)

    async def _call(self, method: str, params: dict[str, Any]) -> Any:
        return await self.call(method, params)

    async def blob_upload(
        self,
        pieces: Iterable[bytes | memoryview],
        *,
        media_type: str = "application/octet-stream",
        meta: dict[str, Any] | None = None,
        pin: bool = True,
    ) -> Any:
        begin = {"media_type": media_type, "meta": meta or {}, "pin": pin}
        upload = (await self.call("blob.upload.begin", begin))["upload"]
        try:
            for group in _groups(pieces):
                await self._request("blob.upload.write", {"upload": upload}, group)
        except BaseException:
            with trio.CancelScope(shield=True), suppress(IpcError):
                await self.call("blob.upload.abort", {"upload": upload})
            raise
        return await self.call("blob.upload.commit", {"upload": upload})

    async def put_tensors(self, tensors: Mapping[str, Any]) -> str:
        from p2pnode.blobs import tensors as codec

        result = await self.blob_upload(
            codec.encode_pieces(tensors), media_type=codec.MEDIA_TYPE, meta=codec.metadata(tensors)
        )
        return str(result["key"])

    async def get_tensors(self, key: str) -> dict[str, Any]:
        """Fetch (cancellable, here), then read the now local blob as the blocking client
        does, on a connection of its own in a worker thread: the bytes go from the socket
        straight into the model's buffer (``Client.read_into``), and this loop stays free."""
        await self.blob_fetch(key)

        def read() -> dict[str, Any]:
            with Client(socket_path=self.path, timeout=self.timeout) as c:
                return c.get_tensors(key)

        return await trio.to_thread.run_sync(read)

    @asynccontextmanager
    async def subscribe(self, topic: str) -> AsyncIterator[trio.MemoryReceiveChannel[Any]]:
        """``async with client.subscribe("peers") as events: async for e in events: ...``"""
        rid = next(self._ids)
        send, receive = trio.open_memory_channel[dict[str, Any]](256)
        self._waiting[rid] = send
        out_send, out_receive = trio.open_memory_channel[Any](256)
        try:
            await self._send({"id": rid, "method": "subscribe", "params": {"topic": topic}})
            with trio.fail_after(self.timeout):
                _result(await receive.receive())

            async def pump() -> None:
                async with out_send:
                    async for frame in receive:
                        if "event" in frame:
                            await out_send.send(frame["event"])

            async with trio.open_nursery() as nursery:
                nursery.start_soon(pump)
                try:
                    yield out_receive
                finally:
                    nursery.cancel_scope.cancel()
        finally:
            self._waiting.pop(rid, None)
            if self._broken is None:
                with trio.move_on_after(self.timeout):
                    await self._send(
                        {
                            "id": next(self._ids),
                            "method": "unsubscribe",
                            "params": {"subscription": rid},
                        }
                    )
