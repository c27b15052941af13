"""What both IPC clients share: the method surface, the socket's path, replies and frames.

:class:`Api` defines every convenience method (``status()``, ``dht_put(key, value)``, ...)
once, in terms of ``_call``: the blocking :class:`~p2pnode.ipc.client.Client` returns results,
the trio :class:`~p2pnode.ipc.async_client.AsyncClient` returns awaitables. Errors arrive as
the typed exceptions of :mod:`p2pnode.ipc.errors`. Nothing here imports trio, so a blocking
caller (the CLI) never pays for it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from p2pnode.config import SOCKET_FILE, resolve_data_dir
from p2pnode.ipc.errors import DaemonNotRunning, FrameTooLarge, InternalError, error_from_wire
from p2pnode_protocols.framing import HEADER_SIZE, encode_frame, encode_frame_with_data

DEFAULT_TIMEOUT = 60.0
MAX_REPLY = 1 << 30
MAX_FRAME = 16 << 20  # the daemon's default ipc.max_frame; a client told otherwise uses that


def socket_path_for(
    *,
    socket_path: str | os.PathLike[str] | None = None,
    data_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """--socket wins; else <data dir>/p2pnode.sock with the usual data-dir precedence."""
    if socket_path is not None:
        return Path(socket_path).expanduser()
    return resolve_data_dir(data_dir, os.environ) / SOCKET_FILE


def not_running(path: Path) -> DaemonNotRunning:
    """The error for a socket nobody listens on, saying how to start a daemon."""
    return DaemonNotRunning(
        f"no daemon is running at {path}; start one with `p2pnode daemon`"
        " (or several with `p2pnode swarm`)"
    )


def result_of(frame: dict[str, Any]) -> Any:
    error = frame.get("error")
    if error is not None:
        if not isinstance(error, dict):
            raise InternalError(f"malformed error reply: {error!r}")
        raise error_from_wire(error.get("code"), error.get("message"))
    return frame.get("result")


class Api:
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

    def blob_fetch(self, key: str, *, timeout: float | None = None) -> Any:
        """Make ``key`` complete on the daemon; ``timeout`` (seconds) bounds the search for
        providers and the fetch (default: the daemon's blobs.find_timeout/fetch_timeout). The
        client's own timeout must be longer to see the answer."""
        params: dict[str, Any] = {"key": key}
        if timeout is not None:
            params["timeout"] = timeout
        return self._call("blob.fetch", params)

    def blob_get(
        self,
        key: str,
        *,
        path: str | os.PathLike[str] | None = None,
        timeout: float | None = None,
    ) -> Any:
        params: dict[str, Any] = {"key": key}
        if path is not None:
            params["path"] = str(Path(path).absolute())
        if timeout is not None:
            params["timeout"] = timeout
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


def groups(pieces: Iterable[bytes | memoryview]) -> Iterator[list[memoryview]]:
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


def frame_buffers(
    frame: dict[str, Any], data: list[memoryview] | None, max_frame: int = MAX_FRAME
) -> list[bytes | memoryview]:
    """The frame's buffers, refused before anything is sent when the body exceeds
    ``max_frame``: the daemon would close the connection part-way through, and the caller
    would see a broken pipe instead of the reason."""
    if data is None:
        buffers: list[bytes | memoryview] = [encode_frame(frame)]
    else:
        buffers = encode_frame_with_data(frame, ("params", "data"), data)
    size = sum(len(b) for b in buffers) - HEADER_SIZE
    if size > max_frame:
        method = frame.get("method")
        raise FrameTooLarge(
            f"a {method} request of {size} bytes exceeds the daemon's frame limit of"
            f" {max_frame} bytes (ipc.max_frame); send large data with blob_upload or a path"
        )
    return buffers
