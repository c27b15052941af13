"""Properties of the membership machine, in the simulator (``p2pnode_simulations.heartbeat``) and
alone.

* a live member that keeps answering is never declared dead;
* a silent (crashed) member is declared dead by every survivor within the configured bound;
* a refutation with a higher incarnation always wins, whatever the order of arrival.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pnode_protocols.heartbeat import Dead, MemberStatus, Suspect
from p2pnode_simulations.heartbeat import HeartbeatWorld, Scenario, daemon_config
from tests.protocols.test_heartbeat import accuse, alive, gossip, machine

pytestmark = pytest.mark.timeout(110)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(4, 24), jitter=st.sampled_from([0.001, 0.02]))
def test_live_members_are_never_declared_dead_and_crashes_always_are(
    seed: int, n: int, jitter: float
) -> None:
    cfg = daemon_config(probe_interval=1.0, probe_timeout=0.4)
    sc = Scenario(
        seed=seed,
        n=n,
        loss=0.0,
        delay_mean=jitter,
        crashes=2,
        recoveries=1,
        recover_after=cfg.detection_bound(n) + 1,
        state_changes=1,
        duration=20.0,
        converge_budget=cfg.detection_bound(n) + 5,
        config=cfg,
    )
    r = HeartbeatWorld(sc).run()
    assert r.false_deaths == 0, r.message
    bound = cfg.detection_bound(n)
    assert len(r.detection_all) == 2, r.message
    assert max(r.detection_all) <= bound, (r.detection_all, bound)
    assert r.converge_time is not None, r.message


def test_a_seed_replays_identically() -> None:
    sc = Scenario(
        seed=3,
        n=60,
        loss=0.05,
        duration=15.0,
        partition_size=3,
        partition_at=8.0,
        partition_for=3.0,
        wire=True,
    )
    a, b = HeartbeatWorld(sc).run(), HeartbeatWorld(sc).run()
    assert (a.detection, a.dissemination_99, a.events, a.stats) == (
        b.detection,
        b.dissemination_99,
        b.events,
        b.stats,
    )
    assert a.ok, a.message


_updates = st.lists(
    st.tuples(st.sampled_from(["alive", "suspect", "dead"]), st.integers(1, 6)),
    min_size=1,
    max_size=12,
)


@settings(max_examples=200, deadline=None)
@given(updates=_updates, order_seed=st.integers(0, 2**32))
def test_higher_incarnation_always_wins_in_any_order(updates, order_seed) -> None:  # type: ignore[no-untyped-def]
    x, y = b"x" * 38, b"y" * 38
    records = []
    for kind, inc in updates:
        if kind == "alive":
            records.append(alive(x, inc))
        else:
            records.append(accuse(Suspect if kind == "suspect" else Dead, x, inc, y))
    random.Random(order_seed).shuffle(records)
    m = machine()
    m.handle(gossip(y, alive(y, 1)), 0.0)
    m.handle(gossip(x, alive(x, 0)), 0.0)
    for i, r in enumerate(records):
        m.handle(gossip(y, r), 100.0 * (i + 1))  # far apart: no rate limit, no timer
    alive_max = max([inc for k, inc in updates if k == "alive"], default=0)
    accused_max = max([inc for k, inc in updates if k != "alive"], default=-1)
    got = m.table.get(x)
    assert got is not None
    if alive_max > accused_max:
        # The refutation (a newer alive record) wins over every accusation.
        assert (got.status, got.incarnation) == (MemberStatus.ALIVE, alive_max)
    else:
        # memberlist's rules are order-dependent here (a dead member ignores suspicions), but
        # nothing invents an incarnation nobody signed.
        assert got.incarnation <= max(alive_max, accused_max)
