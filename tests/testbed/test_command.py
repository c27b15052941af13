"""The one command (``python -m p2pnode_simulations.testbed up nat2``) and a killed run.

``up nat2`` must print how to reach each daemon, the daemons behind the two NATs must join
the public bootstrap, and SIGTERM must leave no namespace behind. A testbed whose process is
SIGKILLed leaves its namespaces, but its switch exits by itself, and ``cleanup`` removes them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from p2pnode import Client
from p2pnode_simulations.testbed import Host, Testbed
from p2pnode_simulations.testbed.testbed import list_netns
from tests.testbed.helpers import needs_testbed

pytestmark = [needs_testbed, pytest.mark.timeout(150)]
CMD = [sys.executable, "-P", "-m", "p2pnode_simulations.testbed"]


def test_list_names_every_topology() -> None:
    out = subprocess.run([*CMD, "list"], capture_output=True, text=True, timeout=30).stdout
    assert [line.split()[0] for line in out.splitlines()] == ["lan6", "nat2", "mdns4", "chaos8"]


def test_up_prints_the_sockets_and_sigterm_cleans_up(tmp_path: Path) -> None:
    p = subprocess.Popen(
        [*CMD, "up", "nat2", "--dir", str(tmp_path), "--set", "log_level=warning"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    try:
        assert p.stdout is not None
        deadline = time.monotonic() + 120
        while not any("daemons ready" in line for line in lines):
            line = p.stdout.readline()
            assert line or p.poll() is None, p.stderr.read() if p.stderr else ""
            lines.append(line)
            assert time.monotonic() < deadline, lines
        table = [line.split() for line in lines[1:5]]
        assert [r[1] for r in table] == ["relay", "pub", "a", "b"]
        prefix = table[0][2].removesuffix("relay")
        assert table[2][3] == "192.168.1.10" and table[3][3] == "192.168.2.10"
        sockets = [Path(r[-1]) for r in table]
        assert all(f"p2pnode --socket {s} status" in "".join(lines) for s in sockets)
        # The NATed daemons dialled out to the relay (nothing can dial in to them).
        deadline = time.monotonic() + 60
        while True:
            with Client(socket_path=sockets[0]) as c:
                peers = c.peers()["peers"]
            if len(peers) >= 3:
                break
            assert time.monotonic() < deadline, peers
            time.sleep(0.5)
        ids = [r[-2].rsplit("/", 1)[1] for r in table]
        assert {peer["peer_id"] for peer in peers} == set(ids[1:])
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=60)
    assert p.returncode == 0
    assert not [ns for ns in list_netns() if ns.startswith(prefix)]


def test_a_killed_run_leaves_no_switch_and_cleanup_removes_its_namespaces() -> None:
    script = (
        "import time\n"
        "from p2pnode_simulations.testbed import Testbed\n"
        "tb = Testbed('tbk'); tb.add_host('a'); tb.up()\n"
        "print(tb.prefix, tb.switch_pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None
        prefix, pid = p.stdout.readline().split()
    finally:
        p.kill()
        p.wait(timeout=30)
    # The switch is `ip netns exec ... python`, the same pid; it notices its parent is gone.
    deadline = time.monotonic() + 15
    while Path(f"/proc/{pid}").exists() and _state(int(pid)) != "Z":
        assert time.monotonic() < deadline, "the switch outlived its testbed"
        time.sleep(0.1)
    left = [ns for ns in list_netns() if ns.startswith(prefix)]
    assert sorted(left) == sorted([prefix + "a", prefix + "sw"])
    sleeper = Host("a", prefix + "a", "").popen(["sleep", "60"])
    try:
        # `ip netns exec` execs the command: the pid becomes sleep's (after ip's own exec).
        deadline = time.monotonic() + 10
        while Path(f"/proc/{sleeper.pid}/comm").read_text().strip() != "sleep":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        gone = Testbed.cleanup_stale("tbk")
        assert set(left) <= set(gone)  # (and any other killed run of this prefix)
        assert sleeper.wait(timeout=10) == -signal.SIGKILL  # what ran in them is gone too
    finally:
        if sleeper.poll() is None:
            os.kill(sleeper.pid, signal.SIGKILL)
            sleeper.wait()
    assert not [ns for ns in list_netns() if ns.startswith(prefix)]


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "gone"
