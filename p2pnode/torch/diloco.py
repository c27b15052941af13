"""DiLoCo: many local steps, then one averaged outer step (Douillard et al. 2023).

:class:`DiLoCo` wraps a torch optimizer (the *inner* one, AdamW in the paper). Every member of
a collective group trains its own replica with it; every ``inner_steps`` (H) steps the members
agree on a new model:

1. pseudo-gradient ``g = outer_params - params`` (flat float32: how far H local steps moved);
2. ``group.all_reduce(g, op="mean", codec=...)``: every member gets the same average;
3. an outer SGD step with Nesterov momentum on the outer params, done by every member on the
   same inputs in the same float32 operations, so the outer state stays identical everywhere;
4. the outer params are copied into the model, and local training goes on from them.

The traffic is one compressed pseudo-gradient per H steps instead of one gradient per step.

**State sync.** The outer state (params, momentum buffer, step count) must be the same on every
member. Whenever the group's generation differs from the last one seen (a member joined, left
or died; and at the first outer step), the members first ``all_gather`` (outer step count,
contributing flag, digest of the state) and take as root the member with the most outer steps
(the lowest rank on ties). If any member's digest differs from the root's, the root's state is
broadcast. A member whose state was replaced took its last H steps from some other point: its
pseudo-gradient would be meaningless, so it contributes zeros this once, and the average is a
sum divided by the number of members that do contribute (every member counts them from the
same gathered list). A late joiner thus gets the current model from a member, and starts
contributing from its next outer step.

**Failures and membership changes.** When a collective of an outer step fails, the daemon
re-forms the group (without the members it blames, with any newcomer): the failing call
raises ``CollectiveFailed`` and later calls ``GroupChangedError`` until the caller refreshes.
Either way the wrapper calls ``group.refresh()`` and retries the whole outer step from the
sync (at most ``max_retries`` times). The sync also covers a member that finished the step
while another failed it: it has one outer step more and becomes the root. The model is only
written once the outer step succeeded, so a retry starts from the same local params.

torch is imported lazily (:func:`p2pnode.training.torch_adapter.require_torch`).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from p2pnode.ipc.errors import CollectiveFailed
from p2pnode.torch._group import GroupLike
from p2pnode.torch.collectives import flat_copy, load_flat
from p2pnode.training.torch_adapter import require_torch

if TYPE_CHECKING:
    import torch

__all__ = ["DiLoCo", "SyncInfo"]

CODECS = ("none", "fp16", "int8", "topk")
# What one member says in a state sync: outer steps, number of params, contributes?, digest.
_SYNC = struct.Struct(">QQ?32s")
#: retries of one failed outer step: a group that re-forms more often than this while one
#: step is under way is not converging, and the caller should hear about it.
MAX_RETRIES = 3


@dataclass(frozen=True, slots=True)
class SyncInfo:
    """The outcome of the last state sync (for logs and tests)."""

    generation: int
    root: int
    broadcast: bool
    contributors: int


class DiLoCo:
    """An optimizer wrapper: ``inner`` every step, an averaged outer step every ``inner_steps``.

    ``params_or_module``: the module, or the parameters ``inner`` updates (CPU float32). Every
    member must wrap a model of the same shape. ``codec``: the all-reduce's ("none", "fp16",
    "int8", "topk"). Use it as an optimizer: ``loss.backward(); opt.step(); opt.zero_grad()``.
    The outer params start as the model's params at the first :meth:`step` (so weights loaded
    after building the wrapper count).

    Errors: ``CollectiveFailed`` (or its subclass ``GroupChangedError``) from the group when an
    outer step still fails after ``max_retries`` refreshes, or from ``refresh()`` itself; the
    model and the outer state are unchanged then, and :meth:`outer_step` may be called again.
    """

    def __init__(
        self,
        params_or_module: torch.nn.Module | Iterable[torch.Tensor],
        inner: torch.optim.Optimizer,
        group: GroupLike,
        *,
        inner_steps: int = 100,
        outer_lr: float = 0.7,
        outer_momentum: float = 0.9,
        nesterov: bool = True,
        codec: str = "int8",
        max_retries: int = MAX_RETRIES,
    ) -> None:
        t = require_torch()
        if isinstance(params_or_module, t.nn.Module):
            params = list(params_or_module.parameters())
        else:
            params = list(params_or_module)
        if not params:
            raise ValueError("no parameters to optimise")
        for p in params:
            if not isinstance(p, t.Tensor) or p.dtype != t.float32 or p.device.type != "cpu":
                raise TypeError("DiLoCo needs CPU float32 parameter tensors")
        if inner_steps < 1:
            raise ValueError("inner_steps must be at least 1")
        if not outer_lr > 0.0:
            raise ValueError("outer_lr must be positive")
        if not 0.0 <= outer_momentum < 1.0:
            raise ValueError("outer_momentum must lie in [0, 1)")
        if nesterov and outer_momentum == 0.0:
            raise ValueError("nesterov needs a positive outer_momentum")
        if codec not in CODECS:
            raise ValueError(f"codec must be one of {', '.join(CODECS)}")
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        self.params = params
        self.inner = inner
        self.group = group
        self.inner_steps = inner_steps
        self.outer_lr = float(outer_lr)
        self.outer_momentum = float(outer_momentum)
        self.nesterov = nesterov
        self.codec = codec
        self.max_retries = max_retries
        self._outer = flat_copy(params)
        self._momentum = np.zeros_like(self._outer)
        self.outer_steps = 0
        self.inner_steps_done = 0
        #: failed collectives survived (refresh, sync if the group changed, retry).
        self.recoveries = 0
        self.last_sync: SyncInfo | None = None
        self._generation_seen: int | None = None
        # False once a sync replaced our outer state: the local params then descend from some
        # other point, and their difference to the new outer params means nothing.
        self._contributes = True
        self._contributors = 0
        # The outer params start as the model's params at the first step(), so weights loaded
        # into the model after the wrapper was built (a common order) are the starting point.
        self._fresh = True

    # -- the optimizer face ---------------------------------------------------------------

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        """The inner optimizer's (learning-rate schedulers read and write these)."""
        return self.inner.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.inner.zero_grad(set_to_none=set_to_none)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One inner step; after every ``inner_steps``-th, an outer step (a collective call)."""
        if self._fresh:
            self._outer = flat_copy(self.params)
            self._fresh = False
        loss = self.inner.step() if closure is None else self.inner.step(closure)
        self.inner_steps_done += 1
        if self.inner_steps_done % self.inner_steps == 0:
            self.outer_step()
        return loss

    @property
    def bytes_sent(self) -> int:
        """Bytes this member sent in the group (the group's own count)."""
        return int(self.group.stats.get("bytes_sent", 0))

    @property
    def outer_params(self) -> np.ndarray:
        """A copy of the outer params (flat float32; identical on every member)."""
        return self._outer.copy()

    @property
    def momentum(self) -> np.ndarray:
        """A copy of the outer momentum buffer (flat float32)."""
        return self._momentum.copy()

    # -- the outer step -------------------------------------------------------------------

    def outer_step(self) -> None:
        """Sync if the group changed, average the pseudo-gradient, step, load the model."""
        average: np.ndarray | None = None
        for attempt in range(self.max_retries + 1):
            try:
                if self._generation_seen != self.group.generation:
                    self._sync()
                average = self._average()
                break
            except CollectiveFailed:
                # GroupChangedError included. Retrying without a refresh would only meet
                # GroupChangedError: a failed operation makes the daemon re-form the group.
                if attempt == self.max_retries:
                    raise
                self.group.refresh()
                self.recoveries += 1
        if average is not None:
            self._apply(average)
            self.outer_steps += 1
        load_flat(self.params, self._outer)
        # Every member now holds the same outer state and trains from it: all contribute
        # next time, unless the group changes first (then a sync counts again).
        self._contributes = True
        self._contributors = self.group.world_size

    def _average(self) -> np.ndarray | None:
        """The mean pseudo-gradient over the contributing members (None: nobody contributes)."""
        n = self._contributors
        if n == 0:
            return None
        if self._contributes:
            pseudo = self._outer - flat_copy(self.params)
        else:
            pseudo = np.zeros_like(self._outer)
        if n == self.group.world_size:
            out = self.group.all_reduce(pseudo, op="mean", codec=self.codec)
            return np.asarray(out, np.float32).reshape(-1)
        total = self.group.all_reduce(pseudo, op="sum", codec=self.codec)
        return np.asarray(total, np.float32).reshape(-1) / np.float32(n)

    def _apply(self, g: np.ndarray) -> None:
        """SGD with (Nesterov) momentum, as torch.optim.SGD with dampening 0."""
        mu = np.float32(self.outer_momentum)
        self._momentum = mu * self._momentum + g
        direction = g + mu * self._momentum if self.nesterov else self._momentum
        self._outer = self._outer - np.float32(self.outer_lr) * direction

    def _digest(self) -> bytes:
        h = hashlib.sha256()
        h.update(self._outer.tobytes())
        h.update(self._momentum.tobytes())
        return h.digest()

    def _sync(self) -> None:
        """Agree on the outer state with the group as it is now (see the module docstring)."""
        generation = self.group.generation
        mine = _SYNC.pack(self.outer_steps, self._outer.size, self._contributes, self._digest())
        said = [_SYNC.unpack(v) for v in self.group.all_gather(mine)]
        sizes = {s[1] for s in said}
        if len(sizes) != 1:
            raise ValueError(f"the members' models differ in size: {sorted(sizes)} params")
        # max() keeps the first of equal keys: the lowest rank among the most outer steps.
        root = max(range(len(said)), key=lambda r: said[r][0])
        steps, _, _, digest = said[root]
        differs = any(s[3] != digest for s in said)
        if differs:
            state = np.concatenate([self._outer, self._momentum])
            got = np.asarray(self.group.broadcast(state, root=root), np.float32).reshape(-1)
            n = self._outer.size
            if self._digest() != digest:
                self._contributes = False
            self._outer = got[:n].copy()
            self._momentum = got[n:].copy()
        self.outer_steps = steps
        self._contributors = sum(1 for s in said if s[2] and s[3] == digest)
        self._generation_seen = generation
        self.last_sync = SyncInfo(generation, root, differs, self._contributors)

    # -- checkpoints ----------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Outer params and momentum (tensors), counters, and the inner optimizer's state."""
        t = require_torch()
        return {
            "outer_params": t.from_numpy(self._outer.copy()),
            "momentum": t.from_numpy(self._momentum.copy()),
            "outer_steps": self.outer_steps,
            "inner_steps_done": self.inner_steps_done,
            "inner": self.inner.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output. The model's own params are not touched (load
        them from the same checkpoint); the next outer step syncs with the group first, and the
        member with the most outer steps wins."""
        outer = np.asarray(state["outer_params"], np.float32).reshape(-1)
        momentum = np.asarray(state["momentum"], np.float32).reshape(-1)
        if outer.shape != self._outer.shape or momentum.shape != self._outer.shape:
            raise ValueError(f"state for {outer.size} params, the model has {self._outer.size}")
        self.inner.load_state_dict(state["inner"])
        self._outer = outer.copy()
        self._momentum = momentum.copy()
        self.outer_steps = int(state["outer_steps"])
        self.inner_steps_done = int(state["inner_steps_done"])
        self._generation_seen = None
        self._contributes = True
        self._fresh = False
