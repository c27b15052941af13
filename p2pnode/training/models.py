"""Models: the plug-in interface and two hand-written numpy models.

A model is stateless code; its parameters live in a :data:`StateDict` passed in and out, so the
same object serves every client of a simulation and the global model of a validator. Anything that
implements :class:`Model` can take part in training: the numpy models here, a user's own numpy
model, or a PyTorch module through :mod:`p2pnode.training.torch_adapter`. :func:`register_model`
lets a user name a factory so a job spec can refer to it by string.

Forward and backward passes are vectorised by hand (no autograd) and tested against finite
differences. The loss is the mean softmax cross-entropy over the batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from p2pnode.training.state_dict import StateDict


@runtime_checkable
class Model(Protocol):
    """What training needs from a model. Labels are int class ids in ``[0, num_classes)``."""

    @property
    def num_classes(self) -> int: ...

    def init(self, rng: np.random.Generator) -> StateDict:
        """Fresh parameters drawn from ``rng`` (the only source of randomness)."""
        ...

    def logits(self, params: StateDict, x: np.ndarray) -> np.ndarray:
        """Unnormalised class scores of shape ``(batch, num_classes)``."""
        ...

    def loss_and_grad(
        self, params: StateDict, x: np.ndarray, y: np.ndarray
    ) -> tuple[float, StateDict]:
        """Mean cross-entropy over the batch and its gradient, a state dict like ``params``."""
        ...


def softmax_cross_entropy(logits: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of ``logits`` against int labels ``y`` and its gradient wrt logits."""
    # Subtracting the row max keeps exp() from overflowing; it cancels in the softmax.
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    sum_exp = exp.sum(axis=1, keepdims=True)
    n = logits.shape[0]
    rows = np.arange(n)
    loss = float(np.mean(np.log(sum_exp[:, 0]) - shifted[rows, y]))
    grad = exp / sum_exp
    grad[rows, y] -= 1.0
    grad /= n
    return loss, grad


def predict(model: Model, params: StateDict, x: np.ndarray) -> np.ndarray:
    """Predicted class ids."""
    return np.argmax(model.logits(params, x), axis=1)


def accuracy(model: Model, params: StateDict, x: np.ndarray, y: np.ndarray) -> float:
    """Fraction of ``x`` classified as ``y``."""
    if len(y) == 0:
        raise ValueError("accuracy of an empty set is undefined")
    return float(np.mean(predict(model, params, x) == y))


def _check_batch(x: np.ndarray, y: np.ndarray, in_features: int, num_classes: int) -> None:
    if x.ndim != 2 or x.shape[1] != in_features:
        raise ValueError(f"x must have shape (batch, {in_features}), got {x.shape}")
    if y.shape != (x.shape[0],):
        raise ValueError(f"y must have shape ({x.shape[0]},), got {y.shape}")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes})")


class SoftmaxRegression:
    """Multinomial logistic regression: ``logits = x @ W + b``."""

    def __init__(self, in_features: int, num_classes: int, dtype: type = np.float32) -> None:
        if in_features < 1 or num_classes < 2:
            raise ValueError("need in_features >= 1 and num_classes >= 2")
        self.in_features = in_features
        self._num_classes = num_classes
        self.dtype = dtype

    @property
    def num_classes(self) -> int:
        return self._num_classes

    def init(self, rng: np.random.Generator) -> StateDict:
        # Small random weights rather than zeros so clients' first updates are not all equal.
        scale = 0.01
        w = rng.normal(0.0, scale, size=(self.in_features, self._num_classes))
        return {"weight": w.astype(self.dtype), "bias": np.zeros(self._num_classes, self.dtype)}

    def logits(self, params: StateDict, x: np.ndarray) -> np.ndarray:
        return x @ params["weight"] + params["bias"]

    def loss_and_grad(
        self, params: StateDict, x: np.ndarray, y: np.ndarray
    ) -> tuple[float, StateDict]:
        _check_batch(x, y, self.in_features, self._num_classes)
        loss, g = softmax_cross_entropy(self.logits(params, x), y)
        return loss, {
            "weight": (x.T @ g).astype(params["weight"].dtype),
            "bias": g.sum(axis=0).astype(params["bias"].dtype),
        }


