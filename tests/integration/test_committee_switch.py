"""Committee switches on real daemons: 4 validators hand over to a different 4, then to an
overlapping 4, while transactions are submitted without pause.

Eight daemons; node-1..4 are the genesis committee. The genesis validators vote node-5..8 in (a
disjoint committee); node-5..7 then vote node-3..6 in (an overlapping one). node-2 is killed
before the second switch and restarted after it. Afterwards every node's log is identical, every
transaction is in it exactly once, the retired validators run no replica (they vote no more),
and the restarted node replayed the log across both switches.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest
import trio

from p2pnode import AsyncClient
from p2pnode.consensus.genesis import genesis_validators

from .harness import LocalSwarm, local_swarm

pytestmark = pytest.mark.slow  # eight daemon processes

#: A retired replica answers laggards this long (p2pnode.consensus.service.RETIRE_GRACE), + slack.
GRACE = 12.0


def _status(swarm: LocalSwarm, i: int) -> dict:  # type: ignore[type-arg]
    with swarm.client(i) as c:
        return c.consensus_status()  # type: ignore[no-any-return]


def _wait(swarm: LocalSwarm, nodes: list[int], what: str, ok, timeout: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    for i in nodes:
        while not ok(_status(swarm, i)):
            assert time.monotonic() < deadline, f"node-{i}: {what}: {_status(swarm, i)}"
            time.sleep(0.2)


def _full_log(swarm: LocalSwarm, i: int, upto: int) -> list[dict]:  # type: ignore[type-arg]
    out: list[dict] = []  # type: ignore[type-arg]
    with swarm.client(i) as c:
        while len(out) < upto:
            page = c.consensus_log(len(out) + 1, upto)["entries"]
            assert page, f"node-{i}: log has a hole after {len(out)}"
            out += page
    return out


@pytest.mark.timeout(300)
def test_committee_switches_disjoint_then_overlapping_under_load(tmp_path: Path) -> None:
    ids = genesis_validators(tmp_path, 8)
    settings = {"consensus.validators": ids[:4], "consensus.max_batch": 32}
    with local_swarm(tmp_path, 8, settings) as swarm:
        results: dict[str, dict] = {}  # type: ignore[type-arg]
        heard: list[tuple[int, int]] = []

        async def load(i: int, prefix: str, stop: trio.Event) -> None:
            async with AsyncClient.open(socket_path=swarm.node(i).socket, timeout=120) as c:
                k = 0
                while not stop.is_set():
                    k += 1
                    key = f"{prefix}-{k:05d}"
                    tx = {"type": "kv_put", "key": key, "value": b"x"}
                    results[key] = await c.consensus_submit(tx, timeout=100)
                    await trio.sleep(0.01)

        async def vote(voters: list[int], epoch: int, members: list[int]) -> None:
            async def one(i: int) -> None:
                async with AsyncClient.open(socket_path=swarm.node(i).socket, timeout=120) as c:
                    params = {"epoch": epoch, "validators": [ids[m - 1] for m in members]}
                    await c.call("consensus.vote_committee", params)

            async with trio.open_nursery() as n:
                for i in voters:
                    n.start_soon(one, i)

        async def main() -> None:
            stop = trio.Event()
            async with trio.open_nursery() as n:
                # Clients on a follower that becomes a validator, and on a validator that retires.
                n.start_soon(load, 8, "a", stop)
                n.start_soon(load, 3, "b", stop)
                await trio.sleep(2)
                await vote([1, 2, 3, 4], 1, [5, 6, 7, 8])
                await trio.to_thread.run_sync(
                    _wait, swarm, list(range(1, 9)), "epoch 1", lambda s: s["epoch"] == 1, 60
                )
                st = _status(swarm, 8)
                heard.append((st["epoch"], st["log_last"]))
                await trio.sleep(GRACE)
                for i in (1, 2, 3, 4):  # the old validators stopped their replicas
                    s = _status(swarm, i)
                    assert s["role"] == "follower" and s["replicas"] == [], (i, s)
                for i in (5, 6, 7, 8):
                    assert _status(swarm, i)["role"] == "validator"
                swarm.kill(2)
                await vote([5, 6, 7], 2, [3, 4, 5, 6])
                await trio.to_thread.run_sync(
                    _wait, swarm, [1, 3, 4, 5, 6, 7, 8], "epoch 2", lambda s: s["epoch"] == 2, 60
                )
                await trio.sleep(GRACE)
                stop.set()

        trio.run(main)
        for i in (7, 8):
            s = _status(swarm, i)
            assert s["role"] == "follower" and s["replicas"] == [], (i, s)
        for i in (3, 4, 5, 6):
            s = _status(swarm, i)
            assert s["role"] == "validator" and s["replicas"] == [2], (i, s)
        assert len(results) > 50

        # The killed node comes back and replays across both switches.
        swarm.start([2])
        top = max(r["seq"] for r in results.values())
        _wait(swarm, list(range(1, 9)), f"log at {top}", lambda s: s["log_last"] >= top, 90)
        assert _status(swarm, 2)["epoch"] == 2 and _status(swarm, 2)["role"] == "follower"

        logs = {i: _full_log(swarm, i, top) for i in range(1, 9)}
        shape = [(e["seq"], e["digest"]) for e in logs[3]]
        assert [s for s, _ in shape] == list(range(1, top + 1))
        for i in range(1, 9):
            assert [(e["seq"], e["digest"]) for e in logs[i]] == shape, f"node-{i} differs"
        # Exactly once: every key in one committed request.
        seen = Counter(t["tx"]["key"] for e in logs[3] for t in e["txs"] if t["tx"].get("key"))
        assert set(seen) == set(results) and all(v == 1 for v in seen.values())
        for key, r in results.items():
            assert any(t["tx"].get("key") == key for t in logs[5][r["seq"] - 1]["txs"])
        # The votes are in the log, signed by the voters of the committee in force.
        votes = [t["tx"] for e in logs[3] for t in e["txs"] if t["tx"]["type"] == "set_committee"]
        assert {v["voter"] for v in votes if v["epoch"] == 1} == set(ids[:4])
        assert {v["voter"] for v in votes if v["epoch"] == 2} == set(ids[4:7])
        assert heard and heard[0][0] == 1
