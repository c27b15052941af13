"""The blocking IPC client, :class:`Client`: one Unix socket, one request at a time (a lock
makes it safe to share between threads). It never imports trio.

The daemon closes a connection idle for long (``ipc`` idle timeout, or evicted to make room for
a new client); a call on such a connection reconnects first, so a client held open for hours
keeps working. A request over the frame limit raises ``FrameTooLarge`` before it is sent.

Reads of blob data go straight into the caller's buffer (:meth:`Client.read_into`), so
``get_tensors`` decodes a model from the bytes as received, with no copy.
"""

from __future__ import annotations

import itertools
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cbor2

from p2pnode.ipc.api import (
    DEFAULT_TIMEOUT,
    MAX_FRAME,
    MAX_REPLY,
    PIECE,
    Api,
    frame_buffers,
    groups,
    not_running,
    result_of,
    socket_path_for,
)
from p2pnode.ipc.errors import DaemonNotRunning, InternalError, IpcError, NotFound
from p2pnode.ipc.groups import Group, join_params
from p2pnode.ipc.tasks import (
    JOB_POLL,
    MAX_WAIT,
    REPLY_SLACK,
    JobData,
    Task,
    decode_params,
    spec_param,
)
from p2pnode_protocols.framing import HEADER_SIZE, FrameDecoder, FrameError, decode_payload

if TYPE_CHECKING:
    import numpy as np

__all__ = ["Client", "socket_path_for"]


