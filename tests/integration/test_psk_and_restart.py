"""Private networks keep strangers out; a daemon killed with SIGKILL comes back as itself."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from p2pnode import NetworkError, NotFound
from tests.integration.harness import LocalSwarm

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]  # several daemon processes


def test_a_daemon_with_another_psk_cannot_connect_or_read(tmp_path: Path) -> None:
    key_a, key_b = tmp_path / "a.key", tmp_path / "b.key"
    key_a.write_text(os.urandom(32).hex())
    key_b.write_text(os.urandom(32).hex())
    inner = LocalSwarm(tmp_path / "net", 3, {"network.connect_timeout": 3.0})
    try:
        inner.start([1, 2], extra_args=["--psk-file", str(key_a)])
        inner.wait_connected(1)
        with inner.client(1) as c:
            c.dht_put("secret", b"members only")
        # node-3 has a different key and bootstraps to node-1 all the same.
        inner.start([3], bootstrap=inner.node(1), extra_args=["--psk-file", str(key_b)])
        with inner.client(3) as c3:
            with pytest.raises(NetworkError):
                c3.connect(inner.node(1).addr)
            assert c3.peers()["peers"] == []
            with pytest.raises(NotFound):
                c3.dht_get("secret")
            assert c3.status()["private_network"] is True
        with inner.client(2) as c2:
            assert c2.dht_get("secret")["value"] == b"members only"
            assert inner.node(3).peer_id not in {p["peer_id"] for p in c2.peers()["peers"]}
    finally:
        inner.stop()


def test_killed_daemon_keeps_its_id_and_its_records_come_back(tmp_path: Path) -> None:
    # A short backoff cap: the restarted nodes retry each other often while both come up.
    s = LocalSwarm(tmp_path / "net", 2, {"network.bootstrap_max_backoff": 0.5})
    try:
        s.start()
        s.wait_connected(1)
        s.kill(2, signal.SIGTERM)
        with s.client(1) as c1:
            before = c1.status()["peer_id"]
            put = c1.dht_put("durable", b"survives kill -9")
        assert put["replicas"] == 0  # node-2 is down: only node-1 holds it
        s.kill(1, signal.SIGKILL)
        # node-2 comes back first (no bootstrap flag hits a dead node-1); node-1 then
        # reconnects to it from the peers it remembered in SQLite and republishes.
        s.start([2], bootstrap=s.node(2))
        s.start([1], bootstrap=s.node(1))
        with s.client(1) as c1:
            assert c1.status()["peer_id"] == before
            assert c1.dht_get("durable")["value"] == b"survives kill -9"
        s.wait_connected(1)
        with s.client(2) as c2:
            import time

            deadline = time.monotonic() + 20
            while True:
                try:
                    got = c2.dht_get("durable")
                    break
                except NotFound:
                    assert time.monotonic() < deadline, "record was not republished"
                    time.sleep(0.2)
            assert got["value"] == b"survives kill -9"
            assert got["publisher"] == before
    finally:
        s.stop()


@pytest.mark.timeout(120)
def test_a_peer_on_another_private_network_is_named_as_such(tmp_path: Path) -> None:
    # Both ends reach each other's port; each reads the other's bytes as noise. Before, the
    # user got "timed out" and one log line on the other side.
    key_a, key_b = tmp_path / "a.key", tmp_path / "b.key"
    key_a.write_text(os.urandom(32).hex())
    key_b.write_text(os.urandom(32).hex())
    swarm = LocalSwarm(tmp_path / "net", 2, {"network.connect_timeout": 2.0})
    try:
        swarm.start([1], extra_args=["--psk-file", str(key_a)])
        swarm.start([2], bootstrap=swarm.node(1), extra_args=["--psk-file", str(key_b)])
        with swarm.client(2) as c2:
            with pytest.raises(NetworkError) as failed:
                c2.connect(swarm.node(1).addr)
            assert "probably on a different private network" in str(failed.value)
            assert "this node uses a psk_file" in str(failed.value)
            # Its own bootstrap dials failed the same way: status says so.
            seen = c2.status()["handshake_failures"]
        assert seen["count"] >= 1
        assert "different private network" in seen["hint"]
    finally:
        swarm.stop()
