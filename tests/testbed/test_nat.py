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

from collections.abc import Iterator
from pathlib import Path

import pytest

from p2pnode.config.edit import set_config_value
from p2pnode_simulations.testbed import Testbed
from p2pnode_simulations.testbed.swarm import TestbedSwarm
from p2pnode_simulations.testbed.topologies import TOPOLOGIES, nat2
from tests.testbed.helpers import needs_testbed
from tests.testbed.nat_helpers import (
    PUB,
    RELAY,
    A,
    B,
    MiB,
    peer_row,
    port_bytes,
    status,
    transfer,
    wait,
)

pytestmark = [needs_testbed, pytest.mark.slow, pytest.mark.timeout(240)]
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


def test_reachability_public_and_relayed(nat: tuple[Testbed, TestbedSwarm]) -> None:
    _, swarm = nat
    for i in (RELAY, PUB):
        wait(f"node {i} is public", lambda i=i: status(swarm, i)["reachability"] == "public")
    relay_id = swarm.node(RELAY).peer_id
    for i in (A, B):
        s = wait(
            f"node {i} is relayed",
            lambda i=i: (st := status(swarm, i))["reachability"] == "relayed" and st,
        )
        assert [r["relay"] for r in s["nat"]["reservations"]] == [relay_id]
        # Its advertised addresses lead with the relayed one.
        assert "/p2p-circuit" in s["addrs"][0] and relay_id in s["addrs"][0]
        # Its verdicts: the public peers could not dial it back.
        assert s["nat"]["verdicts"] and not any(v["reached"] for v in s["nat"]["verdicts"])
    assert status(swarm, RELAY)["nat"]["relay_service"]["reservations"] == 2


def test_a_blob_crosses_the_relay_then_goes_direct_after_a_punch(
    nat: tuple[Testbed, TestbedSwarm], tmp_path: Path
) -> None:
    tb, swarm = nat
    wait("a is relayed", lambda: status(swarm, A)["reachability"] == "relayed")
    wait("b is relayed", lambda: status(swarm, B)["reachability"] == "relayed")
    a_id, relay_id = swarm.node(A).peer_id, swarm.node(RELAY).peer_id

    # 1. Relayed: b reaches a only through the relay.
    relayed_before = status(swarm, RELAY)["nat"]["relay_service"]["bytes_relayed"]
    port_before = port_bytes(tb, "relay")
    transfer(swarm, tmp_path, "first")
    row = peer_row(swarm, B, a_id)
    assert row is not None and row["connection"] == "relayed" and row["relay"] == relay_id, row
    relayed = status(swarm, RELAY)["nat"]["relay_service"]["bytes_relayed"] - relayed_before
    through_relay_port = port_bytes(tb, "relay") - port_before
    assert relayed >= 16 * MiB, relayed
    # In from nata and out to natb: twice the blob through the relay's port.
    assert through_relay_port >= 32 * MiB, through_relay_port

    # 2. The punch: b asks for it; the NATs let the simultaneous TCP open through.
    with swarm.client(B, timeout=90) as cb:
        punched = cb.call("nat.punch", {"peer_id": a_id})
    assert punched["direct"] and punched["connection"] == "punched", punched
    assert status(swarm, B)["nat"]["hole_punch"]["successes"] >= 1
    # The relayed connection closes a few seconds after the punch (streams kept for reuse
    # move to the direct one); the reservation stays as the fallback.
    wait("the relayed connection closed", lambda: peer_row(swarm, B, a_id)["relay"] is None, 30)
    assert status(swarm, A)["reachability"] == "relayed"

    # 3. Direct: the second blob does not touch the relay's port (only a little control
    # traffic does), while both NATs' ports carry it.
    relayed_before = status(swarm, RELAY)["nat"]["relay_service"]["bytes_relayed"]
    port_before = port_bytes(tb, "relay")
    nats_before = port_bytes(tb, "nata"), port_bytes(tb, "natb")
    transfer(swarm, tmp_path, "second")
    relayed = status(swarm, RELAY)["nat"]["relay_service"]["bytes_relayed"] - relayed_before
    through_relay_port = port_bytes(tb, "relay") - port_before
    nats = port_bytes(tb, "nata") - nats_before[0], port_bytes(tb, "natb") - nats_before[1]
    assert relayed < 1 * MiB, relayed
    assert through_relay_port < 2 * MiB, through_relay_port
    assert min(nats) >= 16 * MiB, nats
    row = peer_row(swarm, B, a_id)
    assert row is not None and row["connection"] == "punched" and row["relay"] is None, row
