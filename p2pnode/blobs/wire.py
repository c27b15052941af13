"""The ``/p2pnode/blob/1.0.0`` stream as both ends see it: its limits, the reader of its frames
and raw byte runs, the checks of a request, and writing and closing a stream.

One stream per provider carries a fetch. The fetcher sends ``{"hashes": [...]}`` (at most
``MAX_BATCH``), the provider answers each hash with a header frame ``{"hash", "size"}`` (size 0:
not held) followed by that many raw bytes, back to back; then the fetcher may send the next
batch. A fetch that lacks the manifest opens with ``{"key", "first": n}`` instead: the provider
answers ``{"key", "size"}`` and the manifest's bytes (size 0: not held, and nothing follows),
then the blob's first n chunks as for their hashes, so the manifest and the first chunks cost
one round trip. No per-chunk request round trip, no CBOR around the data.
"""

from __future__ import annotations

import math
from contextlib import suppress
from typing import Any

import trio
from libp2p.abc import IHost, INetStream
from libp2p.network.stream.exceptions import StreamEOF
from libp2p.peer.id import ID

from p2pnode.blobs.errors import BlobError
from p2pnode.config import Config
from p2pnode.network.bulkread import bulk_reader
from p2pnode.network.bulkwrite import BulkWriter
from p2pnode.network.host import PieceCutter, WriteOutcome, shielded_write
from p2pnode_protocols.framing import FrameDecoder

PROTOCOL_ID = "/p2pnode/blob/1.0.0"
MAX_BATCH = 64
MAX_BATCH_REQUEST = 64 + MAX_BATCH * 40
MAX_HEADER = 256
MiB = 1 << 20
READ_SIZE = MiB
# Read coalescing (see Reader.exactly): half a millisecond holds ~200 KiB at 400 MiB/s.
COALESCE_BELOW = 256 << 10
COALESCE_DELAY = 0.0005


def manifest_request(frame: dict[str, Any]) -> tuple[str, int]:
    """The key and the number of first chunks a ``{"key", "first"}`` request names."""
    key, first = frame.get("key"), frame.get("first", 0)
    if not isinstance(key, str) or type(first) is not int or not 0 <= first <= MAX_BATCH:
        raise BlobError(f"a manifest request names a key and 0 to {MAX_BATCH} first chunks")
    return key, first


def batch_request(frame: dict[str, Any]) -> list[object]:
    """The hashes a ``{"hashes"}`` request names (not yet checked to be hashes)."""
    hashes = frame.get("hashes")
    if not isinstance(hashes, list) or not 0 < len(hashes) <= MAX_BATCH:
        raise BlobError(f"a batch names 1 to {MAX_BATCH} chunk hashes")
    return hashes


async def write(
    host: IHost,
    cfg: Config,
    stream: INetStream,
    peer: ID,
    *bufs: bytes,
    cutter: PieceCutter | None = None,
    flush: bool = True,
    writer: BulkWriter | None = None,
) -> None:
    """Write ``bufs`` to ``peer`` within ``blobs.chunk_timeout``; BlobError if that fails."""
    outcome = await shielded_write(
        host,
        stream,
        peer,
        bufs,
        timeout=cfg.blobs.chunk_timeout,
        disconnect_timeout=cfg.network.connect_timeout,
        cutter=cutter,
        flush=flush,
        writer=writer,
    )
    if outcome is not WriteOutcome.OK:
        raise BlobError(f"write to {peer} {outcome.value}")


async def close_stream(stream: INetStream) -> None:
    with trio.move_on_after(1, shield=True), suppress(Exception):
        await stream.close()


class Reader:
    """Frames and raw byte runs from one stream (a FrameDecoder fed by reads). With a
    ``timeout`` every read has that deadline except the idle wait for a fetcher's next batch,
    which ends the stream after ``idle_timeout`` (if given); without one the caller sets the
    deadlines."""

    def __init__(
        self,
        stream: INetStream,
        timeout: float | None,
        max_frame: int,
        *,
        idle_timeout: float | None = None,
    ) -> None:
        self.stream = stream
        self.timeout = timeout
        self.idle_timeout = idle_timeout
        self.decoder = FrameDecoder(max_frame)
        self._last = 0  # bytes the last read brought
        # A fetch (no per-read timeout: the caller sets the deadlines) takes yamux's frames as
        # they arrived instead of copies of them.
        self._bulk = bulk_reader(stream) if timeout is None else None

    async def _more(self, *, idle: bool) -> None:
        parts: list[bytes | memoryview]
        try:
            if idle:
                parts = [b""]  # waited ``idle_timeout`` for nothing: as if the stream ended
                with trio.move_on_after(self.idle_timeout or math.inf):
                    parts = [await self.stream.read(READ_SIZE)]
            elif self._bulk is not None:
                parts = await self._bulk.read()
            elif self.timeout is None:
                parts = [await self.stream.read(READ_SIZE)]
            else:
                with trio.fail_after(self.timeout):
                    parts = [await self.stream.read(READ_SIZE)]
        except StreamEOF:
            parts = [b""]
        self._last = sum(len(p) for p in parts)
        for part in parts:
            self.decoder.receive_data(part)  # type: ignore[arg-type]  # bytes() of a view

    async def frame(self, *, idle_ok: bool = False) -> dict[str, Any] | None:
        """The next frame; None at a clean end of stream (only when ``idle_ok``)."""
        while True:
            frame = self.decoder.next_frame()
            if frame is not None:
                return frame
            if self.decoder.at_eof and not self.decoder.buffered:
                if idle_ok:
                    return None
                raise EOFError("stream ended before the expected frame")
            await self._more(idle=idle_ok and not self.decoder.buffered)

    async def exactly(self, n: int) -> list[bytes | memoryview]:
        """The next ``n`` raw bytes, as the pieces they arrived in.

        While the bytes trickle in (the last read brought less than ``COALESCE_BELOW``), wait
        ``COALESCE_DELAY`` before reading again, so one read takes several frames: each
        py-libp2p read costs tens of microseconds of Python whatever its size, and woken for
        every 64 KiB frame a fetcher spends a fifth of its CPU on that alone."""
        while (parts := self.decoder.next_raw_parts(n)) is None:
            if 0 < self._last < COALESCE_BELOW:
                await trio.sleep(COALESCE_DELAY)
            await self._more(idle=False)
        return parts
