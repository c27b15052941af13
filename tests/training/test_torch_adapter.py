"""The PyTorch adapter, against torch itself and against our numpy MLP. Skipped without torch."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from p2pnode.training.data import load_digits  # noqa: E402
from p2pnode.training.local import local_sgd  # noqa: E402
from p2pnode.training.models import MLP, accuracy  # noqa: E402
from p2pnode.training.state_dict import ParamSpec, flatten, unflatten  # noqa: E402
from p2pnode.training.torch_adapter import TorchModel  # noqa: E402


def _net() -> "torch.nn.Module":
    return torch.nn.Sequential(torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10))


def test_installed_torch_is_in_the_extras_range() -> None:
    major, minor = (int(p) for p in torch.__version__.split("+")[0].split(".")[:2])
    assert (2, 3) <= (major, minor) < (3, 0)


def test_init_is_seeded_and_leaves_torch_rng_alone() -> None:
    model = TorchModel(_net(), num_classes=10)
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a = model.init(np.random.default_rng(5))
    b = model.init(np.random.default_rng(5))
    assert torch.rand(1).item() == expected_next.item()
    assert list(a) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
        assert a[k].dtype == np.float32


def test_gradients_match_the_numpy_mlp() -> None:
    # The same network in both worlds: torch's Linear weight is (out, in), ours (in, out).
    rng = np.random.default_rng(0)
    numpy_model = MLP(64, [16], 10, dtype=np.float32)
    params = numpy_model.init(rng)
    tm = TorchModel(_net(), num_classes=10)
    tparams = {
        "0.weight": params["layers.0.weight"].T.copy(),
        "0.bias": params["layers.0.bias"],
        "2.weight": params["layers.1.weight"].T.copy(),
        "2.bias": params["layers.1.bias"],
    }
    data = load_digits()
    x, y = data.x[:50], data.y[:50]
    loss_np, g_np = numpy_model.loss_and_grad(params, x, y)
    loss_t, g_t = tm.loss_and_grad(tparams, x, y)
    assert loss_t == pytest.approx(loss_np, rel=1e-5)
    np.testing.assert_allclose(g_t["0.weight"], g_np["layers.0.weight"].T, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(g_t["2.bias"], g_np["layers.1.bias"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(
        tm.logits(tparams, x), numpy_model.logits(params, x), rtol=1e-4, atol=1e-5
    )
    flat = tm.flat_grads()
    assert flat.shape == (ParamSpec.of(tparams).size,)
    np.testing.assert_array_equal(flat, flatten(g_t))


def test_flat_params_round_trip_through_the_module() -> None:
    tm = TorchModel(_net(), num_classes=10)
    params = tm.init(np.random.default_rng(1))
    spec = ParamSpec.of(params)
    vec = flatten(params) + 1.0
    tm.load(unflatten(vec, spec))
    np.testing.assert_array_equal(tm.flat_params(), vec)
    with pytest.raises(ValueError, match="do not match"):
        tm.load({"x": vec})


def test_torch_model_trains_in_the_numpy_loop() -> None:
    data = load_digits()
    rng = np.random.default_rng(2)
    tm = TorchModel(_net(), num_classes=10)
    params = tm.init(rng)
    params, _ = local_sgd(tm, params, data, epochs=3, batch_size=32, lr=0.1, momentum=0.9, rng=rng)
    assert accuracy(tm, params, data.x, data.y) > 0.9
