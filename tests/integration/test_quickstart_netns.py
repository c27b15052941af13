"""docs/quickstart.md on three "machines": three network namespaces, one daemon in each.

The namespaces are joined by veth pairs to a bridge that lives in a fourth namespace (the
switch), so nothing is created in the host's own network namespace; every name carries a
random tag, and everything is deleted in ``finally``. Each machine gets 10.77.0.i/24 and
listens on /ip4/0.0.0.0/tcp/4001 (each namespace has its own ports). Every command is the
guide's, run with ``ip netns exec`` in that machine's namespace: join tokens, a committee of
three, a DHT value and a blob across machines.

Needs root (to make namespaces) and iproute2's ``ip``: skipped otherwise.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

IP = shutil.which("ip")
if IP is None:
    pytest.skip("needs iproute2's `ip` to make network namespaces", allow_module_level=True)
if os.geteuid() != 0:
    pytest.skip("needs root to make network namespaces", allow_module_level=True)

N = 3
PORT = 4001


def _ip(*args: str) -> None:
    assert IP is not None
    subprocess.run([IP, *args], check=True, capture_output=True, timeout=30)


class Lab:
    """Three namespaces on a bridge; ``run`` executes ``p2pnode`` in one of them."""

    def __init__(self, root: Path) -> None:
        tag = secrets.token_hex(3)
        self.switch = f"p2pqs-{tag}-sw"
        self.names = [f"p2pqs-{tag}-{i}" for i in range(1, N + 1)]
        self.root = root
        self.daemons: dict[int, subprocess.Popen[bytes]] = {}
        self.made: list[str] = []

    def up(self) -> None:
        for ns in [self.switch, *self.names]:
            _ip("netns", "add", ns)
            self.made.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        for i, ns in enumerate(self.names, 1):
            # Both ends are made where they belong: nothing appears in the host's namespace.
            _ip("-n", self.switch, "link", "add", f"v{i}", "type", "veth", "peer", "name",
                "eth0", "netns", ns)  # fmt: skip
            _ip("-n", self.switch, "link", "set", f"v{i}", "master", "br0", "up")
            _ip("-n", ns, "addr", "add", f"10.77.0.{i}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")

    def down(self) -> None:
        for i in list(self.daemons):
            self.stop(i)
        for ns in reversed(self.made):  # deleting a namespace deletes its links too
            subprocess.run([str(IP), "netns", "del", ns], capture_output=True, timeout=30)

    def data_dir(self, i: int) -> Path:
        return self.root / f"machine-{i}"

    def _argv(self, i: int, args: tuple[str, ...]) -> list[str]:
        return [str(IP), "netns", "exec", self.names[i - 1], sys.executable, "-m", "p2pnode",
                "--data-dir", str(self.data_dir(i)), *args]  # fmt: skip

    def run(self, i: int, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        """``p2pnode ARGS`` on machine i."""
        r = subprocess.run(self._argv(i, args), capture_output=True, text=True, timeout=90)
        if ok:
            assert r.returncode == 0, f"machine {i}: p2pnode {' '.join(args)}: {r.stderr}"
        return r

    def json(self, i: int, *args: str) -> Any:
        return json.loads(self.run(i, *args, "--json").stdout)

    def start(self, i: int) -> None:
        log = open(self.data_dir(i) / "daemon.log", "ab")  # noqa: SIM115 - the child keeps it
        with log:
            self.daemons[i] = subprocess.Popen(
                self._argv(i, ("daemon",)), stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 60
        while self.run(i, "status", ok=False).returncode != 0:
            assert self.daemons[i].poll() is None, self.log_tail(i)
            assert time.monotonic() < deadline, f"machine {i} not ready: {self.log_tail(i)}"
            time.sleep(0.2)

    def stop(self, i: int) -> None:
        p = self.daemons.pop(i)
        if p.poll() is None:
            os.kill(p.pid, signal.SIGTERM)
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.kill(p.pid, signal.SIGKILL)
                p.wait(timeout=10)

    def log_tail(self, i: int) -> str:
        return (self.data_dir(i) / "daemon.log").read_text(errors="replace")[-1500:]

    def wait_for(self, what: str, check: Any, timeout: float = 60) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            got = check()
            if got:
                return got
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.5)


@contextmanager
def lab(root: Path) -> Iterator[Lab]:
    the_lab = Lab(root)
    try:
        the_lab.up()
        yield the_lab
    finally:
        the_lab.down()


def _alive_others(lab: Lab, i: int) -> int:
    rows = lab.json(i, "members")["members"]
    return sum(1 for m in rows if not m["self"] and m["state"] == "alive")


def test_quickstart_on_three_namespaces(tmp_path: Path) -> None:
    listen = f"/ip4/0.0.0.0/tcp/{PORT}"
    with lab(tmp_path) as m:
        # Machine 1: the first node. It announces its address (on a LAN the interface address
        # is advertised anyway; behind a NAT this is where the public one goes).
        m.run(1, "init", "--listen", listen, "--announce", f"/ip4/10.77.0.1/tcp/{PORT}")
        m.start(1)
        s1 = m.json(1, "status")
        assert s1["listen_addrs"] == [listen]
        assert s1["announce"] == [f"/ip4/10.77.0.1/tcp/{PORT}"]
        assert s1["addrs"][0] == f"/ip4/10.77.0.1/tcp/{PORT}/p2p/{s1['peer_id']}"
        assert not any("0.0.0.0" in a for a in s1["addrs"])
        token = m.run(1, "join-token").stdout.strip()
        assert token.startswith("p2pnode-join-v1:")

        # Machines 2 and 3 join with the token. Machine 3 also announces a "public" address
        # that nobody can reach here (as behind a NAT without hairpinning): advertised first,
        # it must not keep the others from reaching machine 3 on its LAN address.
        public = f"/ip4/198.51.100.3/tcp/{PORT}"
        m.run(2, "init", "--listen", listen, "--join", token)
        m.run(3, "init", "--listen", listen, "--join", token, "--announce", public)
        for i in (2, 3):
            m.start(i)
        peers = m.wait_for("two peers on machine 1", lambda: len(m.json(1, "peers")["peers"]) == 2)
        assert peers
        for p in m.json(1, "peers")["peers"]:
            assert any(a.startswith("/ip4/10.77.0.") for a in p["addrs"]), p
        m.wait_for("every member alive", lambda: _alive_others(m, 1) == 2)
        id3 = m.json(3, "status")["peer_id"]
        found = m.json(1, "dht", "find-peer", id3)["addrs"]
        # (The order of a peer's addresses in our peerstore is not the order it advertised.)
        assert any(a.startswith(public) for a in found), found
        assert any(a.startswith(f"/ip4/10.77.0.3/tcp/{PORT}") for a in found), found
        assert m.json(3, "status")["addrs"][0].startswith(public)

        # The committee: named on machine 1 from its live members, applied everywhere.
        c = m.json(1, "join-token", "--committee", "3")
        assert len(c["validators"]) == 3 and c["validators"][0] == s1["peer_id"]
        for i in (1, 2, 3):
            m.json(i, "join", c["token"])
        for i in (1, 2, 3):
            m.stop(i)
        for i in (1, 2, 3):
            m.start(i)
        for i in (1, 2, 3):
            committee = m.json(i, "status")["committee"]
            assert committee == {"validators": 3, "fingerprint": c["fingerprint"]}
            assert len(m.json(i, "consensus", "status")["committee"]) == 3
        r = m.json(3, "consensus", "submit", "hello", "world")
        assert r["seq"] >= 1

        def committed_on_2() -> bool:
            return m.json(2, "consensus", "status")["log_last"] >= r["seq"]

        m.wait_for("the commit on machine 2", committed_on_2)

        # A DHT value and a blob across machines.
        m.wait_for("machine 1 bootstrapped", lambda: m.json(1, "status")["routing_table_size"])
        m.run(1, "dht", "put", "greeting", "hello from machine 1")
        got = m.wait_for(
            "the value on machine 3",
            lambda: m.run(3, "dht", "get", "greeting", ok=False).stdout.strip(),
        )
        assert got == "hello from machine 1"
        blob = tmp_path / "weights.bin"
        blob.write_bytes(secrets.token_bytes(3 << 20))
        key = m.json(2, "blob", "put", str(blob))["key"]
        out = tmp_path / "fetched.bin"
        m.run(3, "blob", "get", key, "-o", str(out))
        assert out.read_bytes() == blob.read_bytes()
