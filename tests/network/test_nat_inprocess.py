"""NAT traversal's parts between real hosts on 127.0.0.1, in this process: the dial-back check,
reservations and relayed addresses, dialing a peer through its relay, and the relay's limits."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from p2pnode.network.nat.circuit import dial_circuit
from tests.network.nat_helpers import _connect, nat_nodes, wait_for

pytestmark = pytest.mark.timeout(60)

PROTO = "/test/sink/1.0.0"


async def test_relayed_reservation_and_transfer(tmp_path: Path) -> None:
    async with nat_nodes(
        tmp_path,
        [
            {"nat.reachability": "public", "relay.service": "on", "relay.max_rate": 0},
            {"nat.reachability": "private", "nat.hole_punch": "manual"},
            {"nat.reachability": "public", "nat.hole_punch": "manual", "relay.service": "off"},
        ],
    ) as (relay, private, dialer):
        await _connect(private.host, relay.addr)
        await wait_for(lambda: private.nat.reachability == "relayed")
        circuits = [str(a) for a in private.host.get_addrs() if "/p2p-circuit" in str(a)]
        assert circuits and circuits[0].startswith(relay.addr), circuits
        got = []

        async def sink(stream):  # type: ignore[no-untyped-def]
            n = 0
            while data := await stream.read(1 << 20):
                n += len(data)
            got.append(n)
            await stream.close()

        private.host.set_stream_handler(PROTO, sink)
        # The dialer knows the private node only by its relayed address.
        dialer.host.get_peerstore().add_addrs(
            private.id, [a for a in private.host.get_addrs() if "/p2p-circuit" in str(a)], 3600
        )
        stream = await dialer.host.new_stream(private.id, [PROTO])
        assert dialer.nat.connection(private.id) == {
            "connection": "relayed",
            "relay": relay.id.to_base58(),
        }
        blob = os.urandom(4 << 20)
        before = relay.nat.relay.bytes_relayed
        for i in range(0, len(blob), 1 << 20):
            await stream.write(blob[i : i + (1 << 20)])
        await stream.close()
        await wait_for(lambda: got == [len(blob)])
        assert relay.nat.relay.bytes_relayed - before >= len(blob)
        assert private.nat.connection(dialer.id)["connection"] == "relayed"
        assert private.nat.connection(dialer.id)["relay"] == relay.id.to_base58()
