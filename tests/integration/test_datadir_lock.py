"""One daemon per data dir, on real daemons: a second start on a live dir changes nothing.

The second ``p2pnode daemon`` is started on node-1's dir while node-1 is fetching a blob
(node-2 serves it under an upload limit, so the fetch lasts seconds): it must fail at once,
naming node-1's pid, and node-1's fetch must complete byte for byte. Opening the blob store
would have swept the chunk files node-1 had written but not recorded yet.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import LocalSwarm, local_swarm

pytestmark = pytest.mark.timeout(180)
MiB = 1 << 20
BLOB_SIZE = 16 * MiB
UPLOAD_RATE = 1.0  # MiB/s: about a dozen seconds for the blob, after the limiter's burst


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("P2PNODE_")}


def _p2pnode(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "p2pnode", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(),
    )


def _pid_of(swarm: LocalSwarm, i: int) -> int:
    with swarm.client(i) as c:
        return int(c.status()["pid"])


@pytest.mark.slow
def test_second_daemon_mid_fetch_fails_and_the_fetch_completes(tmp_path: Path) -> None:
    settings = {"blobs.max_upload_rate": UPLOAD_RATE, "blobs.find_timeout": 10.0}
    with local_swarm(tmp_path / "swarm", 2, settings) as swarm:
        data = os.urandom(BLOB_SIZE)
        src = tmp_path / "blob.bin"
        src.write_bytes(data)
        with swarm.client(2, timeout=60) as c2:
            key = c2.blob_put(path=src)["key"]
        pid1 = _pid_of(swarm, 1)
        result: dict[str, Any] = {}

        def fetch() -> None:
            try:
                with swarm.client(1, timeout=150) as c1:
                    result["stat"] = c1.blob_fetch(key)
            except BaseException as exc:
                result["error"] = exc

        worker = threading.Thread(target=fetch)
        worker.start()
        try:
            with swarm.client(1) as poll:
                deadline = time.monotonic() + 60
                while True:
                    try:
                        if poll.blob_stat(key)["local_chunks"] >= 1:
                            break
                    except Exception:
                        pass  # no manifest yet
                    assert time.monotonic() < deadline, "the fetch never started"
                    time.sleep(0.05)

            data_dir = swarm.node(1).data_dir
            second = _p2pnode("--data-dir", str(data_dir), "daemon")
            assert second.returncode == 1
            assert f"is in use by a running daemon (pid {pid1})" in second.stderr
            assert second.stderr.count("\n") == 1 and "Traceback" not in second.stderr
            assert (data_dir / "blobs" / ".open").exists(), "the running store's marker is kept"
            with swarm.client(1) as poll:
                s = poll.blob_stat(key)
            assert s["local_chunks"] < s["chunks"], "the second start came after the fetch"
        finally:
            worker.join(150)
        assert "error" not in result, result.get("error")
        assert result["stat"]["complete"]

        out = tmp_path / "out.bin"
        with swarm.client(1, timeout=60) as c1:
            c1.blob_get(key, path=out)
        assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(data).digest()
        with swarm.client(1) as c1:
            assert c1.status()["pid"] == pid1  # still the same daemon


def test_swarm_on_a_dir_in_use_says_so_and_changes_nothing(tmp_path: Path) -> None:
    parent = tmp_path / "swarm"
    with local_swarm(parent, 1) as swarm:
        pid1 = _pid_of(swarm, 1)
        node1 = swarm.node(1).data_dir
        before = sorted(p.name for p in node1.iterdir())
        log_size = (node1 / "daemon.log").stat().st_size
        r = _p2pnode("swarm", "--nodes", "2", "--dir", str(parent), timeout=30)
        assert r.returncode == 1
        assert r.stderr.startswith("p2pnode: ")
        assert f"{node1} is in use by a running daemon (pid {pid1})" in r.stderr
        assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
        assert not (parent / "node-2").exists()
        assert sorted(p.name for p in node1.iterdir()) == before
        assert (node1 / "daemon.log").stat().st_size == log_size
