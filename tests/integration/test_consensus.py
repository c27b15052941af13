"""PBFT on real daemons: a committee of 4 plus 2 followers, the primary SIGKILLed mid-load.

Clients submit through nodes 2..6 (a client of the killed node loses its connection, and a
retry there would be a new transaction). Checks: a view change happens, every transaction
commits exactly once, all 6 logs are identical (seq and digest), and the killed primary,
restarted, catches up (state transfer plus the log pull for entries below its checkpoint).
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest
import trio

from p2pnode import AsyncClient, InvalidParams, NetworkError, NotFound
from p2pnode.consensus.genesis import genesis_validators

from .harness import local_swarm

pytestmark = pytest.mark.slow  # several daemon processes (one after another in the second test)

N_TX = 1000
CLIENT_NODES = (2, 3, 4, 5, 6)
CONCURRENCY = 8  # in-flight submits per client node
KILL_AFTER = 300


def _full_log(client, upto: int) -> list[dict]:  # type: ignore[no-untyped-def]
    out: list[dict] = []
    while len(out) < upto:
        page = client.consensus_log(len(out) + 1, upto)["entries"]
        assert page, f"log has a hole after {len(out)}"
        out += page
    return out


def _wait_log(swarm, nodes, target: int, timeout: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    for i in nodes:
        while True:
            with swarm.client(i) as c:
                st = c.consensus_status()
            if st["log_last"] >= target:
                break
            assert time.monotonic() < deadline, f"node-{i} stuck at {st['log_last']} < {target}"
            time.sleep(0.1)


@pytest.mark.timeout(180)
def test_committee_survives_primary_kill(tmp_path: Path) -> None:
    ids = genesis_validators(tmp_path, 4)
    settings = {"consensus.validators": ids, "consensus.max_batch": 32}
    with local_swarm(tmp_path, 6, settings) as swarm:
        with swarm.client(2) as c:
            st = c.consensus_status()
        assert st["role"] == "validator" and st["primary"] == ids[0] and st["view"] == 0
        with swarm.client(5) as c:
            assert c.consensus_status()["role"] == "follower"

        results: dict[str, dict] = {}
        committed = 0
        killed_at: list[float] = []
        reached = trio.Event()

        async def client_node(i: int, keys: list[str]) -> None:
            nonlocal committed
            async with AsyncClient.open(socket_path=swarm.node(i).socket, timeout=90) as c:
                queue = list(keys)

                async def worker() -> None:
                    nonlocal committed
                    while queue:
                        key = queue.pop()
                        r = await c.consensus_submit({"type": "kv_put", "key": key, "value": b"x"})
                        results[key] = r
                        committed += 1
                        if committed >= KILL_AFTER:
                            reached.set()

                async with trio.open_nursery() as n:
                    for _ in range(CONCURRENCY):
                        n.start_soon(worker)

        async def killer() -> None:
            await reached.wait()
            swarm.kill(1)
            killed_at.append(time.monotonic())

        async def main() -> None:
            keys = [f"tx-{k:04d}" for k in range(N_TX)]
            async with trio.open_nursery() as n:
                n.start_soon(killer)
                for j, i in enumerate(CLIENT_NODES):
                    n.start_soon(client_node, i, keys[j :: len(CLIENT_NODES)])

        t0 = time.monotonic()
        trio.run(main)
        took = time.monotonic() - t0
        assert len(results) == N_TX and killed_at
        top = max(r["seq"] for r in results.values())
        print(f"{N_TX} tx committed in {took:.1f} s, log length {top}")

        with swarm.client(2) as c:
            st = c.consensus_status()
        assert st["view"] >= 1 and st["primary"] != ids[0], st

        # The killed primary comes back and catches up.
        swarm.start([1])
        _wait_log(swarm, range(1, 7), top, timeout=60)
        with swarm.client(1) as c:
            assert c.consensus_status()["view"] == st["view"]

        logs = {}
        for i in range(1, 7):
            with swarm.client(i) as c:
                logs[i] = _full_log(c, top)
        shape = [(e["seq"], e["digest"]) for e in logs[2]]
        assert shape == [(s, s_d) for s, s_d in shape] and [s for s, _ in shape] == list(
            range(1, top + 1)
        )
        for i in range(1, 7):
            assert [(e["seq"], e["digest"]) for e in logs[i]] == shape, f"node-{i} differs"

        # Exactly once: each key in one committed request, executed once ("ok").
        seen = Counter(t["tx"]["key"] for e in logs[2] for t in e["txs"] if t["tx"].get("key"))
        assert set(seen) == set(results) and all(v == 1 for v in seen.values())
        executed = [t for e in logs[2] for t in e["txs"] if t.get("status") == "ok"]
        assert len(executed) == N_TX
        for key, r in results.items():
            entry = logs[5][r["seq"] - 1]
            assert any(t["tx"].get("key") == key for t in entry["txs"])
            assert len(r["certificate"]["votes"]) >= 3


def test_consensus_off_bad_params_and_unreachable_committee(tmp_path: Path) -> None:
    with local_swarm(tmp_path / "off", 1) as swarm, swarm.client(1) as c, pytest.raises(NotFound):
        c.consensus_status()
    # A follower of a committee that is not running: refuses bad input, times out honestly.
    ids = genesis_validators(tmp_path / "elsewhere", 4)
    settings = {"consensus.validators": ids}
    with local_swarm(tmp_path / "f", 1, settings) as swarm, swarm.client(1) as c:
        assert c.consensus_status()["role"] == "follower"
        with pytest.raises(InvalidParams):
            c.consensus_submit({"type": "nope"})
        with pytest.raises(InvalidParams):
            c.consensus_submit(op=b"\xff\x00")
        with pytest.raises(InvalidParams):
            c.consensus_log(0)
        with pytest.raises(NetworkError):
            c.consensus_submit({"type": "kv_put", "key": "a", "value": b"1"}, timeout=0.5)
        assert c.consensus_log(1)["entries"] == []


@pytest.mark.timeout(120)
def test_a_dead_primary_is_replaced_before_anyone_submits(tmp_path: Path) -> None:
    # Membership declares the SIGKILLed primary dead (about a second on loopback) and the
    # backups change view on that alone: nobody submits, so no request can time out.
    ids = genesis_validators(tmp_path, 4)
    with local_swarm(tmp_path, 4, {"consensus.validators": ids}) as swarm:
        swarm.wait_connected(3)
        # Membership must know the primary before it can declare it dead (a routing table
        # entry comes first; on a loaded machine the SWIM join can come a moment later).
        for i in (2, 3, 4):
            deadline = time.monotonic() + 30
            while True:
                with swarm.client(i) as c:
                    alive = {m["peer_id"] for m in c.members()["members"] if m["state"] == "alive"}
                if ids[0] in alive:
                    break
                assert time.monotonic() < deadline, f"node-{i} never heard of the primary"
                time.sleep(0.05)
        with swarm.client(2) as c:
            assert c.consensus_status()["view"] == 0
        killed = time.monotonic()
        swarm.kill(1)
        deadline = killed + 30
        for i in (2, 3, 4):
            while True:
                with swarm.client(i) as c:
                    st = c.consensus_status()
                # On a loaded machine the view may change (by its own timer) a moment before
                # membership's verdict lands: wait for both.
                if st["view"] >= 1 and not st["in_view_change"] and st["dead_members"]:
                    break
                assert time.monotonic() < deadline, f"node-{i} still in view {st['view']}"
                time.sleep(0.1)
            assert st["primary"] != ids[0]
            assert st["dead_members"] == [ids[0]]
        # The first submission after the crash commits in the view already entered: it did
        # not have to time out and start one.
        with swarm.client(3) as c:
            r = c.consensus_submit({"type": "kv_put", "key": "after", "value": b"1"})
            assert r["certificate"]["view"] == st["view"]
            assert c.consensus_status()["view"] == st["view"]
