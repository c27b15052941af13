"""A PyTorch module as a :class:`~p2pnode.training.models.Model` (the ``torch`` extra).

:class:`TorchModel` wraps an ``nn.Module`` classifier: parameters cross the boundary as a numpy
state dict keyed by ``named_parameters()`` names (buffers such as batch-norm statistics are not
trained by federation and stay in the module), and gradients come back the same way, so the
numpy aggregation, compression and optimizers treat a torch model like any other.
:meth:`TorchModel.flat_params` and :meth:`TorchModel.flat_grads` give the flat float32 vectors.

torch is imported lazily: importing this module without torch installed works, building a
:class:`TorchModel` raises a clear error. The module runs on CPU in float32.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from p2pnode.training.state_dict import StateDict, flatten

if TYPE_CHECKING:
    import torch

# The ``torch`` extra's range (pyproject.toml); any CPU or CUDA build within it works.
TORCH_REQUIREMENT = ">=2.3,<3"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def require_torch() -> Any:
    """The torch module, or an ImportError that says how to install the CPU build."""
    try:
        return importlib.import_module("torch")
    except ImportError as e:
        raise ImportError(
            f"the PyTorch adapter needs torch{TORCH_REQUIREMENT}: "
            f"pip install torch --index-url {TORCH_CPU_INDEX} (the CPU build), "
            "then pip install 'p2pnode[torch]'"
        ) from e


class TorchModel:
    """A classifier ``module(x) -> logits`` trained with mean cross-entropy.

    ``init_fn`` re-initialises the module's parameters from a seed drawn from the Generator that
    :meth:`init` receives (torch has its own RNG; seeding it from ours keeps runs reproducible).
    The default uses each submodule's ``reset_parameters``.
    """

    def __init__(
        self,
        module: torch.nn.Module,
        num_classes: int,
        init_fn: Callable[[torch.nn.Module, int], None] | None = None,
    ) -> None:
        self._torch = require_torch()
        if not isinstance(module, self._torch.nn.Module):
            raise TypeError("module must be a torch.nn.Module")
        self.module = module.float().cpu()
        self._num_classes = num_classes
        self._init_fn = init_fn
        self._names = [n for n, _ in self.module.named_parameters()]
        if not self._names:
            raise ValueError("the module has no parameters")

    @property
    def num_classes(self) -> int:
        return self._num_classes

    def init(self, rng: np.random.Generator) -> StateDict:
        seed = int(rng.integers(0, 2**63))
        if self._init_fn is not None:
            self._init_fn(self.module, seed)
        else:
            gen_state = self._torch.random.get_rng_state()
            try:
                # reset_parameters draws from torch's global RNG: seed it, then restore it so
                # we leave no trace on the caller's torch randomness.
                self._torch.manual_seed(seed)
                for m in self.module.modules():
                    reset = getattr(m, "reset_parameters", None)
                    if callable(reset):
                        reset()
            finally:
                self._torch.random.set_rng_state(gen_state)
        return self.state_dict()

    def state_dict(self) -> StateDict:
        """The module's parameters as numpy float32 copies, in ``named_parameters`` order."""
        return {
            n: p.detach().cpu().numpy().astype(np.float32, copy=True)
            for n, p in self.module.named_parameters()
        }

    def load(self, params: Mapping[str, np.ndarray]) -> None:
        """Copy ``params`` into the module (names and shapes must match exactly)."""
        if list(params) != self._names:
            raise ValueError(f"parameter names {list(params)} do not match {self._names}")
        with self._torch.no_grad():
            for n, p in self.module.named_parameters():
                value = np.asarray(params[n])
                if tuple(value.shape) != tuple(p.shape):
                    raise ValueError(f"{n}: shape {value.shape} != {tuple(p.shape)}")
                p.copy_(self._torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32)))

    def logits(self, params: StateDict, x: np.ndarray) -> np.ndarray:
        self.load(params)
        with self._torch.no_grad():
            out = self.module(self._torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
        return out.numpy().astype(np.float32)

    def loss_and_grad(
        self, params: StateDict, x: np.ndarray, y: np.ndarray
    ) -> tuple[float, StateDict]:
        t = self._torch
        self.load(params)
        self.module.zero_grad(set_to_none=True)
        out = self.module(t.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
        loss = t.nn.functional.cross_entropy(out, t.from_numpy(np.asarray(y, dtype=np.int64)))
        loss.backward()
        grads: StateDict = {}
        for n, p in self.module.named_parameters():
            # A parameter the forward pass did not use has no grad: its gradient is zero.
            g = p.grad
            grads[n] = (
                np.zeros(tuple(p.shape), np.float32)
                if g is None
                else g.detach().cpu().numpy().astype(np.float32, copy=True)
            )
        return float(loss.item()), grads

    def flat_params(self) -> np.ndarray:
        """The module's current parameters as one float32 vector."""
        return flatten(self.state_dict())

    def flat_grads(self) -> np.ndarray:
        """The gradients of the last :meth:`loss_and_grad` as one float32 vector."""
        return flatten(
            {
                n: (
                    np.zeros(tuple(p.shape), np.float32)
                    if p.grad is None
                    else p.grad.detach().cpu().numpy().astype(np.float32)
                )
                for n, p in self.module.named_parameters()
            }
        )
