"""A two-minute slice of a chaos run on the testbed: 8 daemons in namespaces, a committee of
4, a training job while nodes are killed, stopped, partitioned and slowed (the primary among
them); every checker must hold. ``python -m p2pnode_simulations.chaos run --minutes 10`` is the
long run; both take their faults from the seed, so a failure here replays there.

Needs root and the testbed's tools (skipped with the reason otherwise; CI has them).

On 2026-12-03 a CI run of this slice stalled a job at its round 3 for ten minutes after the
faults: proposals refused for censorship, then none at all. Two liveness bugs of the rounds
machine were behind it, both fixed and covered by sans-I/O tests (docs/jobs.md, "A proposal
that comes again" and "A failed task"); the stateful rounds test now checks liveness too. A
run whose jobs do not finish writes ``stuck.json`` (every node's open rounds and aggregations)
beside its summary, and each daemon logs its task tree.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from p2pnode_simulations import testbed
from p2pnode_simulations.chaos import ChaosRun, make_schedule
from p2pnode_simulations.chaos.clusters import TestbedCluster
from p2pnode_simulations.chaos.schedule import Links

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

SEED = int(os.environ.get("P2PNODE_CHAOS_SEED", "3"))


@pytest.mark.skipif(bool(testbed.testbed_unavailable()), reason=str(testbed.testbed_unavailable()))
def test_a_two_minute_chaos_slice_keeps_every_checker_green(tmp_path: Path) -> None:
    schedule = make_schedule(SEED, 120.0, 8, (1, 2, 3, 4), base=Links(0.04, 0.01, 0.01))
    kinds = schedule.counts()
    assert kinds.get("kill") and kinds.get("stop") and kinds.get("partition"), kinds
    cluster = TestbedCluster(tmp_path / "nodes", 4, seed=SEED, base=schedule.base)
    try:
        cluster.start()
        result = ChaosRun(cluster, schedule, tmp_path / "run", rounds=6, finish_timeout=300).run()
    finally:
        cluster.close()
    s = result.summary
    assert result.ok, (result.violations, s)
    assert any("primary" in a for a in result.applied), result.applied
    assert s["rounds_committed"] >= 12 and s["models_fetched"] == s["rounds_committed"], s
    assert s["fresh_job_done_after_faults_s"] is not None, s
