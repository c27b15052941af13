"""A 5-daemon swarm on loopback: records, providers and peer routing across processes."""

from __future__ import annotations

import hashlib
import signal
import time
from pathlib import Path

import pytest

from p2pnode import InvalidParams, NotFound
from tests.integration.harness import LocalSwarm, local_swarm

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]  # several daemon processes


@pytest.fixture(scope="module")
def swarm(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    # replication 2 and alpha 2 keep lookups narrow enough to route around a chosen peer.
    settings = {"dht.replication": 2, "dht.alpha": 2}
    with local_swarm(tmp_path_factory.mktemp("swarm5"), 5, settings) as s:
        yield s


def test_value_put_on_node1_is_read_on_node5(swarm: LocalSwarm) -> None:
    with swarm.client(1) as c1:
        put = c1.dht_put("hello", b"world")
    assert put["key"] == "/p2pnode/kv/hello"
    assert put["replicas"] == 2
    with swarm.client(5) as c5:
        got = c5.dht_get("hello")
    assert got["value"] == b"world"
    assert got["publisher"] == swarm.node(1).peer_id


def test_newer_put_wins_everywhere(swarm: LocalSwarm) -> None:
    with swarm.client(2) as c2:
        c2.dht_put("counter", b"1")
    with swarm.client(3) as c3:
        c3.dht_put("counter", b"2")
    for i in range(1, 6):
        with swarm.client(i) as c:
            assert c.dht_get("counter")["value"] == b"2", f"node-{i} saw a stale version"


def test_missing_key_is_not_found(swarm: LocalSwarm) -> None:
    with swarm.client(4) as c, pytest.raises(NotFound):
        c.dht_get("never-written")


def test_oversized_value_is_refused_with_a_clear_error(swarm: LocalSwarm) -> None:
    with swarm.client(1) as c, pytest.raises(InvalidParams, match="65536"):
        c.dht_put("big", b"x" * (64 * 1024 + 1))
    with swarm.client(1) as c:
        assert c.dht_put("just-fits", b"x" * (64 * 1024))["replicas"] >= 1


def _distance(key: str, peer_id: str) -> int:
    import base58

    k = int.from_bytes(hashlib.sha256(key.encode()).digest(), "big")
    p = int.from_bytes(hashlib.sha256(base58.b58decode(peer_id)).digest(), "big")
    return k ^ p


def test_provider_found_by_a_node_not_connected_to_it(tmp_path: Path) -> None:
    """The provider is gone (SIGKILL) before the seeker looks: nothing can connect to it, and
    the seeker still learns who provides the key, from the peers closest to the key. (With a
    live provider the membership service's probes may connect the two at any moment.)"""
    with local_swarm(tmp_path, 4, {"dht.replication": 2, "dht.alpha": 2}) as small:
        provider, seeker = small.node(1).peer_id, small.node(4).peer_id
        others = [small.node(i).peer_id for i in (2, 3)]
        # A content key for which the provider is the farthest peer, so the seeker's lookup
        # does not wait on the dead provider.
        for n in range(10_000):
            name = f"bafy-test-{n}"
            ranked = sorted(
                [provider, seeker, *others], key=lambda p: _distance("/p2pnode/prov/" + name, p)
            )
            if provider == ranked[-1] and seeker not in ranked[:2]:
                break
        with small.client(1) as c1:
            assert c1.dht_provide(name)["replicas"] == 2
        small.kill(1, signal.SIGKILL)
        with small.client(4) as c4:
            deadline = time.monotonic() + 15
            while provider in {p["peer_id"] for p in c4.peers()["peers"]}:
                assert time.monotonic() < deadline, "the dead provider still looks connected"
                time.sleep(0.05)
            found = c4.dht_find_providers(name)["providers"]
            assert [p["peer_id"] for p in found] == [provider]
            assert any(str(small.node(1).listen) in a for a in found[0]["addrs"])


def test_find_peer(swarm: LocalSwarm) -> None:
    target = swarm.node(3)
    with swarm.client(5) as c5:
        found = c5.dht_find_peer(target.peer_id)
    assert found["peer_id"] == target.peer_id
    assert any(a.startswith(target.listen) for a in found["addrs"])


def test_status_reports_a_dialable_identity(swarm: LocalSwarm) -> None:
    with swarm.client(2) as c:
        s = c.status()
    assert s["peer_id"] == swarm.node(2).peer_id
    assert s["addrs"] == [swarm.node(2).addr]
    assert s["routing_table_size"] == 4
    assert s["pid"] == swarm.node(2).process.pid  # type: ignore[union-attr]


def test_files_are_private(swarm: LocalSwarm) -> None:
    node: Path = swarm.node(1).data_dir
    assert (node / "identity.key").stat().st_mode & 0o777 == 0o600
    assert (node / "p2pnode.sock").stat().st_mode & 0o777 == 0o600
