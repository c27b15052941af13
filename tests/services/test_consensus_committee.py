"""Committee switches on real ``ConsensusService``s over in-memory streams, in virtual time.

Eight nodes: four genesis validators and four followers. While a follower submits transactions
without pause, the four validators vote the four followers in (a disjoint committee), then the
new committee votes half of the old one back in (an overlapping one). Every node's log ends the
same, every transaction committed once, the retired replicas are stopped, and a node killed
before a switch and restarted after it replays across the switches from the log.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
import trio.testing

from p2pnode.config import load_config
from p2pnode.consensus.service import RETIRE_GRACE, ConsensusService
from p2pnode.store import Store
from p2pnode_protocols.pbft import Committee, KvPut, decode_tx, encode_tx
from tests.services.test_consensus_service import _run
from tests.support.memory_host import (
    MemoryHost,
    MemoryNetwork,
    key_pair_for,
    open_memory_network,
)

N = 8


@dataclass
class Swarm:
    net: MemoryNetwork
    hosts: list[MemoryHost]
    services: list[ConsensusService]
    scopes: list[trio.CancelScope]
    nursery: trio.Nursery
    tmp: Path
    genesis: list[str]

    def ids(self, idx: list[int]) -> tuple[bytes, ...]:
        return tuple(self.hosts[i].get_id().to_bytes() for i in idx)

    def service(self, i: int) -> ConsensusService:
        data = self.tmp / f"node-{i}"
        data.mkdir(exist_ok=True)
        cfg = load_config(
            data,
            env={},
            overrides={
                "consensus.validators": self.genesis,
                "consensus.request_timeout": 2.0,
                "consensus.status_interval": 0.5,
            },
        )
        h = self.hosts[i]
        return ConsensusService(h, h.key_pair, Store(data / "node.db"), cfg)

    def kill(self, i: int) -> None:
        self.net.crash(self.hosts[i].get_id())
        self.scopes[i].cancel()

    async def restart(self, i: int) -> None:
        pid = self.hosts[i].get_id()
        self.net._crashed.discard(pid)  # the same key comes back on a new host
        self.hosts[i] = self.net.add_host(self.hosts[i].key_pair)
        self.net.connect_all()
        self.services[i] = self.service(i)
        self.scopes[i] = trio.CancelScope()
        await self.nursery.start(_run, self.services[i], self.scopes[i])


@asynccontextmanager
async def swarm(tmp_path: Path) -> AsyncIterator[Swarm]:
    keys = [key_pair_for(i, b"committee") for i in range(N)]
    async with open_memory_network() as net, trio.open_nursery() as nursery:
        hosts = [net.add_host(kp) for kp in keys]
        net.connect_all()
        genesis = [h.get_id().to_base58() for h in hosts[:4]]
        sw = Swarm(net, hosts, [], [], nursery, tmp_path, genesis)
        sw.services = [sw.service(i) for i in range(N)]
        sw.scopes = [trio.CancelScope() for _ in range(N)]
        for svc, scope in zip(sw.services, sw.scopes, strict=True):
            await nursery.start(_run, svc, scope)
        yield sw
        nursery.cancel_scope.cancel()


async def _switch(sw: Swarm, voters: list[int], members: list[int], epoch: int) -> None:
    ids = sw.ids(members)
    async with trio.open_nursery() as n:
        for i in voters:
            n.start_soon(sw.services[i].vote_committee, epoch, ids)
    live = [s for j, s in enumerate(sw.services) if j in members and not sw.scopes[j].cancel_called]
    with trio.fail_after(60):
        while any(s.committee.epoch != epoch for s in live):  # noqa: ASYNC110 (several services)
            await trio.sleep(0.5)


@pytest.mark.timeout(120)
async def test_switches_to_a_disjoint_then_an_overlapping_committee_under_load(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with swarm(tmp_path) as sw:
        heard: list[tuple[int, int]] = []
        sw.services[7].committee_listeners.append(lambda c, at: heard.append((c.epoch, at)))
        results: list[dict[str, object]] = []
        stop = trio.Event()

        async def load(i: int, lane: str) -> None:
            k = 0
            while not stop.is_set():
                k += 1
                op = encode_tx(KvPut(key=f"{lane}{k}", value=b"x"))
                results.append(await sw.services[i].submit(op, timeout=60))
                await trio.sleep(0.1)  # virtual time: one transaction per lane every 100 ms

        async with trio.open_nursery() as traffic:
            traffic.start_soon(load, 7, "a")
            traffic.start_soon(load, 0, "b")
            await trio.sleep(2)
            # Node 6 dies in epoch 0 and comes back after both switches.
            sw.kill(6)
            await _switch(sw, [0, 1, 2, 3], [4, 5, 6, 7], 1)
            await trio.sleep(RETIRE_GRACE + 1)
            # The old validators no longer run a replica: they follow.
            for i in range(4):
                assert sw.services[i].replica is None, i
                assert sw.services[i].status()["role"] == "follower"
            assert sw.services[4].status()["role"] == "validator"
            assert sw.services[4].status()["epoch"] == 1
            await _switch(sw, [4, 5, 7], [2, 3, 4, 5], 2)
            await trio.sleep(RETIRE_GRACE + 1)
            assert [sw.services[i].replica is not None for i in (0, 1, 2, 3, 4, 5, 7)] == [
                False,
                False,
                True,
                True,
                True,
                True,
                False,
            ]
            await sw.restart(6)
            await trio.sleep(3)
            stop.set()
        assert [e for e, _ in heard] == [1, 2]
        await trio.sleep(3)
        tops = {s.log_top for s in sw.services}
        assert len(tops) == 1, [(s.log_top, dict(s.status()["counters"])) for s in sw.services][6]
        logs = {
            tuple((r.seq, r.digest) for r in s.db.read_log(1, s.log_top, s.log_top))
            for s in sw.services
        }
        assert len(logs) == 1
        # Every submitted transaction is in the log exactly once, and executed "ok".
        keys = []
        svc = sw.services[2]
        for r in svc.db.read_log(1, svc.log_top, svc.log_top):
            keys += [
                decode_tx(q.op).key  # type: ignore[attr-defined]
                for q in r.entry.entry.batch
                if isinstance(decode_tx(q.op), KvPut)
            ]
        assert len(keys) == len(set(keys)) == len(results) > 10
        assert {r["status"] for r in results} <= {"ok", "committed"}  # a pulled row: "committed"
        # The restarted node replayed across both switches: it knows the committee in force.
        assert sw.services[6].committee == Committee(epoch=2, validators=sw.ids([2, 3, 4, 5]))
        assert sw.services[6].schedule.epochs[1][0] == heard[0][1]
