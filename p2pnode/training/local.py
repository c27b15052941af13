"""Local training: what a trainer does with the round's model before it sends an update.

:func:`local_sgd` runs minibatch SGD (optionally with momentum) for a number of epochs over a
client's shard, shuffling with the Generator passed in. :func:`model_delta` turns the result into
the flat update that is compressed and aggregated. Local training need not be bit-reproducible
across machines (matrix products go through BLAS); only aggregation and the server step must be.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from p2pnode.training.data import Dataset
from p2pnode.training.models import Model
from p2pnode.training.optimizers import Optimizer
from p2pnode.training.state_dict import StateDict, copy, flatten


def local_sgd(
    model: Model,
    params: Mapping[str, np.ndarray],
    data: Dataset,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    rng: np.random.Generator,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
) -> tuple[StateDict, float]:
    """Train a copy of ``params``; return it and the mean loss of the last epoch."""
    if not lr > 0:
        raise ValueError("need lr > 0")
    buf: dict[str, np.ndarray] = {}

    def step(p: StateDict, grads: Mapping[str, np.ndarray]) -> StateDict:
        for k, g in grads.items():
            if weight_decay:
                g = g + weight_decay * p[k]
            if momentum:
                buf[k] = momentum * buf.get(k, np.zeros_like(p[k])) + g
                g = buf[k]
            p[k] = (p[k] - lr * g).astype(p[k].dtype)
        return p

    return _minibatch_epochs(model, params, data, epochs, batch_size, rng, step)


def local_train(
    model: Model,
    params: Mapping[str, np.ndarray],
    data: Dataset,
    optimizer: Optimizer,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    rng: np.random.Generator,
) -> tuple[StateDict, float]:
    """Local training with any optimizer of :mod:`p2pnode.training.optimizers` (Adam, LAMB),
    its state fresh each call, as FedOpt's clients keep it; otherwise as :func:`local_sgd`."""
    state = optimizer.init(params)

    def step(p: StateDict, grads: Mapping[str, np.ndarray]) -> StateDict:
        nonlocal state
        p, state = optimizer.step(p, grads, state, lr)
        return p

    return _minibatch_epochs(model, params, data, epochs, batch_size, rng, step)


def _minibatch_epochs(
    model: Model,
    params: Mapping[str, np.ndarray],
    data: Dataset,
    epochs: int,
    batch_size: int,
    rng: np.random.Generator,
    step: Callable[[StateDict, Mapping[str, np.ndarray]], StateDict],
) -> tuple[StateDict, float]:
    """``epochs`` passes over ``data`` in minibatches shuffled by ``rng``, ``step`` applying
    each batch's gradients; returns the parameters and the last epoch's mean loss."""
    if epochs < 0 or batch_size < 1:
        raise ValueError("need epochs >= 0 and batch_size >= 1")
    if len(data) == 0:
        raise ValueError("cannot train on an empty shard")
    p = copy(params)
    last_loss = float("nan")
    for _ in range(epochs):
        order = rng.permutation(len(data))
        losses = []
        for start in range(0, len(data), batch_size):
            batch = order[start : start + batch_size]
            loss, grads = model.loss_and_grad(p, data.x[batch], data.y[batch])
            losses.append(loss)
            p = step(p, grads)
        last_loss = float(np.mean(losses))
    return p, last_loss


def model_delta(new: Mapping[str, np.ndarray], old: Mapping[str, np.ndarray]) -> np.ndarray:
    """``flatten(new) - flatten(old)`` as float32: the update a trainer sends."""
    return flatten(new) - flatten(old)
