"""BulkWriter and BulkReader between two real py-libp2p hosts in this process (127.0.0.1): the
bytes arrive whole and in order, through a closed send window, beside other writers of the
connection, over a private network; a bulk reader returns the window's credit and sees the
stream's end and its reset as py-libp2p reports them."""

from __future__ import annotations

import os
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import multiaddr
import pytest
import trio
from libp2p.abc import IHost, INetStream
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.network.stream.exceptions import StreamEOF, StreamReset
from libp2p.peer.peerinfo import info_from_p2p_addr

from p2pnode.network.bulkread import bulk_reader
from p2pnode.network.bulkwrite import MAX_PIECE, BulkWriter, bulk_writer
from p2pnode.network.host import build_host

pytestmark = pytest.mark.timeout(60)
LISTEN = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]
PROTO = "/p2pnode-test/bulk/1.0.0"
PSK = "ab" * 32


async def read_all(stream, delay: float = 0.0) -> bytes:  # type: ignore[no-untyped-def]
    got = bytearray()
    await trio.sleep(delay * 100)  # a slow reader: the sender runs out of window
    while True:
        try:
            data = await stream.read(100_000)
        except StreamEOF:
            return bytes(got)
        if not data:
            return bytes(got)
        got += data
        await trio.sleep(delay)


def pieces_of(data: bytes, rng: random.Random) -> list[memoryview]:
    out, at, view = [], 0, memoryview(data)
    while at < len(data):
        n = rng.choice([1, 17, 4096, MAX_PIECE, MAX_PIECE + 1, 3 * MAX_PIECE])
        out.append(view[at : at + n])
        at += n
    return out


@asynccontextmanager
async def two_hosts(handler, psk: str | None = None) -> AsyncIterator[tuple[IHost, IHost]]:  # type: ignore[no-untyped-def]
    """Two connected hosts; the second answers PROTO with ``handler``."""
    a, b = (build_host(create_new_key_pair(), psk=psk, dial_timeout=5) for _ in range(2))
    b.set_stream_handler(PROTO, handler)
    async with a.run(listen_addrs=LISTEN), b.run(listen_addrs=LISTEN):
        await a.connect(info_from_p2p_addr(b.get_addrs()[0]))
        yield a, b


async def bulk_stream(a: IHost, b: IHost) -> tuple[INetStream, BulkWriter]:
    stream = await a.new_stream(b.get_id(), [PROTO])
    writer = bulk_writer(stream)
    assert writer is not None
    return stream, writer


@pytest.mark.parametrize("psk", [None, PSK], ids=["noise", "private-network"])
async def test_bytes_arrive_whole_in_order_beside_other_writers(psk: str | None) -> None:
    received: dict[str, bytes] = {}

    async def handler(stream) -> None:  # type: ignore[no-untyped-def]
        name = (await stream.read(5)).decode()
        # The bulk stream is read slowly: 6 MiB through a 4 MiB window must wait for credit.
        received[name] = await read_all(stream, delay=0.002 if name == "bulk_" else 0.0)
        await stream.close()

    rng = random.Random(7)
    bulk, plain = os.urandom(6 << 20), os.urandom(1 << 20)
    async with two_hosts(handler, psk) as (a, b):

        async def send_bulk() -> None:
            stream, writer = await bulk_stream(a, b)
            await writer.write([b"bulk_"])
            for i in range(0, len(bulk), 256 << 10):
                await writer.write(pieces_of(bulk[i : i + (256 << 10)], rng))
            await stream.close()

        async def send_plain() -> None:
            # Another stream on the same connection, written by py-libp2p itself: its frames
            # and the bulk writer's share one Noise session and must keep its nonce order.
            stream = await a.new_stream(b.get_id(), [PROTO])
            await stream.write(b"plain")
            for i in range(0, len(plain), 10_000):
                await stream.write(plain[i : i + 10_000])
                await trio.lowlevel.checkpoint()
            await stream.close()

        with trio.fail_after(30):
            async with trio.open_nursery() as n:
                n.start_soon(send_bulk)
                n.start_soon(send_plain)
            while len(received) < 2:  # noqa: ASYNC110  (the handlers run in b's nursery)
                await trio.sleep(0.01)
    assert received["bulk_"] == bulk
    assert received["plain"] == plain


async def test_a_closed_stream_refuses_the_write() -> None:
    async with two_hosts(read_all) as (a, b):
        stream, writer = await bulk_stream(a, b)
        await stream.reset()
        with pytest.raises(Exception, match="closed"):
            await writer.write([b"too late"])


def test_streams_it_cannot_write_are_left_to_py_libp2p() -> None:
    class NotAStream:
        muxed_stream = object()

    assert bulk_writer(NotAStream()) is None  # type: ignore[arg-type]


async def read_bulk(stream, delay: float = 0.0) -> bytes:  # type: ignore[no-untyped-def]
    reader = bulk_reader(stream)
    assert reader is not None
    got = bytearray()
    while True:
        try:
            parts = await reader.read()
        except StreamEOF:
            return bytes(got)
        for part in parts:
            got += part
        if not any(parts):
            return bytes(got)
        await trio.sleep(delay)


async def test_a_bulk_reader_gets_every_byte_and_returns_the_credit() -> None:
    # 24 MiB through a window of at most 16 MiB: without credit coming back the sender stalls.
    data = os.urandom(24 << 20)
    got: list[bytes] = []

    async def handler(stream) -> None:  # type: ignore[no-untyped-def]
        got.append(await read_bulk(stream, delay=0.001))

    async with two_hosts(handler) as (a, b):
        stream, writer = await bulk_stream(a, b)
        with trio.fail_after(30):
            for i in range(0, len(data), 1 << 20):
                await writer.write(pieces_of(data[i : i + (1 << 20)], random.Random(i)))
            await stream.close()
            while not got:  # noqa: ASYNC110  (the handler runs in b's nursery)
                await trio.sleep(0.01)
    assert got == [data]


async def test_a_bulk_reader_ends_at_a_reset_as_stream_read_does() -> None:
    outcome: dict[str, object] = {}

    async def handler(stream) -> None:  # type: ignore[no-untyped-def]
        name = (await stream.read(4)).decode()
        try:
            outcome[name] = await (read_bulk(stream) if name == "bulk" else read_all(stream))
        except (StreamEOF, StreamReset) as exc:
            outcome[name] = type(exc)

    async with two_hosts(handler) as (a, b):
        for name in ("bulk", "read"):
            stream = await a.new_stream(b.get_id(), [PROTO])
            await stream.write(name.encode() + b"some bytes, then a reset")
            await trio.sleep(0.1)
            await stream.reset()
        with trio.fail_after(10):
            while len(outcome) < 2:  # noqa: ASYNC110
                await trio.sleep(0.01)
    assert outcome["bulk"] == outcome["read"] == b"some bytes, then a reset"
