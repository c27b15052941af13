"""The blob service's stream reader: idle limits, deadlines, and coalesced reads, over an
in-memory stream that hands out what a test feeds it (the reader is what is under test)."""

from __future__ import annotations

import pytest
import trio
from libp2p.network.stream.exceptions import StreamEOF

from p2pnode.blobs.wire import COALESCE_BELOW, COALESCE_DELAY
from p2pnode.blobs.wire import Reader as _Reader
from p2pnode_protocols.framing import encode_frame


class Pipe:
    """Like a yamux stream: ``read(n)`` returns all that is buffered, at most n bytes, and
    waits while nothing is; EOF once closed and drained."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.arrived = trio.Event()
        self.closed = False
        self.reads = 0

    def feed(self, data: bytes) -> None:
        self.buffer += data
        self.arrived.set()

    async def read(self, n: int) -> bytes:
        self.reads += 1
        while not self.buffer:
            if self.closed:
                raise StreamEOF()
            self.arrived = trio.Event()
            await self.arrived.wait()
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        return data


async def test_a_provider_ends_a_stream_idle_past_its_limit() -> None:
    pipe = Pipe()
    reader = _Reader(pipe, 5.0, 1024, idle_timeout=0.05)  # type: ignore[arg-type]
    pipe.feed(encode_frame({"hashes": [b"x"]}))
    assert await reader.frame(idle_ok=True) == {"hashes": [b"x"]}
    started = trio.current_time()
    assert await reader.frame(idle_ok=True) is None, "idle too long: as if the stream ended"
    assert 0.05 <= trio.current_time() - started < 1.0


async def test_inside_a_frame_the_read_deadline_applies_not_the_idle_limit() -> None:
    pipe = Pipe()
    reader = _Reader(pipe, 0.05, 1024, idle_timeout=60.0)  # type: ignore[arg-type]
    pipe.feed(encode_frame({"hashes": [b"x"]})[:3])  # a frame cut short
    with pytest.raises(trio.TooSlowError):
        with trio.move_on_after(1.0):
            await reader.frame(idle_ok=True)


async def test_reads_coalesce_while_a_chunk_trickles_in(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Virtual time, so the sleeps are exact and the count of reads deterministic.
    pipe = Pipe()
    reader = _Reader(pipe, None, 1024)  # type: ignore[arg-type]
    piece = b"p" * 1000
    assert len(piece) < COALESCE_BELOW

    async def trickle() -> None:
        for _ in range(20):
            pipe.feed(piece)
            await trio.sleep(COALESCE_DELAY / 10)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trickle)
        parts = await reader.exactly(20 * len(piece))
    assert b"".join(parts) == piece * 20
    # Twenty pieces arrive a tenth of the coalescing delay apart: each wait lets ~10 gather.
    assert pipe.reads <= 5, pipe.reads
