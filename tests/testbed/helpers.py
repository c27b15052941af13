"""Helpers of the testbed tests: the skip reason and running a probe inside a host."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from p2pnode_simulations.testbed import Host, testbed_unavailable

REASON = testbed_unavailable()
needs_testbed = pytest.mark.skipif(REASON is not None, reason=REASON or "")

PROBE = [sys.executable, "-P", "-m", "p2pnode_simulations.testbed.probe"]


def probe(host: Host, *args: str, timeout: float = 60) -> dict[str, Any]:
    """Run a probe command in ``host`` and return its JSON answer."""
    r = host.run([*PROBE, *args], timeout=timeout)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def probe_bg(host: Host, *args: str) -> subprocess.Popen[str]:
    """Start a probe (a server) in ``host``; read its answer with :func:`answer`."""
    return host.popen([*PROBE, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def answer(p: subprocess.Popen[str], timeout: float = 60) -> dict[str, Any]:
    try:
        out, err = p.communicate(timeout=timeout)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0, err
    return json.loads(out)


def wait_bound(host: Host, port: int, proto: str = "udp", timeout: float = 20) -> None:
    """Until something in ``host`` has bound ``port`` (read from its /proc/net table)."""
    import time

    deadline = time.monotonic() + timeout
    want = f":{port:04X} "
    while True:
        table = host.run(["cat", f"/proc/net/{proto}"]).stdout
        if any(want in line.split(None, 2)[1] + " " for line in table.splitlines()[1:]):
            return
        assert time.monotonic() < deadline, f"nothing bound {proto} port {port} in {host.name}"
        time.sleep(0.05)
