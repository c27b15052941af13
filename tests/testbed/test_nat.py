"""Two daemons behind two different NATs on the ``nat2`` testbed: reachable through a relay,
then directly after a hole punch, and the switch's counters show which path the bytes took.

Hosts (nodes in this order): ``relay`` and ``pub`` on the public segment, ``a`` behind NAT
``nata``, ``b`` behind NAT ``natb`` (iptables MASQUERADE, new connections from outside
dropped). Every daemon finds out its reachability by dial-back; ``a`` and ``b`` reserve a slot
on ``relay`` (``nat.relays``) and advertise their relayed addresses. Hole punching is manual
(IPC ``nat.punch``) so that the first blob provably crosses the relay before the punch.

What shows the path: the switch's byte counters per port (the relay's own port carries a
relayed transfer twice, in and out; a direct one does not touch it) and the relay daemon's
count of relayed bytes; ``peers`` on ``b`` says ``relayed`` then ``punched``.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from p2pnode.config.edit import set_config_value
from p2pnode_simulations.testbed import Testbed
from p2pnode_simulations.testbed.swarm import TestbedSwarm
from p2pnode_simulations.testbed.topologies import TOPOLOGIES, nat2
from tests.testbed.helpers import needs_testbed

pytestmark = [needs_testbed, pytest.mark.slow, pytest.mark.timeout(240)]
MiB = 1 << 20
RELAY, PUB, A, B = 1, 2, 3, 4
SETTINGS: dict[str, object] = {
    "nat.hole_punch": "manual",
    "nat.confirmations": 2,
    "nat.dialback_timeout": 2.0,
    "relay.max_rate": 0,  # the transfer is measured, not paced
    "blobs.chunk_timeout": 20.0,
    "blobs.find_timeout": 20.0,
    "network.request_timeout": 5.0,
}


@pytest.fixture(scope="module")
def nat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Testbed, TestbedSwarm]]:
    parent = tmp_path_factory.mktemp("nat2")
    tb = nat2("tbn", seed=5)
    with tb:
        swarm = TestbedSwarm(tb, parent, list(TOPOLOGIES["nat2"].daemons), SETTINGS)
        relay = swarm.node(RELAY)
        relay_addr = f"{relay.listen}/p2p/{relay.peer_id}"
        for i in (A, B):
            set_config_value(swarm.node(i).data_dir, "nat.relays", [relay_addr])
        try:
            swarm.start()
            yield tb, swarm
        finally:
            swarm.stop()


def _status(swarm: TestbedSwarm, i: int) -> dict[str, Any]:
    with swarm.client(i) as c:
        return c.status()


def _wait(what: str, check: Any, timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.25)


def _peer_row(swarm: TestbedSwarm, i: int, peer: str) -> dict[str, Any] | None:
    with swarm.client(i) as c:
        rows = c.peers()["peers"]
    return next((r for r in rows if r["peer_id"] == peer), None)


def _port_bytes(tb: Testbed, port: str) -> int:
    p = tb.stats()["ports"][port]
    return int(p["rx_bytes"]) + int(p["tx_bytes"])


def _transfer(swarm: TestbedSwarm, tmp: Path, name: str) -> None:
    """``a`` stores 16 MiB, ``b`` fetches it (finding ``a`` through the DHT)."""
    data = os.urandom(16 * MiB)
    src, dst = tmp / f"{name}.bin", tmp / f"{name}.out"
    src.write_bytes(data)
    with swarm.client(A) as ca:
        key = ca.blob_put(path=src)["key"]
    with swarm.client(B, timeout=120) as cb:
        cb.blob_get(key, path=dst)
    assert hashlib.sha256(dst.read_bytes()).digest() == hashlib.sha256(data).digest()


def test_reachability_public_and_relayed(nat: tuple[Testbed, TestbedSwarm]) -> None:
    _, swarm = nat
    for i in (RELAY, PUB):
        _wait(f"node {i} is public", lambda i=i: _status(swarm, i)["reachability"] == "public")
    relay_id = swarm.node(RELAY).peer_id
    for i in (A, B):
        s = _wait(
            f"node {i} is relayed",
            lambda i=i: (st := _status(swarm, i))["reachability"] == "relayed" and st,
        )
        assert [r["relay"] for r in s["nat"]["reservations"]] == [relay_id]
        # Its advertised addresses lead with the relayed one.
        assert "/p2p-circuit" in s["addrs"][0] and relay_id in s["addrs"][0]
        # Its verdicts: the public peers could not dial it back.
        assert s["nat"]["verdicts"] and not any(v["reached"] for v in s["nat"]["verdicts"])
    assert _status(swarm, RELAY)["nat"]["relay_service"]["reservations"] == 2


def test_a_blob_crosses_the_relay_then_goes_direct_after_a_punch(
    nat: tuple[Testbed, TestbedSwarm], tmp_path: Path
) -> None:
    tb, swarm = nat
    _wait("a is relayed", lambda: _status(swarm, A)["reachability"] == "relayed")
    _wait("b is relayed", lambda: _status(swarm, B)["reachability"] == "relayed")
    a_id, relay_id = swarm.node(A).peer_id, swarm.node(RELAY).peer_id

    # 1. Relayed: b reaches a only through the relay.
    relayed_before = _status(swarm, RELAY)["nat"]["relay_service"]["bytes_relayed"]
    port_before = _port_bytes(tb, "relay")
    _transfer(swarm, tmp_path, "first")
    row = _peer_row(swarm, B, a_id)
    assert row is not None and row["connection"] == "relayed" and row["relay"] == relay_id, row
    relayed = _status(swarm, RELAY)["nat"]["relay_service"]["bytes_relayed"] - relayed_before
    through_relay_port = _port_bytes(tb, "relay") - port_before
    assert relayed >= 16 * MiB, relayed
    # In from nata and out to natb: twice the blob through the relay's port.
    assert through_relay_port >= 32 * MiB, through_relay_port

    # 2. The punch: b asks for it; the NATs let the simultaneous TCP open through.
    with swarm.client(B, timeout=90) as cb:
        punched = cb.call("nat.punch", {"peer_id": a_id})
    assert punched["direct"] and punched["connection"] == "punched", punched
    assert _status(swarm, B)["nat"]["hole_punch"]["successes"] >= 1
    # The relayed connection closes a few seconds after the punch (streams kept for reuse
    # move to the direct one); the reservation stays as the fallback.
    _wait("the relayed connection closed", lambda: _peer_row(swarm, B, a_id)["relay"] is None, 30)
    assert _status(swarm, A)["reachability"] == "relayed"

    # 3. Direct: the second blob does not touch the relay's port (only a little control
    # traffic does), while both NATs' ports carry it.
    relayed_before = _status(swarm, RELAY)["nat"]["relay_service"]["bytes_relayed"]
    port_before = _port_bytes(tb, "relay")
    nats_before = _port_bytes(tb, "nata"), _port_bytes(tb, "natb")
    _transfer(swarm, tmp_path, "second")
    relayed = _status(swarm, RELAY)["nat"]["relay_service"]["bytes_relayed"] - relayed_before
    through_relay_port = _port_bytes(tb, "relay") - port_before
    nats = _port_bytes(tb, "nata") - nats_before[0], _port_bytes(tb, "natb") - nats_before[1]
    assert relayed < 1 * MiB, relayed
    assert through_relay_port < 2 * MiB, through_relay_port
    assert min(nats) >= 16 * MiB, nats
    row = _peer_row(swarm, B, a_id)
    assert row is not None and row["connection"] == "punched" and row["relay"] is None, row
