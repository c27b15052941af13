"""p2pnode: a peer-to-peer daemon for training models across a swarm of machines.

The package's public face is the IPC client (:class:`p2pnode.Client`, blocking, and
:class:`p2pnode.AsyncClient`, trio); the daemon itself is started with ``p2pnode daemon``.
``AsyncClient`` is imported when first named, so a blocking caller never loads trio.
"""

__version__ = "0.1.0"

from typing import TYPE_CHECKING, Any

from p2pnode.ipc.client import Client
from p2pnode.ipc.errors import (
    BadRequest,
    CollectiveFailed,
    DaemonNotRunning,
    FrameTooLarge,
    GroupChangedError,
    InternalError,
    InvalidParams,
    IpcError,
    NetworkError,
    NoSpace,
    NotFound,
    Rejected,
    UnknownMethod,
)
from p2pnode.ipc.groups import AsyncGroup, Group

__all__ = [
    "AsyncClient",
    "AsyncGroup",
    "BadRequest",
    "Client",
    "CollectiveFailed",
    "DaemonNotRunning",
    "FrameTooLarge",
    "Group",
    "GroupChangedError",
    "InternalError",
    "InvalidParams",
    "IpcError",
    "NetworkError",
    "NoSpace",
    "NotFound",
    "Rejected",
    "UnknownMethod",
    "__version__",
]

if TYPE_CHECKING:
    from p2pnode.ipc.async_client import AsyncClient


def __getattr__(name: str) -> Any:
    if name == "AsyncClient":
        from p2pnode.ipc.async_client import AsyncClient

        return AsyncClient
    raise AttributeError(f"module 'p2pnode' has no attribute {name!r}")
