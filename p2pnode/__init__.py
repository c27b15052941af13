"""p2pnode: a peer-to-peer daemon for training models across a swarm of machines.

The package's public face is the IPC client (:class:`p2pnode.Client`); the daemon itself is
started with ``p2pnode daemon``.
"""

__version__ = "0.1.0"

from p2pnode.ipc.client import AsyncClient, Client
from p2pnode.ipc.errors import (
    BadRequest,
    DaemonNotRunning,
    FrameTooLarge,
    InternalError,
    InvalidParams,
    IpcError,
    NetworkError,
    NotFound,
    UnknownMethod,
)

__all__ = [
    "AsyncClient",
    "BadRequest",
    "Client",
    "DaemonNotRunning",
    "FrameTooLarge",
    "InternalError",
    "InvalidParams",
    "IpcError",
    "NetworkError",
    "NotFound",
    "UnknownMethod",
    "__version__",
]
