"""What the torch helpers need of a collective group: the client API's ``Group`` (issue 16).

A structural type, so :class:`p2pnode.ipc.groups.Group` (from ``Client.join_group``) and the
in-process stand-in of the tests both fit.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

__all__ = ["GroupLike"]


class GroupLike(Protocol):
    """The subset of ``client.join_group(...)``'s group that :mod:`p2pnode.torch` calls."""

    @property
    def rank(self) -> int: ...

    @property
    def world_size(self) -> int: ...

    @property
    def generation(self) -> int: ...

    @property
    def stats(self) -> dict[str, Any]: ...

    def all_reduce(
        self,
        array: np.ndarray,
        *,
        op: str = "mean",
        codec: str = "none",
        algorithm: str | None = None,
        timeout: float | None = None,
    ) -> np.ndarray: ...

    def broadcast(self, array: np.ndarray, *, root: int = 0) -> np.ndarray: ...

    def all_gather(self, value: bytes) -> list[bytes]: ...

    def refresh(self) -> object: ...
