"""The default settings on ``nat2``: hole punching ``auto``. Two daemons behind different NATs,
joined through the relay by a blob fetch, end up directly connected with no one asking, and a
second blob goes the direct way (tests/testbed/test_nat.py does the same step by step)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from p2pnode.config.edit import set_config_value
from p2pnode_simulations.testbed import Testbed
from p2pnode_simulations.testbed.swarm import TestbedSwarm
from p2pnode_simulations.testbed.topologies import TOPOLOGIES, nat2
from tests.testbed.helpers import needs_testbed
from tests.testbed.nat_helpers import RELAY, A, B, MiB, peer_row, port_bytes, status, transfer, wait

pytestmark = [needs_testbed, pytest.mark.slow, pytest.mark.timeout(240)]
SETTINGS: dict[str, object] = {
    "relay.max_rate": 0,
    "blobs.chunk_timeout": 20.0,
    "blobs.find_timeout": 20.0,
}


@pytest.fixture(scope="module")
def nat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Testbed, TestbedSwarm]]:
    parent = tmp_path_factory.mktemp("nat2auto")
    tb = nat2("tba", seed=6)
    with tb:
        swarm = TestbedSwarm(tb, parent, list(TOPOLOGIES["nat2"].daemons), SETTINGS)
        relay = swarm.node(RELAY)
        for i in (A, B):
            set_config_value(
                swarm.node(i).data_dir, "nat.relays", [f"{relay.listen}/p2p/{relay.peer_id}"]
            )
        try:
            swarm.start()
            yield tb, swarm
        finally:
            swarm.stop()


def test_nated_peers_punch_by_themselves(nat: tuple[Testbed, TestbedSwarm], tmp_path: Path) -> None:
    tb, swarm = nat
    for i in (A, B):
        wait(f"node {i} is relayed", lambda i=i: status(swarm, i)["reachability"] == "relayed")
    a_id = swarm.node(A).peer_id
    transfer(swarm, tmp_path, "first")  # joins b to a, through the relay at first
    row = wait(
        "b is directly connected to a",
        lambda: (r := peer_row(swarm, B, a_id)) and r["connection"] == "punched" and r,
        timeout=60,
    )
    assert row["connection"] == "punched"
    wait("the relayed connection closed", lambda: peer_row(swarm, B, a_id)["relay"] is None, 30)
    before = status(swarm, RELAY)["nat"]["relay_service"]["bytes_relayed"]
    port_before = port_bytes(tb, "relay")
    started = time.monotonic()
    transfer(swarm, tmp_path, "second")
    assert status(swarm, RELAY)["nat"]["relay_service"]["bytes_relayed"] - before < MiB
    assert port_bytes(tb, "relay") - port_before < 2 * MiB
    assert time.monotonic() - started < 60
