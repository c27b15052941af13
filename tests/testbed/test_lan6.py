"""Six daemons on the ``lan6`` testbed (40 ms ± 10 ms, 1% loss on every link): the DHT, blob
and consensus scenarios that tests/integration runs on loopback, across real (emulated) links.

One swarm for the module: h1..h6, a committee of four (node-1..node-4, node-1 the first
primary), nodes 5 and 6 followers. Timeouts are sized for 80 ms round trips with loss. The
last test reads the switch's counters to show the frames really crossed the shaped links.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from p2pnode import AsyncClient, NotFound
from p2pnode.consensus.genesis import genesis_validators
from p2pnode_simulations.testbed import Testbed
from p2pnode_simulations.testbed.swarm import TestbedSwarm
from p2pnode_simulations.testbed.topologies import TOPOLOGIES, lan6
from tests.testbed.helpers import needs_testbed

pytestmark = [needs_testbed, pytest.mark.slow, pytest.mark.timeout(180)]
MiB = 1 << 20
SETTINGS: dict[str, object] = {
    # Lookups narrow enough to be quick, wide enough to survive a lost packet.
    "dht.replication": 3,
    "blobs.chunk_timeout": 10.0,
    "blobs.find_timeout": 10.0,
    "network.request_timeout": 5.0,
    "consensus.max_batch": 16,
}


@pytest.fixture(scope="module")
def lan(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Testbed, TestbedSwarm]]:
    parent = tmp_path_factory.mktemp("lan6")
    ids = genesis_validators(parent, 4)
    tb = lan6("tbl", seed=3)
    with tb:
        swarm = TestbedSwarm(
            tb, parent, list(TOPOLOGIES["lan6"].daemons), {**SETTINGS, "consensus.validators": ids}
        )
        try:
            swarm.start()
            swarm.wait_connected(5, timeout=60)
            yield tb, swarm
        finally:
            swarm.stop()


def test_every_daemon_listens_on_its_hosts_address(lan: tuple[Testbed, TestbedSwarm]) -> None:
    tb, swarm = lan
    for i in range(1, 7):
        with swarm.client(i) as c:
            s = c.status()
        assert s["addrs"] == [f"/ip4/{tb.hosts[f'h{i}'].ip}/tcp/4001/p2p/{swarm.node(i).peer_id}"]
        assert s["pid"] == swarm.pid(i)


def test_a_value_put_on_one_host_is_read_on_another(lan: tuple[Testbed, TestbedSwarm]) -> None:
    _, swarm = lan
    with swarm.client(1) as c1:
        put = c1.dht_put("hello", b"world")
    assert put["replicas"] >= 2
    with swarm.client(6) as c6:
        got = c6.dht_get("hello")
    assert got["value"] == b"world" and got["publisher"] == swarm.node(1).peer_id


def test_the_newer_put_wins_everywhere(lan: tuple[Testbed, TestbedSwarm]) -> None:
    _, swarm = lan
    with swarm.client(2) as c2:
        c2.dht_put("counter", b"1")
    with swarm.client(3) as c3:
        c3.dht_put("counter", b"2")
    for i in range(1, 7):
        with swarm.client(i) as c:
            assert c.dht_get("counter")["value"] == b"2", f"node-{i} saw a stale version"


def test_peers_and_missing_keys(lan: tuple[Testbed, TestbedSwarm]) -> None:
    tb, swarm = lan
    with swarm.client(5) as c5:
        found = c5.dht_find_peer(swarm.node(3).peer_id)
        assert any(a.startswith(f"/ip4/{tb.hosts['h3'].ip}/tcp/4001") for a in found["addrs"])
        with pytest.raises(NotFound):
            c5.dht_get("never-written")


def _random_file(path: Path, size: int) -> str:
    data = os.urandom(size)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def test_a_blob_is_fetched_by_another_host(
    lan: tuple[Testbed, TestbedSwarm], tmp_path: Path
) -> None:
    _, swarm = lan
    want = _random_file(tmp_path / "m.bin", 2 * MiB)
    with swarm.client(2, timeout=60) as c:
        put = c.blob_put(path=tmp_path / "m.bin")
    assert put["complete"] and put["announced"] >= 1
    with swarm.client(6, timeout=120) as c:
        got = c.blob_get(put["key"], path=tmp_path / "out.bin")
    assert got["complete"]
    assert hashlib.sha256((tmp_path / "out.bin").read_bytes()).hexdigest() == want


def _submit_all(swarm: TestbedSwarm, keys: list[str], via: tuple[int, ...]) -> dict[str, dict]:
    results: dict[str, dict] = {}

    async def node(i: int, mine: list[str]) -> None:
        async with AsyncClient.open(socket_path=swarm.node(i).socket, timeout=90) as c:
            queue = list(mine)

            async def worker() -> None:
                while queue:
                    key = queue.pop()
                    tx = {"type": "kv_put", "key": key, "value": b"x"}
                    results[key] = await c.consensus_submit(tx)

            async with trio.open_nursery() as n:
                for _ in range(4):
                    n.start_soon(worker)

    async def main() -> None:
        async with trio.open_nursery() as n:
            for j, i in enumerate(via):
                n.start_soon(node, i, keys[j :: len(via)])

    trio.run(main)
    return results


def _wait_log(swarm: TestbedSwarm, nodes: range, target: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for i in nodes:
        while True:
            with swarm.client(i) as c:
                last = c.consensus_status()["log_last"]
            if last >= target:
                break
            assert time.monotonic() < deadline, f"node-{i} stuck at {last} < {target}"
            time.sleep(0.2)


def _log(swarm: TestbedSwarm, i: int, upto: int) -> list[tuple[int, str]]:
    out: list[dict] = []
    with swarm.client(i) as c:
        while len(out) < upto:
            page = c.consensus_log(len(out) + 1, upto)["entries"]
            assert page, f"node-{i}: the log has a hole after {len(out)}"
            out += page
    return [(e["seq"], e["digest"]) for e in out]


def test_the_committee_commits_and_survives_its_primarys_death(
    lan: tuple[Testbed, TestbedSwarm],
) -> None:
    _, swarm = lan
    with swarm.client(2) as c:
        st = c.consensus_status()
    assert st["role"] == "validator" and st["view"] == 0
    primary = st["primary"]
    assert primary == swarm.node(1).peer_id
    first = _submit_all(swarm, [f"a-{k:03d}" for k in range(60)], (2, 3, 4, 5, 6))
    assert len(first) == 60
    assert all(len(r["certificate"]["votes"]) >= 3 for r in first.values())

    swarm.kill(1)
    second = _submit_all(swarm, [f"b-{k:03d}" for k in range(20)], (2, 3, 5, 6))
    assert len(second) == 20
    with swarm.client(2) as c:
        st = c.consensus_status()
    assert st["view"] >= 1 and st["primary"] != primary, st

    top = max(r["seq"] for r in (*first.values(), *second.values()))
    swarm.restart(1)
    _wait_log(swarm, range(1, 7), top, timeout=60)
    shape = _log(swarm, 2, top)
    assert [s for s, _ in shape] == list(range(1, top + 1))
    for i in (1, 3, 4, 5, 6):
        assert _log(swarm, i, top) == shape, f"node-{i}'s log differs"


def test_a_blob_is_fetched_from_its_copies_when_the_first_holder_is_cut_off(
    lan: tuple[Testbed, TestbedSwarm], tmp_path: Path
) -> None:
    """h3 puts a blob, h4 and h5 fetch copies, then h3 is partitioned away from everyone:
    h1 still gets the whole blob, from the copies (its first holder serves nothing)."""
    tb, swarm = lan
    want = _random_file(tmp_path / "t.bin", 8 * MiB)
    with swarm.client(3, timeout=60) as c:
        key = c.blob_put(path=tmp_path / "t.bin")["key"]
    for i in (4, 5):
        with swarm.client(i, timeout=120) as c:
            c.blob_fetch(key)

    def served(i: int) -> int:
        with swarm.client(i) as c:
            return int(c.status()["blobs"]["served_chunks"])

    before = {i: served(i) for i in (3, 4, 5)}
    tb.partition({"h3"})
    try:
        with swarm.client(1, timeout=120) as c:
            c.blob_get(key, path=tmp_path / "t.out")
    finally:
        tb.heal()
    assert hashlib.sha256((tmp_path / "t.out").read_bytes()).hexdigest() == want
    after = {i: served(i) - before[i] for i in (3, 4, 5)}
    assert after[3] == 0 and after[4] + after[5] >= 8, after
    assert tb.stats()["pairs"]["h1>h3"]["dropped_partition"] > 0


def test_the_traffic_crossed_shaped_lossy_links(lan: tuple[Testbed, TestbedSwarm]) -> None:
    tb, _ = lan
    pairs = tb.stats()["pairs"]
    sent = sum(p["sent"] for p in pairs.values())
    lost = sum(p["dropped_loss"] for p in pairs.values())
    assert sent > 10_000
    assert lost / sent == pytest.approx(0.01, abs=0.004)
    # Every host talked to every other one through the switch.
    assert all(f"h{a}>h{b}" in pairs for a in range(1, 7) for b in range(1, 7) if a != b)
