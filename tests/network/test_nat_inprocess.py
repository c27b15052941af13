"""NAT traversal's parts between real hosts on 127.0.0.1, in this process: the dial-back check,
reservations and relayed addresses, dialing a peer through its relay, and the relay's limits."""

from __future__ import annotations

import os
from contextlib import suppress
from pathlib import Path

import pytest
import trio
from multiaddr import Multiaddr

from p2pnode.network.nat.circuit import dial_circuit
from tests.network.nat_helpers import connect, nat_nodes, wait_for

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
        await connect(private.host, relay.addr)
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


async def _sink_handler(host, got: list[int]) -> None:  # type: ignore[no-untyped-def]
    async def sink(stream):  # type: ignore[no-untyped-def]
        n = 0
        try:
            while data := await stream.read(1 << 20):
                n += len(data)
        except Exception:
            pass
        got.append(n)

    host.set_stream_handler(PROTO, sink)


async def _relayed_stream(dialer, private):  # type: ignore[no-untyped-def]
    addr = next(str(a) for a in private.host.get_addrs() if "/p2p-circuit" in str(a))
    await dial_circuit(dialer.host, private.id, addr, timeout=5)
    return await dialer.host.new_stream(private.id, [PROTO])


async def test_dialback_reaches_only_a_listening_port(tmp_path: Path) -> None:
    """The server dials back on a fresh connection: a dead port is reported unreached, even
    though the asker is connected (py-libp2p's AutoNAT says OK to both)."""
    from p2pnode.network.nat.dialback import ask_dialback
    from p2pnode_protocols.nat.dialback import tcp_port

    async with nat_nodes(tmp_path, [{"nat.reachability": "public"}] * 2) as (server, asker):
        await connect(asker.host, server.addr)
        await wait_for(lambda: asker.host.get_peerstore().get_protocols(server.id))
        port = tcp_port(str(asker.host.get_transport_addrs()[0]))
        assert port is not None
        with trio.socket.socket() as s:  # a port nothing listens on
            await s.bind(("127.0.0.1", 0))
            dead = s.getsockname()[1]
        live = await ask_dialback(asker.host, server.id, (port,), timeout=3)
        assert live.reached == (f"/ip4/127.0.0.1/tcp/{port}",) and live.observed == "127.0.0.1"
        gone = await ask_dialback(asker.host, server.id, (dead,), timeout=3)
        assert gone.reached == () and gone.refused == ""


async def test_auto_reachability_public_makes_a_relay(tmp_path: Path) -> None:
    """With reachability auto, a node that peers can dial back concludes public, and with
    relay.service auto it starts serving as a relay."""
    base = {"nat.confirmations": 1}
    async with nat_nodes(
        tmp_path, [{**base, "nat.reachability": "auto"}, {**base, "nat.reachability": "public"}]
    ) as (node, peer):
        await connect(node.host, peer.addr)
        await wait_for(lambda: node.nat.reachability == "public", timeout=20)
        assert node.nat.relay.serving
        assert peer.nat.dialback.answered >= 1


async def test_relay_cuts_a_circuit_at_its_byte_limit(tmp_path: Path) -> None:
    async with nat_nodes(
        tmp_path,
        [
            {
                "nat.reachability": "public",
                "relay.service": "on",
                "relay.max_circuit_bytes": 1 << 20,
                "relay.max_rate": 0,
            },
            {"nat.reachability": "private", "nat.hole_punch": "off"},
            {"nat.reachability": "public", "nat.hole_punch": "off"},
        ],
    ) as (relay, private, dialer):
        await connect(private.host, relay.addr)
        await wait_for(lambda: private.nat.reachability == "relayed")
        got: list[int] = []
        await _sink_handler(private.host, got)
        stream = await _relayed_stream(dialer, private)
        # The writes may fail or be buffered when the relay cuts the circuit: either is fine.
        with suppress(Exception):
            for _ in range(8):
                await stream.write(b"x" * (1 << 20))
            await stream.close()
        await wait_for(lambda: relay.nat.relay.circuits_cut == 1)
        await wait_for(lambda: private.id not in dialer.host.getconnected_peers())
        assert relay.nat.relay.bytes_relayed <= 1 << 20
        assert sum(got) < 1 << 20


async def test_relay_cuts_an_idle_circuit_at_its_duration_limit(tmp_path: Path) -> None:
    async with nat_nodes(
        tmp_path,
        [
            {"nat.reachability": "public", "relay.service": "on", "relay.max_circuit_duration": 1},
            {"nat.reachability": "private", "nat.hole_punch": "off"},
            {"nat.reachability": "public", "nat.hole_punch": "off"},
        ],
    ) as (relay, private, dialer):
        await connect(private.host, relay.addr)
        await wait_for(lambda: private.nat.reachability == "relayed")
        await _sink_handler(private.host, [])
        await _relayed_stream(dialer, private)
        assert private.id in dialer.host.getconnected_peers()
        await wait_for(lambda: relay.nat.relay.circuits_cut == 1, timeout=5)
        await wait_for(lambda: private.id not in dialer.host.getconnected_peers())


