"""The datagram transport between two real py-libp2p hosts in this process (127.0.0.1)."""

from __future__ import annotations

import struct

import multiaddr
import pytest
import trio
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.peerinfo import info_from_p2p_addr

from p2pnode.network.datagram import DatagramTransport
from p2pnode.network.host import build_host

pytestmark = pytest.mark.timeout(60)
LISTEN = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]
PROTO = "/p2pnode-test/dgram/1.0.0"


def transport(host, got: list[tuple[bytes, bytes]], **kw) -> DatagramTransport:  # type: ignore[no-untyped-def]
    return DatagramTransport(
        host,
        PROTO,
        lambda sender, data: got.append((sender, data)),
        max_packet=kw.get("max_packet", 4096),
        queue_size=kw.get("queue_size", 1024),
        write_timeout=5,
        connect_timeout=5,
        on_stream_end=kw.get("on_stream_end"),
        on_write=kw.get("on_write"),
    )


async def wait_for(cond, seconds: float = 10) -> None:  # type: ignore[no-untyped-def]
    # Polling: the callback only appends to a list.
    with trio.fail_after(seconds):
        while not cond():  # noqa: ASYNC110
            await trio.sleep(0.01)


async def test_packets_arrive_in_order_with_the_authenticated_sender() -> None:
    a, b = (build_host(create_new_key_pair(), psk=None, dial_timeout=5) for _ in range(2))
    got_a: list[tuple[bytes, bytes]] = []
    got_b: list[tuple[bytes, bytes]] = []
    ta, tb = transport(a, got_a), transport(b, got_b)
    async with a.run(listen_addrs=LISTEN), b.run(listen_addrs=LISTEN), trio.open_nursery() as n:
        await n.start(ta.run)
        await n.start(tb.run)
        await a.connect(info_from_p2p_addr(b.get_addrs()[0]))
        for i in range(500):
            assert ta.send(b.get_id().to_bytes(), b"packet %d" % i)
        await wait_for(lambda: len(got_b) == 500)
        assert [d for _, d in got_b] == [b"packet %d" % i for i in range(500)]
        assert {s for s, _ in got_b} == {a.get_id().to_bytes()}
        # The other direction uses its own stream; nothing is echoed on the first one.
        assert tb.send(a.get_id().to_bytes(), b"back")
        await wait_for(lambda: got_a == [(b.get_id().to_bytes(), b"back")])
        assert not ta.send(a.get_id().to_bytes(), b"to myself")  # never sent
        with pytest.raises(ValueError):
            ta.send(b.get_id().to_bytes(), b"x" * 5000)
        n.cancel_scope.cancel()


async def test_a_full_queue_drops_and_counts_instead_of_blocking() -> None:
    a, b = (build_host(create_new_key_pair(), psk=None, dial_timeout=5) for _ in range(2))
    got: list[tuple[bytes, bytes]] = []
    ta = transport(a, [], queue_size=4)
    tb = transport(b, got)
    async with a.run(listen_addrs=LISTEN), b.run(listen_addrs=LISTEN), trio.open_nursery() as n:
        await n.start(ta.run)
        await n.start(tb.run)
        await a.connect(info_from_p2p_addr(b.get_addrs()[0]))
        results = [ta.send(b.get_id().to_bytes(), b"p%d" % i) for i in range(100)]
        assert results.count(True) < 100
        assert ta.counters["dropped_queue_full"] == results.count(False)
        await wait_for(lambda: len(got) == results.count(True))
        n.cancel_scope.cancel()


async def test_an_oversized_inbound_frame_drops_only_that_stream() -> None:
    a, b = (build_host(create_new_key_pair(), psk=None, dial_timeout=5) for _ in range(2))
    got: list[tuple[bytes, bytes]] = []
    tb = transport(b, got, max_packet=1024)
    ta = transport(a, [])
    async with a.run(listen_addrs=LISTEN), b.run(listen_addrs=LISTEN), trio.open_nursery() as n:
        await n.start(tb.run)
        await n.start(ta.run)
        await a.connect(info_from_p2p_addr(b.get_addrs()[0]))
        raw = await a.new_stream(b.get_id(), [PROTO])
        await raw.write(struct.pack(">I", 10_000_000))  # claims 10 MB: refused, not allocated
        await raw.write(struct.pack(">I", 3) + b"bad")
        # The transport's own stream still works afterwards.
        assert ta.send(b.get_id().to_bytes(), b"fine")
        await wait_for(lambda: (a.get_id().to_bytes(), b"fine") in got)
        assert (a.get_id().to_bytes(), b"bad") not in got
        n.cancel_scope.cancel()


async def test_writes_and_the_end_of_a_peers_stream_are_reported() -> None:
    a, b = (build_host(create_new_key_pair(), psk=None, dial_timeout=5) for _ in range(2))
    writes: list[tuple[int, float]] = []
    ended: list[bytes] = []
    got: list[tuple[bytes, bytes]] = []
    ta = transport(a, [], on_write=lambda size, took: writes.append((size, took)))
    tb = transport(b, got, on_stream_end=ended.append)
    async with a.run(listen_addrs=LISTEN), b.run(listen_addrs=LISTEN), trio.open_nursery() as n:
        await n.start(ta.run)
        await n.start(tb.run)
        await a.connect(info_from_p2p_addr(b.get_addrs()[0]))
        assert ta.send(b.get_id().to_bytes(), b"x" * 3000)
        await wait_for(lambda: len(got) == 1)
        assert writes and writes[0][0] == 3004 and writes[0][1] >= 0  # the packet and its length
        assert not ended
        await a.disconnect(b.get_id())  # a's stream to b ends with the connection
        await wait_for(lambda: ended == [a.get_id().to_bytes()])
        n.cancel_scope.cancel()


async def test_a_peer_that_is_gone_is_redialled_with_growing_waits() -> None:
    # Before: one dial per 0.5 s forever (and one ERROR line from py-libp2p per dial).
    a, b = (build_host(create_new_key_pair(), psk=None, dial_timeout=5) for _ in range(2))
    got: list[tuple[bytes, bytes]] = []
    ta = DatagramTransport(
        a,
        PROTO,
        lambda sender, data: got.append((sender, data)),
        max_packet=4096,
        queue_size=16,
        write_timeout=5,
        connect_timeout=5,
        redial_backoff=0.25,
        max_redial_backoff=2.0,
    )
    gone = b.get_id().to_bytes()
    async with a.run(listen_addrs=LISTEN), trio.open_nursery() as n:
        await n.start(ta.run)
        async with b.run(listen_addrs=LISTEN):
            await a.connect(info_from_p2p_addr(b.get_addrs()[0]))
        # b has stopped listening: every dial is refused at once.
        with trio.move_on_after(6.0):
            while True:
                ta.send(gone, b"anyone there?")
                await trio.sleep(0.02)
        # Waits of 0.25, 0.5, 1, 2, 2 s...: about 6 dials in 6 s, where a fixed 0.25 s
        # would make 24.
        assert 3 <= ta.counters["dial_failures"] <= 8
        assert ta.counters["dropped_unreachable"] > 100
        n.cancel_scope.cancel()
