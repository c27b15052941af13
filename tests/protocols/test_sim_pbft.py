"""The deterministic simulator, in CI: a bounded slice of seeds, replay, and the checker itself.

The full sweep is ``python -m p2pnode_simulations.pbft --seeds 0..4999 --n 4,7`` (see docs/pbft.md).
"""

from __future__ import annotations

import pytest

from p2pnode_protocols.pbft import Commit, Committee, Entry, batch_digest
from p2pnode_protocols.pbft.messages import Certificate
from p2pnode_simulations.pbft import main, run_seed
from p2pnode_simulations.sim import PbftChecker, SafetyViolation, World, draw_config
from tests.protocols.pbft_helpers import Cluster, request

pytestmark = pytest.mark.timeout(100)

#: A fixed slice: 60 seeds on each committee size, every fault kind among them.
CI_SEEDS = range(100_000, 100_060)


@pytest.mark.parametrize("n", [4, 7])
def test_seed_slice_is_safe_and_live(n: int) -> None:
    failures = [r for r in (run_seed(s, n) for s in CI_SEEDS) if not r.ok]
    assert not failures, "\n".join(
        f"seed {r.seed} --n {n}: {r.kind}: {r.message}" for r in failures
    )


#: Seeds that once failed (liveness), with the committee size they failed on; each names a fix in
#: docs/pbft.md (view-change timer counting later views, timeout backoff, restart after heal).
REGRESSIONS = [
    (222, None),
    (253, None),
    (267, None),
    (775, None),
    (2349, None),
    (728, 7),
    (1268, 4),
    # Committee switches: a node restarted before its join was unknown to the checker.
    (93, 7),
    (567, 4),
]


@pytest.mark.parametrize(("seed", "n"), REGRESSIONS)
def test_seeds_that_once_failed(seed: int, n: int | None) -> None:
    res = run_seed(seed, n)
    assert res.ok, f"{res.kind}: {res.message}"


def test_slice_covers_every_fault_kind() -> None:
    kinds = set()
    for s in CI_SEEDS:
        cfg = draw_config(s, n=7)
        kinds.update(k for _, k in cfg.byzantine)
        if cfg.crashes:
            kinds.add("crash")
        if cfg.partitions:
            kinds.add("partition")
    assert kinds >= {"silent", "equivocate", "forge", "stale", "crash", "partition"}


def test_a_seed_replays_identically() -> None:
    a, b = run_seed(100_007, 7), run_seed(100_007, 7)
    assert (a.ok, a.kind, a.message, a.stats, a.end_time) == (
        b.ok,
        b.kind,
        b.message,
        b.stats,
        b.end_time,
    )
    assert a.stats["delivered"] > 100


def test_ed25519_and_wire_seed_runs() -> None:
    seed = next(s for s in range(10_000) if _real(s))
    res = World(seed, n=4).run()
    assert res.ok, res.message


def _real(seed: int) -> bool:
    cfg = draw_config(seed, n=4)
    return cfg.signer == "ed25519" and cfg.wire and bool(cfg.byzantine)


def test_checker_catches_two_digests_at_one_seq() -> None:
    c = Cluster(4)
    c.submit(0, request(c.client, 1))
    c.deliver_all()
    checker = PbftChecker(c.committee, c.verifier, c.ids)
    checker.submitted(c.commits[c.ids[0]][0].entry.batch[0])
    good = c.commits[c.ids[0]][0]
    checker.on_commit(c.ids[0], good)
    other = Entry(seq=good.seq, digest=batch_digest(()), batch=())
    bad = Commit(seq=good.seq, entry=other, certificate=good.certificate, results=())
    with pytest.raises(SafetyViolation, match="committed"):
        checker.on_commit(c.ids[1], bad)


def test_checker_catches_unsubmitted_requests_and_bad_certificates() -> None:
    c = Cluster(4)
    c.submit(0, request(c.client, 1))
    c.deliver_all()
    good = c.commits[c.ids[0]][0]
    checker = PbftChecker(c.committee, c.verifier, c.ids)
    with pytest.raises(SafetyViolation, match="nobody submitted"):
        checker.on_commit(c.ids[0], good)
    checker = PbftChecker(c.committee, c.verifier, c.ids)
    thin = Commit(
        seq=good.seq,
        entry=good.entry,
        certificate=Certificate(votes=good.certificate.votes[:1]),
        results=(),
    )
    with pytest.raises(SafetyViolation, match="certificate"):
        checker.on_commit(c.ids[0], thin)
    assert Committee(epoch=0, validators=tuple(c.ids)).quorum == 3


def test_cli_prints_a_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--seeds", "100000..100002", "--n", "4"]) == 0
    out = capsys.readouterr().out
    assert "3 runs" in out and "failures 0" in out


def test_slice_covers_committee_switches_and_evidence() -> None:
    cfgs = [draw_config(s, n=n) for s in CI_SEEDS for n in (4, 7)]
    switched = [c for c in cfgs if c.switches]
    assert len(switched) > 30 and any(c.evidence_txs for c in switched)
    shapes = set()
    for c in switched:
        prev = set(range(c.n))
        for _, members in c.switches:
            shapes.add("disjoint" if not prev & set(members) else "overlapping")
            prev = set(members)
    assert shapes == {"disjoint", "overlapping"}
    res = next(r for r in (run_seed(c.seed, c.n) for c in switched[:10]) if r.stats["switches"])
    assert res.ok, res.message


def test_checker_catches_a_seq_certified_by_the_wrong_epoch_and_a_double_execution() -> None:
    c = Cluster(4)
    c.submit(0, request(c.client, 1))
    c.deliver_all()
    c.submit(0, request(c.client, 2))
    c.deliver_all()
    first, second = c.commits[c.ids[0]][:2]
    checker = PbftChecker(c.committee, c.verifier, c.ids)
    for e in (first, second):
        checker.submitted(e.entry.batch[0])
    # Epoch 1 took over from seq 2: an epoch-0 certificate at seq 2 is out of its range.
    checker.epoch_started(Committee(epoch=1, validators=tuple(c.ids)), 2)
    checker.on_commit(c.ids[0], first)
    with pytest.raises(SafetyViolation, match="outside its range"):
        checker.on_commit(c.ids[0], second)
    # The same request executed ("ok") at two seqs.
    checker = PbftChecker(c.committee, c.verifier, c.ids)
    for e in (first, second):
        checker.submitted(e.entry.batch[0])
    checker.on_commit(c.ids[0], first)
    twice = Commit(
        seq=second.seq, entry=second.entry, certificate=second.certificate, results=first.results
    )
    with pytest.raises(SafetyViolation, match="executed at"):
        checker.on_commit(c.ids[0], twice)
