"""The validation screen as validators run it (JobCompute.aggregate) and the node attackers
that craft ALIE or IPM updates from the honest updates they recompute, with the near-duplicate
re-runs that find them (and leave honest look-alikes alone). Real training on the digits job
(the default local training, 8 shards, 2 attackers), first round."""

from __future__ import annotations

import numpy as np
import pytest

from p2pnode.jobs.spec import spec_from_options
from p2pnode.rounds.compute import JobCompute, job_rule, node_seed
from p2pnode.training.aggregation import NearestNeighborMixing
from p2pnode.training.compression import decode
from p2pnode.training.redundancy import near_duplicate_pairs
from p2pnode.training.screening import ScreenedRule
from p2pnode_protocols.rounds import UpdateRef

NODES = tuple(bytes([i + 1]) * 8 for i in range(8))
BAD = NODES[6:]


def _job(rule: str = "trimmed_mean") -> tuple[JobCompute, dict[str, np.ndarray]]:
    spec = spec_from_options(max_participants=8, rule=rule, f=2)
    c = JobCompute.build("screen", spec)
    return c, c.initial_tensors()


def _refs(ups: list[bytes]) -> list[tuple[UpdateRef, bytes]]:
    return [
        (UpdateRef(node=n, round=1, key=f"k{i}", size=1, samples=10, sig=b"-"), u)
        for i, (n, u) in enumerate(zip(NODES, ups, strict=True))
    ]


def test_the_screen_is_on_by_default_for_robust_rules_only() -> None:
    c, _ = _job()
    assert isinstance(job_rule(c.spec.learning), ScreenedRule)
    assert isinstance(job_rule(c.spec.learning).inner, NearestNeighborMixing)
    assert not isinstance(job_rule({**c.spec.learning, "screen": False}), ScreenedRule)
    fed = _job("fedavg")[0]
    assert not isinstance(job_rule(fed.spec.learning), ScreenedRule)
    assert isinstance(job_rule({**fed.spec.learning, "screen": True}), ScreenedRule)


SHARDS = {n: i for i, n in enumerate(NODES)}


def _round_one(c: JobCompute, base: dict[str, np.ndarray], attack: str) -> list[bytes]:
    """Round 1's updates of every node, the two in BAD crafting ``attack``."""
    scale = 0.5 if attack == "ipm" else 10
    return [
        c.train_task(base, 1, i, node_seed(n), attack if n in BAD else "", scale).update
        for i, n in enumerate(NODES)
    ]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("attack", ["alie", "ipm"])
def test_node_attackers_are_screened_out_scored_lowest_and_validators_agree(attack: str) -> None:
    c, base = _job()
    ups = _round_one(c, base, attack)
    assert ups[6] != ups[7]  # each attacker crafts from its own recomputed honest updates
    # Shards unknown (nothing can be re-run): the screen alone.
    tensors, r = c.aggregate(base, "b", 1, _refs(ups))
    assert r.flags == ()
    assert len(set(BAD) & set(r.contributors)) <= 1  # the screen drops at least one of them
    scores = dict(r.scores)
    honest = sorted(scores[n] for n in NODES[:6])
    if attack == "ipm":  # a step back along the mean: the two lowest scores
        assert max(scores[n] for n in BAD) < honest[0], scores
    else:  # ALIE hides better; in one round it still scores below most honest updates
        assert max(scores[n] for n in BAD) < honest[3], scores
    # Another validator, the updates in another order: the same bytes and the same result.
    again, r2 = c.aggregate(base, "b", 1, list(reversed(_refs(ups))))
    assert r2 == r
    assert all(tensors[k].tobytes() == again[k].tobytes() for k in tensors)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("attack", ["alie", "ipm"])
def test_crafted_near_duplicates_are_re_run_flagged_and_scored_lowest(attack: str) -> None:
    """As validators run it (shards known): the two attackers' crafted updates are far closer
    to each other than honest updates are, so both are re-run, neither recomputes, both are
    flagged, and their scores count what they did to the loss against them."""
    c, base = _job()
    ups = _round_one(c, base, attack)
    tensors, r = c.aggregate(base, "b", 1, _refs(ups), SHARDS, ())
    assert [(f.node, f.kind) for f in r.flags] == [(n, "spot_check") for n in BAD]
    assert not set(BAD) & set(r.contributors) and set(BAD) <= set(r.outliers)
    scores = dict(r.scores)
    assert max(scores[n] for n in BAD) < min(0.0, *(scores[n] for n in NODES[:6])), scores
    again, r2 = c.aggregate(base, "b", 1, list(reversed(_refs(ups))), SHARDS, ())
    assert r2 == r
    assert all(tensors[k].tobytes() == again[k].tobytes() for k in tensors)


@pytest.mark.timeout(120)
def test_a_clean_round_re_runs_nothing_it_need_not_and_flags_no_one() -> None:
    c, base = _job()
    ups = [c.train_task(base, 1, i, node_seed(n)).update for i, n in enumerate(NODES)]
    _, with_shards = c.aggregate(base, "b", 1, _refs(ups), SHARDS, ())
    _, without = c.aggregate(base, "b", 1, _refs(ups))
    assert with_shards.flags == () and with_shards == without


@pytest.mark.timeout(120)
def test_honest_look_alikes_are_re_run_and_keep_their_updates() -> None:
    """Two honest nodes given the same shard send near-duplicates (the same data, their own
    seeds): both are re-run, both recompute, neither is flagged, and their scores are the
    screen's, not a flagged update's."""
    c, base = _job()
    shards = {n: i for i, n in enumerate(NODES)} | {NODES[1]: 0}
    ups = [c.train_task(base, 1, shards[n], node_seed(n)).update for n in NODES]
    pairs = near_duplicate_pairs(np.stack([decode(u) for u in ups]))
    assert (0, 1) in pairs  # canonical order is NODES' order here
    _, r = c.aggregate(base, "b", 1, _refs(ups), shards, ())
    assert r.flags == ()
    _, unchecked = c.aggregate(base, "b", 1, _refs(ups))
    assert r.scores == unchecked.scores and r.contributors == unchecked.contributors


@pytest.mark.timeout(120)
def test_without_re_runs_a_resemblance_is_no_evidence() -> None:
    """spot_check = 0 (external trainers): the crafted pair is not re-run, and not flagged."""
    spec = spec_from_options(max_participants=8, rule="trimmed_mean", f=2, spot_check=0.0)
    c = JobCompute.build("screen", spec)
    base = c.initial_tensors()
    ups = [
        c.train_task(base, 1, i, node_seed(n), "alie" if n in BAD else "").update
        for i, n in enumerate(NODES)
    ]
    _, r = c.aggregate(base, "b", 1, _refs(ups), SHARDS, ())
    assert r.flags == ()
