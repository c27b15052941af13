"""Collective groups on the client side: ``Group`` (blocking) and ``AsyncGroup`` (trio).

``client.join_group(name, size=4)`` waits until the group is formed and returns a handle with
``rank``, ``world_size``, ``generation`` and ``members`` (rank order), and the operations
``all_reduce``, ``broadcast``, ``barrier`` and ``all_gather``, in the manner of
``torch.distributed``: every member calls the same operations in the same order. Arrays are
float32 of any shape; a result is a new array of that shape, identical on every member.

When the group changes (a member died, left or joined), an operation raises
:class:`~p2pnode.ipc.errors.GroupChangedError`: call :meth:`Group.refresh` (it waits for the
re-formed group and updates ``rank`` and the rest) and retry. Any other failure of an operation
is :class:`~p2pnode.ipc.errors.CollectiveFailed`; a result is never partial.

Arrays of :data:`~p2pnode.ipc.shm.SHM_ABOVE` bytes and more travel through a shared-memory
file the handle keeps (and removes on :meth:`Group.leave` or when it is collected), not through
the socket. The request and result helpers here are shared by both handles and never import
trio.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from p2pnode.ipc import shm
from p2pnode.ipc.tasks import REPLY_SLACK

__all__ = ["AsyncGroup", "Group", "join_params"]

#: seconds a call waits for the daemon's reply when the caller gives no timeout (the daemon's
#: own default deadline, collectives.op_timeout, is 300 s)
DEFAULT_OP_WAIT = 300.0


def join_params(
    name: str, size: int | None, min_size: int | None, wait: float, timeout: float
) -> dict[str, Any]:
    if size is None and min_size is None:
        raise ValueError("give the group's size, or a min_size (and a wait)")
    params: dict[str, Any] = {"name": name, "wait": float(wait), "timeout": float(timeout)}
    if size is not None:
        params["size"] = int(size)
    if min_size is not None:
        params["min_size"] = int(min_size)
    return params


class _Core:
    """What both handles share: the group's description and the shaping of requests."""

    def __init__(self, info: dict[str, Any], join: dict[str, Any]) -> None:
        self._join = join
        self._buffer = shm.SharedBuffer() if shm.available() else None
        self._set(info)

    def _set(self, info: dict[str, Any]) -> None:
        self.info = info
        self.name: str = info["name"]
        self.generation: int = info["generation"]
        self.rank: int = info["rank"]
        self.world_size: int = info["world_size"]
        self.members: list[str] = list(info["members"])

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.name} generation {self.generation}"
            f" rank {self.rank} of {self.world_size}>"
        )

    def _array_request(
        self, array: Any, extra: dict[str, Any], timeout: float | None
    ) -> tuple[dict[str, Any], np.ndarray, float]:
        arr = np.ascontiguousarray(_numpy(array), dtype=np.float32)
        params: dict[str, Any] = {
            "name": self.name,
            "generation": self.generation,
            "length": int(arr.size),
            **extra,
        }
        if timeout is not None:
            params["timeout"] = float(timeout)
        if self._buffer is not None and arr.nbytes >= shm.SHM_ABOVE:
            mm = self._buffer.ensure(arr.nbytes)
            np.frombuffer(mm, np.float32, count=arr.size)[:] = arr.reshape(-1)
            params["shm"] = self._buffer.path
        else:
            params["data"] = arr.astype("<f4", copy=False).tobytes()
        return params, arr, (timeout or DEFAULT_OP_WAIT) + REPLY_SLACK

    def _array_result(self, result: dict[str, Any], arr: np.ndarray) -> np.ndarray:
        if "shm" in result:
            assert self._buffer is not None and self._buffer.map is not None
            out = np.frombuffer(self._buffer.map, np.float32, count=arr.size).copy()
        else:
            out = np.frombuffer(result["data"], "<f4").astype(np.float32)
        return out.reshape(arr.shape)

    def _small(self, timeout: float | None, **extra: Any) -> tuple[dict[str, Any], float]:
        params: dict[str, Any] = {"name": self.name, "generation": self.generation, **extra}
        if timeout is not None:
            params["timeout"] = float(timeout)
        return params, (timeout or DEFAULT_OP_WAIT) + REPLY_SLACK

    def _close_buffer(self) -> None:
        if self._buffer is not None:
            self._buffer.close()


def _numpy(array: Any) -> Any:
    """A torch tensor (on any device) as numpy; anything else as it is."""
    if type(array).__module__.startswith("torch"):
        return array.detach().cpu().numpy()
    return array


def _reduce_extra(op: str, codec: str, algorithm: str | None) -> dict[str, Any]:
    extra: dict[str, Any] = {"op": op, "codec": codec}
    if algorithm is not None:
        extra["algorithm"] = algorithm
    return extra


