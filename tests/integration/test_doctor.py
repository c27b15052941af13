"""``p2pnode doctor`` on real daemons: a healthy swarm passes; a wrong PSK, a dead bootstrap
peer, an unreachable committee and a full data dir (a tiny tmpfs, mounted by the test as root)
each fail naming the cause. The command runs as an operator runs it, in its own process."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from p2pnode.consensus.genesis import genesis_validators
from tests.integration.harness import LocalSwarm, mount_tmpfs

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]


def doctor(data_dir: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    proc = subprocess.run(
        [sys.executable, "-m", "p2pnode", "--data-dir", str(data_dir), "--json", "doctor",
         "--timeout", "3", *extra],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )  # fmt: skip
    assert proc.stdout, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def checks(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in report["checks"]}


def failed(report: dict[str, Any]) -> set[str]:
    return {c["name"] for c in report["checks"] if c["status"] == "fail"}


def test_a_healthy_swarm_passes_then_a_dead_bootstrap_and_committee_fail(tmp_path: Path) -> None:
    swarm = LocalSwarm(tmp_path, 4, {"consensus.validators": genesis_validators(tmp_path, 4)})
    try:
        swarm.start()
        swarm.wait_connected(3)
        deadline = time.monotonic() + 30
        while True:  # its peers dial it back a moment after they connect
            with swarm.client(2) as c2:
                if c2.call("status")["reachability"] == "public":
                    break
            assert time.monotonic() < deadline
            time.sleep(0.3)
        code, report = doctor(swarm.node(2).data_dir)
        assert code == 0, report
        assert report["ok"] is True and not failed(report)
        c = checks(report)
        assert c["committee"]["status"] == "ok" and "all 4 validators" in c["committee"]["message"]
        assert c["clock"]["status"] == "ok" and c["bootstrap"]["status"] == "ok"
        assert c["listen"]["status"] == "ok"

        swarm.kill(1)  # every node's bootstrap peer, and a validator
        code, report = doctor(swarm.node(2).data_dir)
        assert code == 1 and failed(report) == {"bootstrap"}, report
        assert swarm.node(1).peer_id in checks(report)["bootstrap"]["message"]
        assert checks(report)["committee"]["status"] == "warn"  # 3 of 4: one more stops it

        swarm.kill(3)
        code, report = doctor(swarm.node(2).data_dir)
        assert code == 1 and "committee" in failed(report), report
        msg = checks(report)["committee"]["message"]
        assert "only 2 of 4 validators are reachable and 3 are needed" in msg
        assert swarm.node(3).peer_id in msg
    finally:
        swarm.stop()


def test_a_node_on_another_private_network_is_told_its_key_differs(tmp_path: Path) -> None:
    key_a, key_b = tmp_path / "a.key", tmp_path / "b.key"
    key_a.write_text(os.urandom(32).hex())
    key_b.write_text(os.urandom(32).hex())
    swarm = LocalSwarm(tmp_path / "net", 3, {"network.connect_timeout": 2.0})
    try:
        swarm.start([1, 2], extra_args=["--psk-file", str(key_a)])
        swarm.wait_connected(1)
        swarm.start([3], bootstrap=swarm.node(1), extra_args=["--psk-file", str(key_b)])
        code, report = doctor(swarm.node(3).data_dir)
        assert code == 1, report
        assert {"psk", "bootstrap", "services"} <= failed(report), report
        assert "same swarm.key" in checks(report)["psk"]["message"]
        code, report = doctor(swarm.node(1).data_dir)  # the swarm itself is fine
        assert "psk" not in failed(report) and "bootstrap" not in failed(report), report
    finally:
        swarm.stop()


def test_a_full_data_dir_fails_naming_the_free_space(tmp_path: Path) -> None:
    swarm = LocalSwarm(tmp_path / "swarm", 2)
    data_dir = swarm.node(1).data_dir
    mount_tmpfs(data_dir, "24m")
    try:
        swarm.start()
        swarm.wait_connected(1)
        with open(data_dir / "filler", "wb") as f, contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * (1 << 20))
        code, report = doctor(data_dir)
        log = (data_dir / "daemon.log").read_text(errors="replace")[-3000:]
        assert code == 1 and failed(report) == {"data_dir"}, (report, log)
        assert "MiB free" in checks(report)["data_dir"]["message"]
    finally:
        swarm.stop()
        subprocess.run(["umount", "-l", str(data_dir)], check=False)
