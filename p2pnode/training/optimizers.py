"""Server optimizers: how a validator applies the round's aggregate to the global model.

The aggregate of client deltas is turned into a pseudo-gradient ``g = -aggregate`` (FedOpt,
Reddi et al., 2021): plain SGD with lr 1 and no momentum is then exactly FedAvg's "add the mean
delta". Optimizers are pure: ``step(params, grads, state, lr) -> (params, state)`` returns new
arrays and a new state and never mutates its inputs, so a validator can recompute a round from
the committed state alone. Each operates per tensor of a state dict (LAMB's trust ratio is per
layer). Arithmetic is element-wise numpy plus norms by pairwise summation, so results are
bit-reproducible on any machine with the same numpy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from p2pnode.training.state_dict import StateDict

#: optimizer state: a step counter plus named buffers, each a state dict like the params.
OptState = dict[str, object]


class Optimizer(Protocol):
    name: str

    def init(self, params: Mapping[str, np.ndarray]) -> OptState: ...

    def step(
        self,
        params: Mapping[str, np.ndarray],
        grads: Mapping[str, np.ndarray],
        state: OptState,
        lr: float,
    ) -> tuple[StateDict, OptState]: ...


def _zeros_like(params: Mapping[str, np.ndarray]) -> StateDict:
    return {k: np.zeros_like(v) for k, v in params.items()}


def _check(params: Mapping[str, np.ndarray], grads: Mapping[str, np.ndarray]) -> None:
    if list(params) != list(grads):
        raise ValueError("grads must have the same names, in the same order, as params")
    for k, v in params.items():
        if grads[k].shape != v.shape:
            raise ValueError(f"grad {k!r} has shape {grads[k].shape}, param {v.shape}")


def _l2(v: np.ndarray) -> float:
    v64 = v.astype(np.float64)
    return float(np.sqrt(np.sum(v64 * v64)))


@dataclass(frozen=True, slots=True)
class SGD:
    """SGD with heavy-ball momentum (``buf = momentum * buf + g``) and L2 weight decay
    (added to the gradient), optionally Nesterov."""

    momentum: float = 0.0
    weight_decay: float = 0.0
    nesterov: bool = False
    name: str = "sgd"

    def init(self, params: Mapping[str, np.ndarray]) -> OptState:
        return {"step": 0, "momentum": _zeros_like(params)}

    def step(
        self,
        params: Mapping[str, np.ndarray],
        grads: Mapping[str, np.ndarray],
        state: OptState,
        lr: float,
    ) -> tuple[StateDict, OptState]:
        _check(params, grads)
        old_buf: StateDict = state["momentum"]  # type: ignore[assignment]
        new_params: StateDict = {}
        new_buf: StateDict = {}
        for k, p in params.items():
            g = grads[k] + self.weight_decay * p if self.weight_decay else grads[k]
            if self.momentum:
                buf = self.momentum * old_buf[k] + g
                g = g + self.momentum * buf if self.nesterov else buf
                new_buf[k] = buf.astype(p.dtype)
            else:
                new_buf[k] = old_buf[k]
            new_params[k] = (p - lr * g).astype(p.dtype)
        return new_params, {"step": int(state["step"]) + 1, "momentum": new_buf}  # type: ignore[call-overload]


@dataclass(frozen=True, slots=True)
class Adam:
    """Adam (Kingma and Ba, 2015) with bias correction and decoupled weight decay (AdamW,
    Loshchilov and Hutter, 2019): ``p -= lr * (m_hat / (sqrt(v_hat) + eps) + wd * p)``."""

    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    name: str = "adam"

    def init(self, params: Mapping[str, np.ndarray]) -> OptState:
        return {"step": 0, "m": _zeros_like(params), "v": _zeros_like(params)}

    def _moments(
        self, params: Mapping[str, np.ndarray], grads: Mapping[str, np.ndarray], state: OptState
    ) -> tuple[int, StateDict, StateDict, dict[str, np.ndarray]]:
        _check(params, grads)
        t = int(state["step"]) + 1  # type: ignore[call-overload]
        m_old: StateDict = state["m"]  # type: ignore[assignment]
        v_old: StateDict = state["v"]  # type: ignore[assignment]
        m: StateDict = {}
        v: StateDict = {}
        direction: dict[str, np.ndarray] = {}
        c1 = 1.0 - self.beta1**t
        c2 = 1.0 - self.beta2**t
        for k, p in params.items():
            g = grads[k]
            m[k] = (self.beta1 * m_old[k] + (1.0 - self.beta1) * g).astype(p.dtype)
            v[k] = (self.beta2 * v_old[k] + (1.0 - self.beta2) * g * g).astype(p.dtype)
            direction[k] = (m[k] / c1) / (np.sqrt(v[k] / c2) + self.eps)
        return t, m, v, direction

    def step(
        self,
        params: Mapping[str, np.ndarray],
        grads: Mapping[str, np.ndarray],
        state: OptState,
        lr: float,
    ) -> tuple[StateDict, OptState]:
        t, m, v, direction = self._moments(params, grads, state)
        new_params = {
            k: (p - lr * (direction[k] + self.weight_decay * p)).astype(p.dtype)
            for k, p in params.items()
        }
        return new_params, {"step": t, "m": m, "v": v}


@dataclass(frozen=True, slots=True)
class LAMB:
    """LAMB (You et al., 2020): the AdamW direction ``r``, scaled per tensor by the trust ratio
    ``||p|| / ||r||`` (1 when either norm is zero), so every layer moves by a similar relative
    amount whatever its gradient scale."""

    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-6
    weight_decay: float = 0.0
    name: str = "lamb"

    def init(self, params: Mapping[str, np.ndarray]) -> OptState:
        return {"step": 0, "m": _zeros_like(params), "v": _zeros_like(params)}

    def step(
        self,
        params: Mapping[str, np.ndarray],
        grads: Mapping[str, np.ndarray],
        state: OptState,
        lr: float,
    ) -> tuple[StateDict, OptState]:
        adam = Adam(self.beta1, self.beta2, self.eps)
        t, m, v, direction = adam._moments(params, grads, state)
        new_params: StateDict = {}
        for k, p in params.items():
            r = direction[k] + self.weight_decay * p
            p_norm, r_norm = _l2(p), _l2(r)
            trust = p_norm / r_norm if p_norm > 0 and r_norm > 0 else 1.0
            new_params[k] = (p - lr * trust * r).astype(p.dtype)
        return new_params, {"step": t, "m": m, "v": v}


def make_optimizer(name: str, **kwargs: object) -> Optimizer:
    if name == "sgd":
        return SGD(**kwargs)  # type: ignore[arg-type]
    if name == "adam":
        return Adam(**kwargs)  # type: ignore[arg-type]
    if name == "lamb":
        return LAMB(**kwargs)  # type: ignore[arg-type]
    raise ValueError(f"unknown optimizer {name!r}; known: sgd, adam, lamb")