class Group(_Core):
    """A joined group, for blocking code (from :meth:`Client.join_group`)."""

    def __init__(
        self,
        call: Callable[[str, dict[str, Any], float], Any],
        info: dict[str, Any],
        join: dict[str, Any],
    ) -> None:
        self._call = call
        super().__init__(info, join)

    def all_reduce(
        self,
        array: Any,
        *,
        op: str = "mean",
        codec: str = "none",
        algorithm: str | None = None,
        timeout: float | None = None,
    ) -> np.ndarray:
        """The element-wise sum (``op="sum"``) or mean of every member's ``array``."""
        params, arr, wait = self._array_request(array, _reduce_extra(op, codec, algorithm), timeout)
        return self._array_result(self._call("group.all_reduce", params, wait), arr)

    def broadcast(
        self, array: Any, *, root: int = 0, codec: str = "none", timeout: float | None = None
    ) -> np.ndarray:
        """Rank ``root``'s array, on every member (each passes an array of the same shape)."""
        params, arr, wait = self._array_request(array, {"root": root, "codec": codec}, timeout)
        return self._array_result(self._call("group.broadcast", params, wait), arr)

    def all_gather(self, value: bytes, *, timeout: float | None = None) -> list[bytes]:
        """Every member's ``value`` (at most 64 KiB each), in rank order."""
        params, wait = self._small(timeout, value=bytes(value))
        return list(self._call("group.all_gather", params, wait)["values"])

    def barrier(self, *, timeout: float | None = None) -> None:
        params, wait = self._small(timeout)
        self._call("group.barrier", params, wait)

    def refresh(self, *, timeout: float = 60.0) -> Group:
        """Wait for the group as it is formed now (after :class:`GroupChangedError`)."""
        params = {**self._join, "timeout": float(timeout)}
        self._set(self._call("group.join", params, timeout + REPLY_SLACK))
        return self

    def status(self) -> dict[str, Any]:
        groups = self._call("group.status", {"name": self.name}, 30.0)["groups"]
        return dict(groups[0])

    @property
    def stats(self) -> dict[str, Any]:
        """This member's counters for the group: ops, failures, bytes_sent, bytes_received."""
        return dict(self.status()["stats"])

    def leave(self) -> None:
        """Leave the group (the others re-form without this member) and free the buffer."""
        try:
            self._call("group.leave", {"name": self.name}, 30.0)
        finally:
            self._close_buffer()

    def close(self) -> None:
        """Free the shared-memory buffer without leaving (the group is left when the client's
        connection closes)."""
        self._close_buffer()


class AsyncGroup(_Core):
    """A joined group, for trio code (from :meth:`AsyncClient.join_group`); as :class:`Group`."""

    def __init__(
        self,
        call: Callable[[str, dict[str, Any], float], Awaitable[Any]],
        info: dict[str, Any],
        join: dict[str, Any],
    ) -> None:
        self._call = call
        super().__init__(info, join)

    async def all_reduce(
        self,
        array: Any,
        *,
        op: str = "mean",
        codec: str = "none",
        algorithm: str | None = None,
        timeout: float | None = None,
    ) -> np.ndarray:
        params, arr, wait = self._array_request(array, _reduce_extra(op, codec, algorithm), timeout)
        return self._array_result(await self._call("group.all_reduce", params, wait), arr)

    async def broadcast(
        self, array: Any, *, root: int = 0, codec: str = "none", timeout: float | None = None
    ) -> np.ndarray:
        params, arr, wait = self._array_request(array, {"root": root, "codec": codec}, timeout)
        return self._array_result(await self._call("group.broadcast", params, wait), arr)

    async def all_gather(self, value: bytes, *, timeout: float | None = None) -> list[bytes]:
        params, wait = self._small(timeout, value=bytes(value))
        return list((await self._call("group.all_gather", params, wait))["values"])

    async def barrier(self, *, timeout: float | None = None) -> None:
        params, wait = self._small(timeout)
        await self._call("group.barrier", params, wait)

    async def refresh(self, *, timeout: float = 60.0) -> AsyncGroup:
        params = {**self._join, "timeout": float(timeout)}
        self._set(await self._call("group.join", params, timeout + REPLY_SLACK))
        return self

    async def status(self) -> dict[str, Any]:
        groups = (await self._call("group.status", {"name": self.name}, 30.0))["groups"]
        return dict(groups[0])

    async def leave(self) -> None:
        try:
            await self._call("group.leave", {"name": self.name}, 30.0)
        finally:
            self._close_buffer()

    def close(self) -> None:
        self._close_buffer()
