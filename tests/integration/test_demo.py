"""``p2pnode demo`` end to end, as a user runs it: a subprocess, real daemons.

A short demo (5 rounds, 6 daemons) with ``--json``: its last line is the result (accuracy
beside the centralized baseline, a model key per round that every node agrees on), the PNG is
written and no daemon outlives it. Then SIGINT in the middle of a long job: the demo exits
130 and leaves no daemon behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _daemons_under(path: Path) -> list[int]:
    """Pids of live processes whose command line names ``path`` (the demo's daemons)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if str(path) in cmd and "daemon" in cmd and state != "Z":
            pids.append(int(proc.name))
    return pids


def _demo(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "p2pnode", "demo", "--json", "--dir", str(tmp_path / "swarm")]
    cmd += ["--out", str(tmp_path / "out"), *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.timeout(240)
def test_demo_json_png_and_agreeing_keys(tmp_path: Path) -> None:
    p = _demo(tmp_path, "--rounds", "5", "--nodes", "6", "--validators", "4")
    out, err = p.communicate(timeout=220)
    assert p.returncode == 0, err[-2000:]
    r = json.loads(out.strip().splitlines()[-1])
    assert r["rounds"] == 5 and len(r["model_keys"]) == 5 and len(set(r["model_keys"])) == 5
    assert r["keys_agree"] is True
    assert r["keys_by_node"] == {f"node-{i}": 5 for i in range(1, 7)}
    assert r["final_accuracy"] >= 0.85, r["final_accuracy"]
    assert 0.85 <= r["centralized_accuracy"] <= 1.0
    assert len(r["round_seconds"]) == 5 and all(s > 0 for s in r["round_seconds"])
    png = Path(r["png"])
    assert png == (tmp_path / "out" / "demo.png").absolute()
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert _daemons_under(tmp_path) == []


@pytest.mark.timeout(180)
def test_sigint_mid_job_stops_every_daemon(tmp_path: Path) -> None:
    p = _demo(tmp_path, "--rounds", "200", "--nodes", "5", "--validators", "4")
    try:
        assert p.stderr is not None
        deadline = time.monotonic() + 120
        for line in p.stderr:  # progress lines go to stderr with --json
            if line.startswith("job "):
                break
            assert time.monotonic() < deadline
        time.sleep(2)  # a round or so in
        assert len(_daemons_under(tmp_path)) == 5
        os.kill(p.pid, signal.SIGINT)
        _, err = p.communicate(timeout=60)
        assert p.returncode == 130, err[-2000:]
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    time.sleep(0.2)
    assert _daemons_under(tmp_path) == []
