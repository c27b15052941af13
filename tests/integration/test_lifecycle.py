"""The daemon's life as a user sees it: metrics, clean shutdown, and `p2pnode swarm`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from p2pnode.swarm import free_ports
from tests.integration.harness import LocalSwarm

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]  # several daemon processes


def test_metrics_endpoint_and_clean_sigterm(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    s = LocalSwarm(tmp_path, 2)
    try:
        s.start(metrics_base_port=port - 1)  # node-1 serves on `port`
        s.wait_connected(1)
        with s.client(1) as c:
            c.dht_put("m", b"1")
            c.dht_get("m")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            text = r.read().decode()
        assert "p2pnode_connected_peers 1.0" in text
        assert "p2pnode_routing_table_size 1.0" in text
        assert 'p2pnode_dht_operation_seconds_count{op="put",outcome="ok"} 1.0' in text
        assert 'p2pnode_ipc_requests_total{method="dht.put",outcome="ok"} 1.0' in text
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/other", timeout=10)

        node = s.node(1)
        assert node.process is not None
        t = time.monotonic()
        node.process.send_signal(signal.SIGTERM)
        assert node.process.wait(timeout=10) == 0
        assert time.monotonic() - t < 5
        assert not node.socket.exists()
        node.process = None
    finally:
        s.stop()


def test_swarm_command_as_a_new_user_runs_it(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("P2PNODE_")}
    swarm = subprocess.Popen(
        [sys.executable, "-m", "p2pnode", "swarm", "--nodes", "5", "--dir", str(tmp_path / "s")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        lines = []
        assert swarm.stdout is not None
        while not lines or "ready" not in lines[-1]:
            line = swarm.stdout.readline()
            assert line, "swarm exited early: " + "".join(lines)
            lines.append(line)
        assert lines[0].split() == ["NAME", "PEER", "ID", "SOCKET"]
        assert [ln.split()[0] for ln in lines[1:6]] == [f"node-{i}" for i in range(1, 6)]

        def cli(*args: str) -> str:
            r = subprocess.run(
                [sys.executable, "-m", "p2pnode", *args],
                capture_output=True,
                text=True,
                timeout=60,
                env=env,
            )
            assert r.returncode == 0, r.stderr
            return r.stdout

        cli("--data-dir", str(tmp_path / "s" / "node-1"), "dht", "put", "hello", "world")
        assert cli("--data-dir", str(tmp_path / "s" / "node-5"), "dht", "get", "hello") == "world\n"
        pids = [
            int(ln.split()[1])
            for ln in cli("--data-dir", str(tmp_path / "s" / "node-3"), "status").splitlines()
            if ln.startswith("pid")
        ]
        assert pids
    finally:
        swarm.send_signal(signal.SIGTERM)
        swarm.wait(timeout=30)
    assert swarm.returncode == 0
    for i in range(1, 6):
        assert not (tmp_path / "s" / f"node-{i}" / "p2pnode.sock").exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pids[0], 0)
