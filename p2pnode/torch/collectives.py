"""In-place collectives on torch tensors: :func:`all_reduce_` and :func:`broadcast_`.

A list of tensors travels as one flat float32 buffer, so a whole model's gradients cost one
collective call (one round of the daemon's protocol), not one per parameter. Only CPU float32
tensors are accepted: the daemon reduces float32, and a silent cast or device copy would hide
a cost or a precision loss from the caller.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from p2pnode.torch._group import GroupLike
from p2pnode.training.torch_adapter import require_torch

if TYPE_CHECKING:
    import torch

__all__ = ["all_reduce_", "broadcast_", "flat_copy", "load_flat"]


def _as_list(tensors: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
    t = require_torch()
    items = [tensors] if isinstance(tensors, t.Tensor) else list(tensors)
    if not items:
        raise ValueError("no tensors given")
    for x in items:
        if not isinstance(x, t.Tensor):
            raise TypeError(f"expected torch tensors, got {type(x).__name__}")
        if x.dtype != t.float32 or x.device.type != "cpu":
            raise TypeError(f"only CPU float32 tensors are supported, got {x.dtype} on {x.device}")
    return items


def flat_copy(tensors: Sequence[torch.Tensor]) -> np.ndarray:
    """The tensors' values, concatenated into one new float32 vector."""
    total = sum(int(x.numel()) for x in tensors)
    out = np.empty(total, np.float32)
    at = 0
    for x in tensors:
        n = int(x.numel())
        out[at : at + n] = x.detach().reshape(-1).numpy()
        at += n
    return out


def load_flat(tensors: Sequence[torch.Tensor], flat: np.ndarray) -> None:
    """Copy ``flat`` back into the tensors, in order (sizes must add up exactly)."""
    t = require_torch()
    total = sum(int(x.numel()) for x in tensors)
    if flat.shape != (total,):
        raise ValueError(f"flat buffer has shape {flat.shape}, the tensors hold {total} values")
    src = t.from_numpy(np.ascontiguousarray(flat, dtype=np.float32))
    at = 0
    with t.no_grad():
        for x in tensors:
            n = int(x.numel())
            x.copy_(src[at : at + n].view_as(x))
            at += n


def all_reduce_(
    group: GroupLike,
    tensors: torch.Tensor | Sequence[torch.Tensor],
    op: str = "mean",
    codec: str = "none",
) -> torch.Tensor | Sequence[torch.Tensor]:
    """Replace the tensors' values by their reduction (``op`` "sum" or "mean") over ``group``.

    Every member must call it with tensors of the same sizes, in the same order; every member
    ends with identical values. One collective call for the whole list. Returns ``tensors``.
    Errors: the group's (``CollectiveFailed``, ``GroupChangedError``); the tensors are then
    unchanged.
    """
    items = _as_list(tensors)
    reduced = group.all_reduce(flat_copy(items), op=op, codec=codec)
    load_flat(items, np.asarray(reduced, np.float32).reshape(-1))
    return tensors


def broadcast_(
    group: GroupLike, tensors: torch.Tensor | Sequence[torch.Tensor], root: int = 0
) -> torch.Tensor | Sequence[torch.Tensor]:
    """Replace the tensors' values by member ``root``'s. Returns ``tensors``."""
    items = _as_list(tensors)
    received = group.broadcast(flat_copy(items), root=root)
    load_flat(items, np.asarray(received, np.float32).reshape(-1))
    return tensors
