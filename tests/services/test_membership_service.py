"""Five real ``MembershipService``s over in-memory streams, in virtual time.

One member falls silent; every survivor must declare it dead within
``HeartbeatConfig.detection_bound(n)`` of the fault, the bound docs/membership.md promises.
Two faults: a crash (its streams end, which the service takes as a hint and probes at once)
and a hang (connections stay up and bytes vanish: detection runs on timeouts alone, the worst
case the bound is written for). Times are virtual (trio's autojump ``MockClock``), so the
bound is checked exactly, whatever the machine's load.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from p2pnode.config import load_config
from p2pnode.membership.service import PROTOCOL, MembershipService
from p2pnode.membership.settings import heartbeat_config
from p2pnode_protocols.heartbeat import MemberStatus
from tests.support.events import EventRecorder
from tests.support.memory_host import MemoryHost, key_pair_for, open_memory_network

N = 5
#: Virtual seconds the swarm gets to converge (everyone has heard of everyone).
CONVERGE = 30.0
#: Virtual seconds of a healthy swarm before the fault: several probe cycles, no news.
STEADY = 10.0


async def _run(
    svc: MembershipService,
    scope: trio.CancelScope,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    with scope:
        await svc.run(task_status=task_status)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("fault", ["crash", "hang"])
async def test_survivors_declare_a_silent_member_dead_within_the_bound(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, fault: str
) -> None:
    cfg = load_config(tmp_path, env={})
    hb = heartbeat_config(cfg.membership)
    bound = hb.detection_bound(N)
    # No one is declared dead before a suspicion of the minimum length has run out.
    floor, _ = hb.suspicion_bounds(N)
    async with open_memory_network() as net, trio.open_nursery() as nursery:
        hosts: list[MemoryHost] = [net.add_host(key_pair_for(i)) for i in range(N)]
        net.connect_all()
        recorders = [EventRecorder() for _ in hosts]
        services = [
            MembershipService(h, h.key_pair, cfg, r) for h, r in zip(hosts, recorders, strict=True)
        ]
        scopes = [trio.CancelScope() for _ in services]
        for svc, scope in zip(services, scopes, strict=True):
            await nursery.start(_run, svc, scope)

        ids = [h.get_id().to_base58() for h in hosts]
        with trio.fail_after(CONVERGE):
            for i, r in enumerate(recorders):
                for peer in ids[:i] + ids[i + 1 :]:
                    await r.wait_for(event="join", peer_id=peer)
        for svc in services:
            assert [m.status for m in svc.members()] == [MemberStatus.ALIVE] * N
        # At most one long-lived stream per peer and direction carries every packet (one that
        # has had nothing to say yet has none).
        assert net.streams_opened[PROTOCOL] <= N * (N - 1)
        # A healthy swarm on a perfect network raises no suspicion, however long it runs.
        await trio.sleep(STEADY)
        for r in recorders:
            assert {e["event"] for _at, _topic, e in r.events} == {"join"}
        assert all(s.error is None for s in services)

        victim = hosts[0].get_id()
        fault_at = trio.current_time()
        if fault == "crash":
            net.crash(victim)
        else:
            net.hang(victim)
        scopes[0].cancel()
        survivors = recorders[1:]
        dead: list[float] = []
        with trio.fail_after(2 * bound):
            for r in survivors:
                dead.append(await r.wait_for(event="dead", peer_id=victim.to_base58()) - fault_at)
        assert floor <= min(dead), f"declared dead {min(dead):.3f} s after the fault"
        assert max(dead) <= bound, f"declared dead {max(dead):.3f} s after the fault > {bound}"
        # Only the victim died, and nobody stopped on a bug.
        for r in survivors:
            assert {e["peer_id"] for _at, e in r.find(event="dead")} == {victim.to_base58()}
        assert all(s.error is None for s in services[1:])
        nursery.cancel_scope.cancel()
