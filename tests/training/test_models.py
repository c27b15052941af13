"""Models: hand-written gradients against central finite differences; the plug-in registry."""

import numpy as np
import pytest

from p2pnode.training.data import load_digits
from p2pnode.training.local import local_sgd
from p2pnode.training.models import (
    MLP,
    Model,
    SoftmaxRegression,
    accuracy,
    make_model,
    register_model,
    softmax_cross_entropy,
)


def _numeric_grad(model: Model, params: dict, x: np.ndarray, y: np.ndarray) -> dict:
    eps = 1e-6
    grads = {}
    for name, p in params.items():
        g = np.zeros_like(p)
        for idx in np.ndindex(p.shape):
            old = p[idx]
            p[idx] = old + eps
            up, _ = model.loss_and_grad(params, x, y)
            p[idx] = old - eps
            down, _ = model.loss_and_grad(params, x, y)
            p[idx] = old
            g[idx] = (up - down) / (2 * eps)
        grads[name] = g
    return grads


@pytest.mark.parametrize(
    "model",
    [
        SoftmaxRegression(5, 3, dtype=np.float64),
        MLP(5, [4, 3], 3, dtype=np.float64),
        MLP(5, [6], 4, dtype=np.float64),
    ],
    ids=["softmax", "mlp-2-hidden", "mlp-1-hidden"],
)
def test_gradient_matches_finite_differences(model: Model) -> None:
    rng = np.random.default_rng(7)
    params = model.init(rng)
    # Non-zero biases so the ReLU kinks are not all at the same place.
    for k in params:
        params[k] = params[k] + rng.normal(0, 0.1, params[k].shape)
    x = rng.normal(size=(8, 5))
    y = rng.integers(0, model.num_classes, size=8)
    _, grads = model.loss_and_grad(params, x, y)
    numeric = _numeric_grad(model, params, x, y)
    assert list(grads) == list(params)
    for k in params:
        np.testing.assert_allclose(grads[k], numeric[k], rtol=1e-5, atol=1e-7)


def test_cross_entropy_is_stable_for_huge_logits() -> None:
    logits = np.array([[1000.0, 0.0], [0.0, -1000.0]])
    loss, grad = softmax_cross_entropy(logits, np.array([0, 0]))
    assert np.isfinite(loss) and loss == pytest.approx(0.0, abs=1e-12)
    assert np.isfinite(grad).all()


def test_models_learn_digits() -> None:
    data = load_digits()
    rng = np.random.default_rng(0)
    for model in (SoftmaxRegression(64, 10), MLP(64, [32], 10)):
        params = model.init(rng)
        before = accuracy(model, params, data.x, data.y)
        params, _ = local_sgd(
            model, params, data, epochs=3, batch_size=32, lr=0.1, momentum=0.9, rng=rng
        )
        after = accuracy(model, params, data.x, data.y)
        assert before < 0.3 and after > 0.9, (before, after)
        assert all(v.dtype == np.float32 for v in params.values())


def test_batch_validation() -> None:
    model = SoftmaxRegression(4, 3)
    params = model.init(np.random.default_rng(0))
    with pytest.raises(ValueError, match="shape"):
        model.loss_and_grad(params, np.zeros((2, 5), np.float32), np.zeros(2, np.int64))
    with pytest.raises(ValueError, match="labels"):
        model.loss_and_grad(params, np.zeros((2, 4), np.float32), np.array([0, 3]))


class _Centroid:
    """A user's own numpy model: one learnable offset per class."""

    num_classes = 2

    def init(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        return {"offset": np.zeros(2, np.float64)}

    def logits(self, params: dict, x: np.ndarray) -> np.ndarray:
        return np.tile(params["offset"], (x.shape[0], 1))

    def loss_and_grad(self, params: dict, x: np.ndarray, y: np.ndarray) -> tuple[float, dict]:
        loss, g = softmax_cross_entropy(self.logits(params, x), y)
        return loss, {"offset": g.sum(axis=0)}


def test_registry_accepts_a_user_model_and_rejects_non_models() -> None:
    register_model("test-centroid", _Centroid)
    model = make_model("test-centroid")
    assert isinstance(model, Model)
    with pytest.raises(ValueError, match="already registered"):
        register_model("test-centroid", _Centroid)
    register_model("test-not-a-model", object)
    with pytest.raises(TypeError, match="not a Model"):
        make_model("test-not-a-model")
    with pytest.raises(ValueError, match="unknown model"):
        make_model("no-such-model")
    assert isinstance(make_model("mlp", in_features=3, hidden=[2], num_classes=2), MLP)
