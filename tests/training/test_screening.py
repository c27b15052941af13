"""The validation screen: the exact loss, the greedy leave-one-out drops, determinism."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pnode.training.aggregation import Bucketing, ClientUpdate, make_rule
from p2pnode.training.attacks import craft_update
from p2pnode.training.data import load_digits
from p2pnode.training.local import local_sgd, model_delta
from p2pnode.training.models import make_model, softmax_cross_entropy
from p2pnode.training.screening import ScreenedRule, exact_logits, exact_loss, validation_loss_fn
from p2pnode.training.sharding import dirichlet_shards


@pytest.fixture(scope="module")
def setting() -> tuple:
    """A model after a little training, 6 honest non-IID updates and a validation set."""
    data = load_digits()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(data))
    val, train = data.subset(order[:200]), data.subset(order[200:])
    model = make_model("mlp", in_features=64, hidden=(32,), num_classes=10)
    params = model.init(np.random.default_rng(1))
    params, _ = local_sgd(model, params, train, epochs=1, batch_size=32, lr=0.1, rng=rng)
    shards = dirichlet_shards(train.y, 6, 0.5, rng)
    deltas = []
    for s in shards:
        local, _ = local_sgd(
            model, params, train.subset(s), epochs=2, batch_size=32, lr=0.1, rng=rng, momentum=0.9
        )
        deltas.append(model_delta(local, params))
    return model, params, val, np.stack(deltas)


def test_exact_logits_and_loss_agree_with_the_model(setting: tuple) -> None:
    model, params, val, _ = setting
    z = exact_logits(model, params, val.x)
    np.testing.assert_allclose(z, model.logits(params, val.x), rtol=1e-4, atol=1e-4)
    ref, _ = softmax_cross_entropy(model.logits(params, val.x).astype(np.float64), val.y)
    assert exact_loss(model, params, val) == pytest.approx(ref, rel=1e-5)
    soft = make_model("softmax", in_features=64, num_classes=10)
    p = soft.init(np.random.default_rng(3))
    np.testing.assert_allclose(exact_logits(soft, p, val.x), soft.logits(p, val.x), atol=1e-5)


def _updates(stack: np.ndarray, bad: dict[int, np.ndarray]) -> list[ClientUpdate]:
    rows = {i: stack[i] for i in range(len(stack))} | bad
    return [ClientUpdate(f"c{i}", rows[i].astype(np.float32), 10) for i in sorted(rows)]


@pytest.mark.parametrize("kind", ["ipm", "alie", "min_sum"])
def test_the_screen_drops_attackers_hiding_among_honest_updates(setting: tuple, kind: str) -> None:
    model, params, val, stack = setting
    bad = craft_update(kind, stack, 8, 2, eps=1.0 if kind == "ipm" else 0.5, z=1.5)
    ups = _updates(stack, {6: bad, 7: bad})
    rule = ScreenedRule(make_rule("fedavg"), max_drop=2)
    loss = validation_loss_fn(model, params, val)
    res = rule.aggregate_with(ups, loss)
    assert "c6" not in res.contributors and "c7" not in res.contributors
    assert not {"c6", "c7"} & set(res.outliers)  # hidden: left out, no distance evidence
    # The attackers' leave-one-out scores are the lowest.
    low = sorted(res.scores, key=lambda c: res.scores[c])[:2]
    assert set(low) == {"c6", "c7"}
    assert loss(res.aggregate) < loss(make_rule("fedavg").aggregate(ups).aggregate)


def test_a_positive_margin_keeps_honest_updates(setting: tuple) -> None:
    model, params, val, stack = setting
    ups = _updates(stack, {})
    rule = ScreenedRule(make_rule("fedavg"), max_drop=2, margin=1.0)
    res = rule.aggregate_with(ups, validation_loss_fn(model, params, val))
    assert res.outliers == ()
    assert res.contributors == tuple(u.client_id for u in ups)


def test_plain_aggregate_is_refused() -> None:
    with pytest.raises(TypeError):
        ScreenedRule(make_rule("fedavg")).aggregate([ClientUpdate("a", np.zeros(3, np.float32))])


@settings(max_examples=10, deadline=None)
@given(st.permutations(list(range(8))), st.sampled_from(["fedavg", "trimmed_mean", "krum"]))
def test_same_inputs_in_any_order_give_the_same_bytes(
    setting: tuple, order: list[int], rule_name: str
) -> None:
    model, params, val, stack = setting
    bad = craft_update("alie", stack, 8, 2, z=1.5)
    ups = _updates(stack, {6: bad, 7: bad})
    rule = ScreenedRule(
        make_rule(rule_name, f=2), max_drop=2, remake=lambda k: make_rule(rule_name, f=2 - k)
    )
    a = rule.aggregate_with(ups, validation_loss_fn(model, params, val))
    b = rule.aggregate_with([ups[i] for i in order], validation_loss_fn(model, params, val))
    assert a.aggregate.tobytes() == b.aggregate.tobytes()
    assert (a.outliers, a.contributors, a.scores) == (b.outliers, b.contributors, b.scores)


def test_bucketing_averages_seeded_buckets_in_any_input_order() -> None:
    rng = np.random.default_rng(4)
    ups = [ClientUpdate(f"c{i}", rng.normal(0, 1, 30).astype(np.float32)) for i in range(8)]
    rule = Bucketing(make_rule("trimmed_mean", f=1, mixing=False), s=2, seed=7)
    a = rule.aggregate(ups)
    b = rule.aggregate(list(reversed(ups)))
    assert a.aggregate.tobytes() == b.aggregate.tobytes()
    # The same as the inner rule over the bucket means of the seeded shuffle.
    perm = np.random.default_rng(7).permutation(8)
    stack = np.stack([u.delta for u in ups])
    means = [
        ClientUpdate(
            f"b{j}", stack[np.sort(perm[j : j + 2])].astype(np.float64).mean(0).astype(np.float32)
        )
        for j in range(0, 8, 2)
    ]
    want = make_rule("trimmed_mean", f=1, mixing=False).aggregate(means).aggregate
    np.testing.assert_allclose(a.aggregate, want, rtol=1e-6, atol=1e-7)
    assert rule.max_byzantine(8) == 1 and set(a.contributors) == {u.client_id for u in ups}


def test_the_set_search_drops_identical_attackers_together(setting: tuple) -> None:
    model, params, val, stack = setting
    bad = craft_update("ipm", stack, 8, 2, eps=1.0)
    ups = _updates(stack, {6: bad, 7: bad})
    loss = validation_loss_fn(model, params, val)
    rule = ScreenedRule(make_rule("fedavg"), max_drop=2, subset=True)
    kept, dropped, _ = rule.screen(ups, loss)
    assert dropped == ("c6", "c7") and kept == tuple(f"c{i}" for i in range(6))
    # Too many sets to search: the greedy screen is used instead.
    capped = ScreenedRule(make_rule("fedavg"), max_drop=2, subset=True, subset_cap=10)
    assert capped.screen(ups, loss)[1] == ScreenedRule(make_rule("fedavg")).screen(ups, loss)[1]


def test_loud_inputs_go_first_and_do_not_use_up_the_drops(setting: tuple) -> None:
    model, params, val, stack = setting
    loud = craft_update("ipm", stack, 8, 2, eps=30.0)
    quiet = craft_update("ipm", stack, 8, 2, eps=1.0)
    ups = _updates(stack, {6: loud, 7: quiet})
    rule = ScreenedRule(make_rule("fedavg"), max_drop=1)
    res = rule.aggregate_with(ups, validation_loss_fn(model, params, val))
    # The loud one is evidence (an outlier); the screen's single drop is left for the quiet one.
    assert "c6" in res.outliers and "c6" not in res.contributors
    assert "c7" not in res.contributors and "c7" not in res.outliers
    assert res.scores["c6"] < 0 and res.scores["c7"] < 0
