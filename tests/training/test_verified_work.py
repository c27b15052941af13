"""Verified work in the learning code: a spot-check re-runs a trainer's task bit for bit, a copy
of another trainer's update is flagged (the one that recomputes keeps its update), and flagged
updates stay out of the aggregate. Real training on the digits job (small: one epoch)."""

from __future__ import annotations

import numpy as np
import pytest

from p2pnode.jobs.spec import spec_from_options
from p2pnode.rounds.compute import JobCompute, node_seed
from p2pnode.training.compression import decode
from p2pnode_protocols.rounds import UpdateRef

NODES = tuple(bytes([i + 1]) * 8 for i in range(4))


@pytest.fixture(scope="module")
def job() -> tuple[JobCompute, dict[str, np.ndarray], list[bytes]]:
    spec = spec_from_options(epochs=1, hidden=[16], max_participants=4)
    c = JobCompute.build("vw", spec)
    base = c.initial_tensors()
    ups = [c.train_task(base, 1, i, node_seed(n)).update for i, n in enumerate(NODES)]
    return c, base, ups


def _refs(ups: list[bytes]) -> list[tuple[UpdateRef, bytes]]:
    return [
        (UpdateRef(node=n, round=1, key=f"k{i}", size=1, samples=10, sig=b"-"), u)
        for i, (n, u) in enumerate(zip(NODES, ups, strict=True))
    ]


SHARDS = {n: i for i, n in enumerate(NODES)}


@pytest.mark.timeout(60)
def test_honest_updates_pass_every_spot_check(job) -> None:  # type: ignore[no-untyped-def]
    c, base, ups = job
    _, r = c.aggregate(base, "b", 1, _refs(ups), SHARDS, NODES)
    assert r.flags == () and r.contributors == NODES


@pytest.mark.timeout(60)
def test_an_update_not_computed_fails_its_spot_check_and_stays_out(job) -> None:  # type: ignore[no-untyped-def]
    c, base, ups = job
    rng = np.random.default_rng(1)
    fake = c.compressor.encode(rng.normal(0, 0.01, c.pspec.size).astype(np.float32), rng)
    bad = [ups[0], fake, ups[2], ups[3]]
    _, unchecked = c.aggregate(base, "b", 1, _refs(bad), SHARDS, ())
    assert unchecked.flags == ()  # not picked: nothing re-run, nothing found
    _, r = c.aggregate(base, "b", 1, _refs(bad), SHARDS, (NODES[1],))
    assert [(f.node, f.kind) for f in r.flags] == [(NODES[1], "spot_check")]
    assert NODES[1] not in r.contributors and NODES[1] in r.outliers
    # Its score counts what it does to the loss against it, whichever way that goes.
    assert dict(r.scores)[NODES[1]] == -abs(dict(unchecked.scores)[NODES[1]])
    # The same verdict on a second run: validators agree bit for bit.
    _, again = c.aggregate(base, "b", 1, _refs(bad), SHARDS, (NODES[1],))
    assert again.flags == r.flags


@pytest.mark.timeout(60)
def test_a_copy_is_flagged_and_the_original_keeps_its_update(job) -> None:  # type: ignore[no-untyped-def]
    c, base, ups = job
    # Node 4 copies node 2 with a tiny perturbation (a near-duplicate, not the same bytes).
    d = decode(ups[1], max_size=c.pspec.size)
    rng = np.random.default_rng(2)
    near = c.compressor.encode((d * np.float32(1.00001)).astype(np.float32), rng)
    for copy in (ups[1], near):
        _, r = c.aggregate(base, "b", 1, _refs([ups[0], ups[1], ups[2], copy]), SHARDS, ())
        assert [(f.node, f.kind, f.detail) for f in r.flags] == [(NODES[3], "copy", NODES[1].hex())]
        assert NODES[1] in r.contributors and NODES[3] not in r.contributors
