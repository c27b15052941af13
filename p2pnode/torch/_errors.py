"""The collective errors DiLoCo reacts to, from :mod:`p2pnode.ipc.errors`.

Until the collectives land on main (issue 16), the IPC layer has no ``CollectiveError``: this
module then defines stand-ins with the same names and hierarchy, so the wrapper and its tests
can be written against the documented API. Once the real classes exist they are used as is.
"""

from __future__ import annotations

from p2pnode.ipc import errors as _ipc_errors
from p2pnode.ipc.errors import IpcError

__all__ = ["CollectiveError", "GroupChanged"]

if hasattr(_ipc_errors, "GroupChanged"):
    CollectiveError: type[IpcError] = _ipc_errors.CollectiveError
    GroupChanged: type[IpcError] = _ipc_errors.GroupChanged
else:  # pragma: no cover - removed once the collectives are merged

    class _CollectiveError(IpcError):
        """A collective operation failed (timeout, a member's error)."""

        code = "collective"

    class _GroupChanged(_CollectiveError):
        """The group's membership changed: ``group.refresh()``, then retry."""

        code = "group_changed"

    CollectiveError = _CollectiveError
    GroupChanged = _GroupChanged
