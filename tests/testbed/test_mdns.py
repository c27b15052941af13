"""Four daemons on one segment (``mdns4``) with ``discovery.mdns`` on and no bootstrap address
find each other: each ends with the other three connected and in its routing table."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from p2pnode_simulations.testbed import Testbed
from p2pnode_simulations.testbed.swarm import TestbedSwarm
from p2pnode_simulations.testbed.topologies import TOPOLOGIES, mdns4
from tests.testbed.helpers import needs_testbed

pytestmark = [needs_testbed, pytest.mark.slow, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def lan(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Testbed, TestbedSwarm]]:
    parent: Path = tmp_path_factory.mktemp("mdns4")
    tb = mdns4("tbm", seed=7)
    with tb:
        swarm = TestbedSwarm(
            tb, parent, list(TOPOLOGIES["mdns4"].daemons), {"discovery.mdns": True}
        )
        try:
            swarm.start(no_bootstrap=True)
            yield tb, swarm
        finally:
            swarm.stop()


def test_four_daemons_find_each_other_with_no_bootstrap(lan: tuple[Testbed, TestbedSwarm]) -> None:
    _, swarm = lan
    ids = {swarm.node(i).peer_id for i in range(1, 5)}
    deadline = time.monotonic() + 60
    for i in range(1, 5):
        while True:
            with swarm.client(i) as c:
                s, peers = c.status(), {p["peer_id"] for p in c.peers()["peers"]}
            if s["routing_table_size"] >= 3 and peers >= ids - {s["peer_id"]}:
                break
            assert time.monotonic() < deadline, f"node-{i}: {s['routing_table_size']} in table"
            time.sleep(0.25)
