"""Server optimizers and learning-rate schedules against hand-computed steps."""

import math

import numpy as np
import pytest

from p2pnode.training.optimizers import LAMB, SGD, Adam, make_optimizer
from p2pnode.training.schedules import Constant, Cosine, Warmup, make_schedule


def _p(*values: float) -> dict[str, np.ndarray]:
    return {"w": np.array(values, dtype=np.float64)}


def test_sgd_plain_momentum_and_weight_decay() -> None:
    opt = SGD()
    params, state = opt.step(_p(1.0, 2.0), _p(0.5, -1.0), opt.init(_p(0, 0)), lr=0.1)
    np.testing.assert_allclose(params["w"], [0.95, 2.1])
    opt = SGD(momentum=0.9, weight_decay=0.1)
    state = opt.init(_p(0.0))
    p = _p(1.0)
    # step 1: g = 1 + 0.1*1 = 1.1, buf = 1.1, p = 1 - 0.1*1.1 = 0.89
    p, state = opt.step(p, _p(1.0), state, lr=0.1)
    assert p["w"][0] == pytest.approx(0.89)
    # step 2: g = 1 + 0.089 = 1.089, buf = 0.99 + 1.089 = 2.079, p = 0.89 - 0.2079
    p, state = opt.step(p, _p(1.0), state, lr=0.1)
    assert p["w"][0] == pytest.approx(0.89 - 0.2079)
    assert state["step"] == 2


def test_adam_first_step_moves_by_lr_in_the_gradient_sign() -> None:
    opt = Adam()
    params, _ = opt.step(_p(1.0, 1.0), _p(3.0, -0.001), opt.init(_p(0, 0)), lr=0.01)
    # Bias-corrected m/sqrt(v) is sign(g) on the first step (up to eps).
    np.testing.assert_allclose(params["w"], [0.99, 1.01], rtol=1e-6)
    params, _ = Adam(weight_decay=0.5).step(_p(1.0), _p(0.0), Adam().init(_p(0)), lr=0.1)
    assert params["w"][0] == pytest.approx(1.0 - 0.1 * 0.5)  # decoupled decay alone


def test_lamb_trust_ratio_scales_the_step_to_the_layer() -> None:
    opt = LAMB()
    params = {"big": np.full(4, 10.0), "small": np.full(4, 0.1)}
    grads = {"big": np.ones(4), "small": np.ones(4)}
    new, _ = opt.step(params, grads, opt.init(params), lr=0.01)
    # The Adam direction is ~1 per coordinate, so ||r|| = 2; trust = ||p|| / 2.
    # Each layer moves by lr * ||p|| in norm: 1% of its own size.
    for k in params:
        moved = np.linalg.norm(params[k] - new[k])
        assert moved == pytest.approx(0.01 * np.linalg.norm(params[k]), rel=1e-5)


@pytest.mark.parametrize("name", ["sgd", "adam", "lamb"])
def test_optimizers_are_pure_and_reproducible(name: str) -> None:
    opt = make_optimizer(name)
    rng = np.random.default_rng(0)
    params = {"a": rng.normal(size=(3, 2)).astype(np.float32), "b": np.ones(2, np.float32)}
    grads = {k: rng.normal(size=v.shape).astype(np.float32) for k, v in params.items()}
    before = {k: v.copy() for k, v in params.items()}
    state = opt.init(params)
    p1, s1 = opt.step(params, grads, state, 0.1)
    p2, _ = opt.step(params, grads, state, 0.1)
    for k in params:
        np.testing.assert_array_equal(params[k], before[k])  # inputs untouched
        assert p1[k].tobytes() == p2[k].tobytes()
        assert p1[k].dtype == np.float32
    assert s1["step"] == 1 and state["step"] == 0


def test_optimizers_minimise_a_quadratic() -> None:
    for opt, lr in ((SGD(momentum=0.9), 0.05), (Adam(), 0.1), (LAMB(), 0.05)):
        params = {"w": np.array([3.0, -2.0, 5.0])}
        state = opt.init(params)
        schedule = Cosine(lr, total_steps=400)  # LAMB's relative steps need a decaying lr
        for step in range(400):
            params, state = opt.step(params, {"w": params["w"] - 1.0}, state, schedule(step))
        np.testing.assert_allclose(params["w"], 1.0, atol=0.05, err_msg=opt.name)


def test_optimizer_rejects_mismatched_grads() -> None:
    with pytest.raises(ValueError):
        SGD().step(_p(1.0), {"v": np.zeros(1)}, SGD().init(_p(1.0)), 0.1)
    with pytest.raises(ValueError):
        make_optimizer("rmsprop")


def test_schedules() -> None:
    assert Constant(0.3)(0) == Constant(0.3)(10_000) == 0.3
    cos = Cosine(1.0, total_steps=10, min_lr=0.1)
    assert cos(0) == 1.0 and cos(10) == pytest.approx(0.1) and cos(99) == pytest.approx(0.1)
    assert cos(5) == pytest.approx(0.55)
    warm = Warmup(Constant(1.0), warmup_steps=4)
    assert [warm(i) for i in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    wc = make_schedule("cosine", 1.0, total_steps=12, warmup_steps=2)
    assert wc(0) == 0.5 and wc(2) == 1.0 and wc(12) == pytest.approx(0.0, abs=1e-12)
    assert wc(7) == pytest.approx(0.5 * (1 + math.cos(math.pi * 5 / 10)))
    with pytest.raises(ValueError):
        Constant(1.0)(-1)
    with pytest.raises(ValueError):
        make_schedule("step", 1.0, 10)