class Client(Api):
    """Blocking client; one request at a time per instance (thread-safe by a lock)."""

    def __init__(
        self,
        *,
        socket_path: str | os.PathLike[str] | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_frame: int = MAX_FRAME,
    ) -> None:
        """``max_frame``: the daemon's ``ipc.max_frame``, when not the default."""
        self.path = socket_path_for(socket_path=socket_path, data_dir=data_dir)
        self.timeout = timeout
        self.max_frame = max_frame
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
            return result_of(self._reply(rid))

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
                    result_of(frame)  # the acknowledgement, or an error
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
            for group in groups(pieces):
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

        stat = self.blob_fetch(key)
        size = stat["size"]
        if stat.get("media_type") != codec.MEDIA_TYPE:
            # Say so before reading it: decoding another blob fails on its first byte.
            raise codec.TensorCodecError(
                f"blob {key} is {stat.get('media_type')!r} ({size} bytes), not tensors:"
                f" get_tensors reads blobs stored by put_tensors (media type {codec.MEDIA_TYPE})"
            )
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

    def _revive(self) -> None:
        """Reconnect if the daemon closed this connection while it was idle: the socket then
        reads as ended before we asked anything. Safe to resend: the daemon closes only
        connections with no request in flight, and has read nothing we have not had answered."""
        if self._decoder.buffered or self._sock.fileno() < 0:
            return  # a closed socket stays closed: a reply cut off part-way (read_into)
        try:
            readable, _, _ = select.select([self._sock], [], [], 0)
            if not readable:
                return
            ended = not self._sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        except OSError:
            ended = True
        if ended:
            self._sock.close()
            self._sock = _connect_blocking(self.path, self.timeout)

    def _send(self, frame: dict[str, Any], data: list[memoryview] | None = None) -> None:
        buffers = frame_buffers(frame, data, self.max_frame)
        self._revive()
        try:
            for buffer in buffers:
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

    # -- collective groups (docs/collectives.md) -------------------------------------------------

    def join_group(
        self,
        name: str,
        *,
        size: int | None = None,
        min_size: int | None = None,
        wait: float = 0.0,
        timeout: float = 60.0,
    ) -> Group:
        """Join group ``name`` (``size`` members, or at least ``min_size`` after ``wait``
        seconds) and wait until it is formed; the :class:`~p2pnode.ipc.groups.Group`."""
        params = join_params(name, size, min_size, wait, timeout)
        info = self._call_for("group.join", params, timeout)
        return Group(self._call_for, info, params)

    def groups(self) -> dict[str, Any]:
        """``group.status``: every group this node is in, with counters."""
        return dict(self.call("group.status"))

    # -- training jobs (docs/ipc.md) -------------------------------------------------------------

    def create_job(self, spec: str | Path | Mapping[str, Any], *, timeout: float = 30.0) -> str:
        """Commit a job from a spec (TOML text, a ``.toml`` file, or a table); its id."""
        params = {"spec": spec_param(spec), "timeout": timeout}
        return str(self._call_for("job.create", params, timeout)["job"])

    def jobs(self) -> list[dict[str, Any]]:
        return list(self.call("job.list")["jobs"])

    def job_status(self, job: str) -> dict[str, Any]:
        """The job's row, spec, current tasks, per-round history and per-node records."""
        return dict(self.call("job.status", {"job": job}))

    def cancel_job(self, job: str, reason: str | None = None) -> dict[str, Any]:
        params = {"job": job} if reason is None else {"job": job, "reason": reason}
        return dict(self.call("job.cancel", params))

    def get_model(self, job: str, round: int | None = None) -> dict[str, np.ndarray]:
        """A committed model's parameters (the last round's by default) as numpy arrays."""
        params: dict[str, Any] = {"job": job}
        if round is not None:
            params["round"] = round
        return decode_params(self.call("model.get", params))

    def tasks(
        self, job: str, *, timeout: float = 30.0, idle: float | None = None
    ) -> Iterator[Task]:
        """This node's tasks of ``job``, one per round it is given, until the job stops
        running (or, with ``idle``, until that many seconds pass without a task).

        The first wait makes this connection the node's trainer for the job (the built-in
        one stops taking its tasks) until the connection closes; each wait on the daemon
        lasts at most ``timeout`` seconds, after which the job's status is looked at again.
        Calls between tasks (``task.model()``, ``task.submit()``) share the connection. A job
        this node has not yet seen committed (created through another node a moment ago) is
        waited for up to ``timeout`` seconds.
        """
        data = JobData(self._job_status_soon(job, timeout))
        job_id = str(data.status["job"])
        wait = min(float(timeout), MAX_WAIT)
        last = time.monotonic()
        while True:
            got = self._call_for("task.next", {"job": job_id, "timeout": wait}, wait)
            if got.get("round") is None:
                if got.get("status") != "running":
                    return
                if idle is not None and time.monotonic() - last >= idle:
                    return
                continue
            yield Task(
                job=job_id,
                round=int(got["round"]),
                shard=int(got["shard"]),
                base_key=str(got["base_key"]),
                _data=data,
                _call=self.call,
            )
            last = time.monotonic()

    def _job_status_soon(self, job: str, timeout: float) -> dict[str, Any]:
        """``job_status``, waiting up to ``timeout`` s for a job this node's log lacks yet."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.job_status(job)
            except NotFound:
                if time.monotonic() >= deadline:
                    raise
            time.sleep(JOB_POLL)

    def punch(self, peer_id: str) -> dict[str, Any]:
        """``nat.punch``: hole-punch a direct connection to a peer connected through a relay
        (the daemon takes up to a minute)."""
        return self._call_for("nat.punch", {"peer_id": peer_id}, 60.0)  # type: ignore[no-any-return]

    def _call_for(self, method: str, params: dict[str, Any], seconds: float) -> Any:
        """``call`` of a method the daemon may hold for ``seconds``: the socket waits that
        long and more. (Another thread's call meanwhile waits as long: a rare cost.)"""
        old = self._sock.gettimeout()
        self._sock.settimeout(max(self.timeout, seconds + REPLY_SLACK))
        try:
            return self.call(method, params)
        finally:
            self._sock.settimeout(old)


_FRAME_HEADER = struct.Struct(">I")
_CBOR_EXTRA = {24: 1, 25: 2, 26: 4, 27: 8}  # CBOR head: additional info -> argument bytes


def _data_reply_prefix(rid: int) -> bytes:
    """The bytes of ``{"id": rid, "result": {"data": b"..."}}`` before the byte string's head."""
    return cbor2.dumps({"id": rid, "result": {"data": b""}}, canonical=True)[:-1]


def _copy_data(frame: dict[str, Any], dest: memoryview) -> int:
    data = result_of(frame)["data"]
    if len(data) > len(dest):
        raise InternalError(f"the daemon sent {len(data)} bytes for {len(dest)} asked")
    dest[: len(data)] = data
    return len(data)


def _connect_blocking(path: Path, timeout: float) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
    except (FileNotFoundError, ConnectionRefusedError):
        sock.close()
        raise not_running(path) from None
    except OSError as exc:
        sock.close()
        raise DaemonNotRunning(f"cannot reach the daemon at {path}: {exc}") from None
    return sock