class MLP:
    """A multilayer perceptron with ReLU hidden layers and a linear output layer.

    Parameters are ``layers.<i>.weight`` of shape ``(fan_in, fan_out)`` and ``layers.<i>.bias``.
    """

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int],
        num_classes: int,
        dtype: type = np.float32,
    ) -> None:
        if in_features < 1 or num_classes < 2 or any(h < 1 for h in hidden):
            raise ValueError("layer sizes must be positive and num_classes >= 2")
        self.sizes = (in_features, *hidden, num_classes)
        self._num_classes = num_classes
        self.dtype = dtype

    @property
    def num_classes(self) -> int:
        return self._num_classes

    @property
    def num_layers(self) -> int:
        return len(self.sizes) - 1

    def init(self, rng: np.random.Generator) -> StateDict:
        params: StateDict = {}
        for i, (fan_in, fan_out) in enumerate(zip(self.sizes[:-1], self.sizes[1:], strict=True)):
            # He initialisation keeps ReLU activations' variance steady through the layers.
            w = rng.normal(0.0, np.sqrt(2.0 / fan_in), size=(fan_in, fan_out))
            params[f"layers.{i}.weight"] = w.astype(self.dtype)
            params[f"layers.{i}.bias"] = np.zeros(fan_out, self.dtype)
        return params

    def _forward(self, params: StateDict, x: np.ndarray) -> list[np.ndarray]:
        """Activations of every layer, input first and logits last (kept for backward)."""
        acts = [x]
        h = x
        for i in range(self.num_layers):
            h = h @ params[f"layers.{i}.weight"] + params[f"layers.{i}.bias"]
            if i < self.num_layers - 1:
                h = np.maximum(h, 0.0)
            acts.append(h)
        return acts

    def logits(self, params: StateDict, x: np.ndarray) -> np.ndarray:
        return self._forward(params, x)[-1]

    def loss_and_grad(
        self, params: StateDict, x: np.ndarray, y: np.ndarray
    ) -> tuple[float, StateDict]:
        _check_batch(x, y, self.sizes[0], self._num_classes)
        acts = self._forward(params, x)
        loss, delta = softmax_cross_entropy(acts[-1], y)
        grads: StateDict = {}
        for i in reversed(range(self.num_layers)):
            w = params[f"layers.{i}.weight"]
            grads[f"layers.{i}.weight"] = (acts[i].T @ delta).astype(w.dtype)
            grads[f"layers.{i}.bias"] = delta.sum(axis=0).astype(w.dtype)
            if i > 0:
                # ReLU passes gradient only where its output was positive.
                delta = (delta @ w.T) * (acts[i] > 0)
        # Return the gradient in the parameters' own order, not the backward order.
        return loss, {name: grads[name] for name in params}


ModelFactory = Callable[..., Model]
_REGISTRY: dict[str, ModelFactory] = {}


def register_model(name: str, factory: ModelFactory) -> None:
    """Make ``factory`` available to :func:`make_model` under ``name``."""
    if not name or name in _REGISTRY:
        raise ValueError(f"model name {name!r} is empty or already registered")
    _REGISTRY[name] = factory


def make_model(name: str, **kwargs: object) -> Model:
    """Build a registered model; ``kwargs`` go to its factory."""
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; registered: {sorted(_REGISTRY)}") from None
    model = factory(**kwargs)
    if not isinstance(model, Model):
        raise TypeError(f"factory for {name!r} returned {type(model).__name__}, not a Model")
    return model


def registered_models() -> list[str]:
    return sorted(_REGISTRY)


register_model("softmax", SoftmaxRegression)
register_model("mlp", MLP)
