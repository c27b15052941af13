"""``connect`` dials the address it is given and stores it only once it worked (issue 15)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from p2pnode import NetworkError, NotFound
from tests.integration.harness import LocalSwarm

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]  # two daemon processes


def _bogus(peer_id: str) -> str:
    return f"/ip4/127.0.0.1/tcp/1/p2p/{peer_id}"  # nothing listens on port 1


def _known(s: LocalSwarm, i: int, peer_id: str) -> list[str]:
    with s.client(i) as c:
        try:
            return list(c.dht_find_peer(peer_id)["addrs"])
        except NotFound:
            return []


def test_connect_dials_the_given_address_and_keeps_only_working_ones(tmp_path: Path) -> None:
    s = LocalSwarm(tmp_path / "net", 2, {"network.connect_timeout": 3.0})
    try:
        # Each bootstraps to itself: the two start apart.
        s.start([1], bootstrap=s.node(1))
        s.start([2], bootstrap=s.node(2))
        two = s.node(2)
        with s.client(1) as c1:
            # Not connected: a dead address fails, and is not remembered.
            with pytest.raises(NetworkError, match="tcp/1"):
                c1.connect(_bogus(two.peer_id))
            assert not any(
                "/tcp/1/" in a or a.endswith("/tcp/1") for a in _known(s, 1, two.peer_id)
            )
            assert c1.peers()["peers"] == []

            assert c1.connect(two.addr)["peer_id"] == two.peer_id
            # Connected: py-libp2p's connect would return at once; the address is dialled.
            with pytest.raises(NetworkError, match="tcp/1"):
                c1.connect(_bogus(two.peer_id))
            addrs = _known(s, 1, two.peer_id)
            assert addrs and not any(a.endswith("/tcp/1") for a in addrs), addrs
            # A right address of a connected peer still succeeds, and the connection survives.
            assert c1.connect(two.addr)["peer_id"] == two.peer_id
            assert [p["peer_id"] for p in c1.peers()["peers"]] == [two.peer_id]
            # A live port whose key is not node-2's (node-1's own): the handshake tells.
            with pytest.raises(NetworkError):
                c1.connect(f"{s.node(1).listen}/p2p/{two.peer_id}")
            assert not any(s.node(1).listen in a for a in _known(s, 1, two.peer_id))
        with s.client(2) as c2:
            assert s.node(1).peer_id in {p["peer_id"] for p in c2.peers()["peers"]}

        # The CLI says it failed and exits 1.
        env = {**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "p2pnode",
                "--data-dir",
                str(s.node(1).data_dir),
                "connect",
                _bogus(two.peer_id),
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert r.returncode == 1, (r.stdout, r.stderr)
        assert "connected" not in r.stdout
        assert "cannot connect to /ip4/127.0.0.1/tcp/1/p2p/" in r.stderr
    finally:
        s.stop()