async def test_relay_refuses_past_its_reservation_and_circuit_caps(tmp_path: Path) -> None:
    async with nat_nodes(
        tmp_path,
        [
            {
                "nat.reachability": "public",
                "relay.service": "on",
                "relay.max_reservations": 1,
                "relay.max_circuits": 1,
            },
            {"nat.reachability": "private", "nat.hole_punch": "off"},
            {"nat.reachability": "private", "nat.hole_punch": "off"},
            {"nat.reachability": "public", "nat.hole_punch": "off"},
            {"nat.reachability": "public", "nat.hole_punch": "off"},
        ],
    ) as (relay, first, second, d1, d2):
        await connect(first.host, relay.addr)
        await wait_for(lambda: first.nat.reachability == "relayed")
        await connect(second.host, relay.addr)
        await wait_for(lambda: relay.nat.relay.reservations_refused >= 1)
        assert second.nat.reachability == "private"
        await _sink_handler(first.host, [])
        await _relayed_stream(d1, first)
        from p2pnode.network.nat.circuit import CircuitError

        addr = next(str(a) for a in first.host.get_addrs() if "/p2p-circuit" in str(a))
        with pytest.raises(CircuitError, match="RESOURCE_LIMIT_EXCEEDED"):
            await dial_circuit(d2.host, first.id, addr, timeout=5)
        assert relay.nat.relay.circuits_refused == 1


async def test_relay_rate_limits_requests_per_peer(tmp_path: Path) -> None:
    from p2pnode.network.nat.reserve import ReserveError, reserve

    async with nat_nodes(
        tmp_path,
        [
            {
                "nat.reachability": "public",
                "relay.service": "on",
                "relay.max_requests_per_minute": 1,
            },
            {"nat.reachability": "public", "nat.hole_punch": "off"},
        ],
    ) as (relay, asker):
        await connect(asker.host, relay.addr)
        # The bucket holds two requests; the third within the minute is refused.
        await reserve(asker.host, relay.id, timeout=5)
        await reserve(asker.host, relay.id, timeout=5)
        with pytest.raises(ReserveError, match="RESOURCE_LIMIT_EXCEEDED"):
            await reserve(asker.host, relay.id, timeout=5)


async def test_relay_paces_its_bytes(tmp_path: Path) -> None:
    async with nat_nodes(
        tmp_path,
        [
            {"nat.reachability": "public", "relay.service": "on", "relay.max_rate": 2},
            {"nat.reachability": "private", "nat.hole_punch": "off"},
            {"nat.reachability": "public", "nat.hole_punch": "off"},
        ],
    ) as (relay, private, dialer):
        await connect(private.host, relay.addr)
        await wait_for(lambda: private.nat.reachability == "relayed")
        got: list[int] = []
        await _sink_handler(private.host, got)
        stream = await _relayed_stream(dialer, private)
        started = trio.current_time()
        for _ in range(4):
            await stream.write(b"y" * (1 << 20))
        await stream.close()
        await wait_for(lambda: got == [4 << 20], timeout=20)
        # 4 MiB at 2 MiB/s with a burst of 0.5 MiB: at least 1.75 s.
        assert trio.current_time() - started >= 1.7


async def test_auto_upgrade_leaves_the_relay(tmp_path: Path) -> None:
    """With hole punching on auto, a relayed connection to a peer that can be dialled directly
    (here: everything is on loopback) becomes direct, and the relayed one closes."""
    from p2pnode.network.nat import punch

    async with nat_nodes(
        tmp_path,
        [
            {"nat.reachability": "public", "relay.service": "on"},
            {"nat.reachability": "private", "nat.hole_punch": "auto"},
            {"nat.reachability": "public", "nat.hole_punch": "auto"},
        ],
    ) as (relay, private, dialer):
        await connect(private.host, relay.addr)
        await wait_for(lambda: private.nat.reachability == "relayed")
        await _sink_handler(private.host, [])
        # The dialer knows the private node by its relayed and its direct address.
        dialer.host.get_peerstore().add_addrs(
            private.id,
            [a.decapsulate(Multiaddr(f"/p2p/{private.id}")) for a in private.host.get_addrs()],
            3600,
        )
        await dialer.host.new_stream(private.id, [PROTO])
        assert dialer.nat.connection(private.id)["connection"] == "relayed"
        grace = punch.RELAY_CLOSE_GRACE
        await wait_for(lambda: dialer.nat.connection(private.id)["relay"] is None, 10 + grace)
        assert dialer.nat.connection(private.id)["connection"] == "direct"
