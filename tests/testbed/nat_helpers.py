"""Helpers of the NAT tests on ``nat2``: node numbers, polling a daemon, the switch's byte
counters, and a 16 MiB blob from ``a`` to ``b``."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any

from p2pnode_simulations.testbed import Testbed
from p2pnode_simulations.testbed.swarm import TestbedSwarm

MiB = 1 << 20
RELAY, PUB, A, B = 1, 2, 3, 4  # nodes in TOPOLOGIES["nat2"].daemons order


def status(swarm: TestbedSwarm, i: int) -> dict[str, Any]:
    with swarm.client(i) as c:
        return c.status()


def wait(what: str, check: Any, timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.25)


def peer_row(swarm: TestbedSwarm, i: int, peer: str) -> dict[str, Any] | None:
    with swarm.client(i) as c:
        rows = c.peers()["peers"]
    return next((r for r in rows if r["peer_id"] == peer), None)


def port_bytes(tb: Testbed, port: str) -> int:
    p = tb.stats()["ports"][port]
    return int(p["rx_bytes"]) + int(p["tx_bytes"])


def transfer(swarm: TestbedSwarm, tmp: Path, name: str) -> None:
    """``a`` stores 16 MiB, ``b`` fetches it (finding ``a`` through the DHT)."""
    data = os.urandom(16 * MiB)
    src, dst = tmp / f"{name}.bin", tmp / f"{name}.out"
    src.write_bytes(data)
    with swarm.client(A) as ca:
        key = ca.blob_put(path=src)["key"]
    with swarm.client(B, timeout=120) as cb:
        cb.blob_get(key, path=dst)
    assert hashlib.sha256(dst.read_bytes()).digest() == hashlib.sha256(data).digest()
