"""A machine that raises inside a real daemon stops its own service only.

The daemon runs in this process (a real py-libp2p host on 127.0.0.1, a real SQLite file, the
real IPC socket) so the test can hand a machine an event it has no handler for: the machine
raises ``LocalProtocolError``, as it would on a bug. The driver's error policy must stop that
service alone; the daemon keeps serving DHT and IPC, and ``status`` names the stopped service.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from p2pnode import AsyncClient
from p2pnode.config import load_config
from p2pnode.identity import create_identity, load_identity_file, peer_id_of
from p2pnode.node import Node
from p2pnode_protocols.machine import Event

pytestmark = pytest.mark.timeout(60)


@dataclass(frozen=True, slots=True, kw_only=True)
class NoMachineKnowsThis(Event):
    """An input no machine has a handler for: handling it raises, like a bug would."""


def one_node(tmp_path: Path, *, validator: bool) -> Node:
    key = tmp_path / "identity.key"
    create_identity(key)
    overrides: dict[str, object] = {"listen": ["/ip4/127.0.0.1/tcp/0"]}
    if validator:
        # A committee of one (f = 0): this node is its own primary and commits alone.
        overrides["consensus.validators"] = [peer_id_of(load_identity_file(key)).to_base58()]
    return Node(load_config(tmp_path, env={}, overrides=overrides))


def rows(status: dict[str, object]) -> dict[str, dict[str, object]]:
    return {r["name"]: r for r in status["services"]}  # type: ignore[attr-defined, index]


async def test_a_machine_that_raises_stops_only_its_service(tmp_path: Path) -> None:
    node = one_node(tmp_path, validator=True)
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        services = node.services
        assert services.consensus is not None
        async with AsyncClient.open(socket_path=node.cfg.socket_path, timeout=10) as c:
            before = rows(await c.status())
            assert {n: r["state"] for n, r in before.items()} == {
                "dht": "running",
                "blobs": "running",
                "membership": "running",
                "consensus": "running",
                "rounds": "running",
                "collectives": "running",
            }
            first = await c.consensus_submit({"type": "kv_put", "key": "before", "value": b"1"})

            assert services.membership.driver.submit(NoMachineKnowsThis())
            with trio.fail_after(5):
                await services.membership.driver.wait_stopped()

            after = rows(await c.status())
            assert after["membership"]["state"] == "stopped"
            assert "NoMachineKnowsThis" in str(after["membership"]["error"])
            assert after["dht"]["state"] == after["consensus"]["state"] == "running"
            # The daemon goes on: DHT and IPC serve, and consensus still commits.
            await c.dht_put("still-here", b"yes")
            assert (await c.dht_get("still-here"))["value"] == b"yes"
            tx = {"type": "kv_put", "key": "after", "value": b"2"}
            assert (await c.consensus_submit(tx))["seq"] == first["seq"] + 1
            # The stopped service refuses new events instead of queueing them forever.
            assert not services.membership.driver.submit(NoMachineKnowsThis())

            assert services.consensus.driver is not None
            assert services.consensus.driver.submit(NoMachineKnowsThis())
            with trio.fail_after(5):
                await services.consensus.driver.wait_stopped()
            after = rows(await c.status())
            assert after["consensus"]["state"] == "stopped"
            assert (await c.call("consensus.status", {}))["error"] is not None
            assert (await c.dht_get("still-here"))["value"] == b"yes"
            metrics = node.services.metrics.render().decode()
            assert 'p2pnode_service_up{service="membership"} 0.0' in metrics
            assert 'p2pnode_service_up{service="consensus"} 0.0' in metrics
        nursery.cancel_scope.cancel()
