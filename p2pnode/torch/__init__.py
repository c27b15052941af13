"""PyTorch on p2pnode's collective groups (the ``torch`` extra): in-place collectives on
tensors and the :class:`DiLoCo` optimizer wrapper. See docs/collectives.md.

Importing this package never needs torch; using it does, and without torch the first call
raises an ImportError saying how to install it (as :mod:`p2pnode.training.torch_adapter`).
"""

from __future__ import annotations

from p2pnode.ipc.errors import CollectiveFailed, GroupChangedError
from p2pnode.torch.collectives import all_reduce_, broadcast_
from p2pnode.torch.diloco import DiLoCo, SyncInfo

__all__ = [
    "CollectiveFailed",
    "DiLoCo",
    "GroupChangedError",
    "SyncInfo",
    "all_reduce_",
    "broadcast_",
]
