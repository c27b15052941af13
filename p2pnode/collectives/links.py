"""The data streams of collective operations: parts from one member's daemon to another's.

One outbound stream per (group, peer), opened at the first part and kept: a stream opens with
the group's name (one length byte, then the name), then carries parts back to back, each a
fixed :data:`~p2pnode_protocols.collectives.wire.HEADER_SIZE` header and ``nbytes`` of payload
whose crc32 the header holds. Writes go through the bulk writer (many yamux frames sealed in
one Noise send), never cancelled half-way (a cancelled py-libp2p write corrupts the Noise
session); reads take yamux's frames as they arrived (the bulk reader).

Bounds: the header's count and nbytes are checked before the payload is read
(:data:`MAX_PART_BYTES`); a part whose payload does not match its crc, or a stream that breaks
the format, is reported to the service against the sending peer, and the stream is dropped.

Errors: :class:`LinkError` from :meth:`Links.send` when the write failed or stalled (the peer
is then disconnected, as every bulk writer here does).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from contextlib import suppress

import trio
from libp2p.abc import IHost, INetStream
from libp2p.network.stream.exceptions import StreamEOF, StreamReset
from libp2p.peer.id import ID

from p2pnode.blobs.wire import Reader
from p2pnode.network.bulkwrite import BulkWriter, bulk_writer
from p2pnode.network.host import (
    PieceCutter,
    WriteOutcome,
    allow_redial,
    set_guarded_handler,
    shielded_write,
)
from p2pnode_protocols.collectives.control import check_group_name
from p2pnode_protocols.collectives.wire import (
    HEADER_SIZE,
    PartError,
    PartHeader,
    check_payload,
    decode_part_header,
    encode_part_header,
)

log = logging.getLogger(__name__)

DATA_PROTOCOL = "/p2pnode/collectives/data/1.0.0"
#: the largest part payload read from a peer (a part of 1 Mi float32 is 4 MiB)
MAX_PART_BYTES = 8 << 20
MAX_PART_COUNT = 4 << 20
HELLO_TIMEOUT = 10.0

# (group, sender peer, header, payload) -> None; may wait (the stream waits with it)
OnPart = Callable[[str, bytes, PartHeader, bytes], Awaitable[None]]
# (group, sender peer, reason): a peer broke the data stream's format
OnBadPeer = Callable[[str, bytes, str], None]


class LinkError(Exception):
    """A part could not be written to a peer."""


class _Out:
    __slots__ = ("cutter", "lock", "stream", "writer")

    def __init__(self, stream: INetStream) -> None:
        self.stream = stream
        self.writer: BulkWriter | None = bulk_writer(stream)
        self.cutter = PieceCutter()
        self.lock = trio.Lock()


class Links:
    def __init__(
        self,
        host: IHost,
        *,
        on_part: OnPart,
        on_bad_peer: OnBadPeer,
        write_timeout: float,
        connect_timeout: float,
    ) -> None:
        self.host = host
        self.on_part = on_part
        self.on_bad_peer = on_bad_peer
        self.write_timeout = write_timeout
        self.connect_timeout = connect_timeout
        self._out: dict[tuple[str, bytes], _Out] = {}
        self._dialing: dict[tuple[str, bytes], trio.Lock] = {}
        self.bytes_sent = 0
        self.bytes_received = 0

    def install(self) -> None:
        set_guarded_handler(self.host, DATA_PROTOCOL, self._serve)

    async def _link(self, group: str, peer: bytes) -> _Out:
        key = (group, peer)
        lock = self._dialing.setdefault(key, trio.Lock())
        async with lock:
            link = self._out.get(key)
            if link is not None:
                return link
            pid = ID(peer)
            allow_redial(self.host, pid)
            stream: INetStream | None = None
            with trio.move_on_after(self.connect_timeout):
                try:
                    stream = await self.host.new_stream(pid, [DATA_PROTOCOL])  # type: ignore[list-item]
                except Exception as exc:
                    raise LinkError(f"no data stream to {pid}: {exc}") from None
            if stream is None:
                raise LinkError(f"no data stream to {pid} within {self.connect_timeout:.0f} s")
            link = _Out(stream)
            name = group.encode()
            outcome = await shielded_write(
                self.host,
                stream,
                pid,
                [bytes([len(name)]) + name],
                timeout=self.write_timeout,
                cutter=link.cutter,
                flush=False,
                writer=link.writer,
            )
            if outcome is not WriteOutcome.OK:
                raise LinkError(f"write to {pid} {outcome.value}")
            self._out[key] = link
            return link

    async def send(
        self, group: str, peer: bytes, header: PartHeader, payload: bytes | memoryview
    ) -> None:
        """Write one part to ``peer`` (``header``'s nbytes and crc are filled in here)."""
        link = await self._link(group, peer)
        head = encode_part_header(header)
        async with link.lock:
            outcome = await shielded_write(
                self.host,
                link.stream,
                ID(peer),
                [head, payload],
                timeout=self.write_timeout,
                cutter=link.cutter,
                flush=True,
                writer=link.writer,
            )
        if outcome is not WriteOutcome.OK:
            await self.drop(group, peer)
            raise LinkError(f"write to {ID(peer)} {outcome.value}")
        self.bytes_sent += len(head) + len(payload)

    async def drop(self, group: str, peer: bytes) -> None:
        """Reset and forget the stream to ``peer``: the next part opens a new one."""
        link = self._out.pop((group, peer), None)
        if link is not None:
            with trio.move_on_after(1, shield=True), suppress(Exception):
                await link.stream.reset()

    async def close_group(self, group: str) -> None:
        for key in [k for k in self._out if k[0] == group]:
            link = self._out.pop(key)
            with trio.move_on_after(1, shield=True), suppress(Exception):
                await link.stream.reset()

    async def _serve(self, stream: INetStream) -> None:
        peer = stream.muxed_conn.peer_id.to_bytes()
        reader = Reader(stream, None, 1 << 16)
        group = "?"
        try:
            with trio.fail_after(HELLO_TIMEOUT):
                (length,) = b"".join(bytes(p) for p in await reader.exactly(1))
                group = check_group_name(
                    b"".join(bytes(p) for p in await reader.exactly(length)).decode()
                )
            while True:
                head = b"".join(bytes(p) for p in await reader.exactly(HEADER_SIZE))
                header = decode_part_header(
                    head, max_count=MAX_PART_COUNT, max_nbytes=MAX_PART_BYTES
                )
                pieces = await reader.exactly(header.nbytes) if header.nbytes else []
                payload = (
                    pieces[0]
                    if len(pieces) == 1 and isinstance(pieces[0], bytes)
                    else b"".join(pieces)
                )
                check_payload(header, payload)
                self.bytes_received += HEADER_SIZE + header.nbytes
                await self.on_part(
                    group,
                    peer,
                    header,
                    bytes(payload) if not isinstance(payload, bytes) else payload,
                )
        except (EOFError, StreamEOF, StreamReset, trio.TooSlowError):
            return
        except (PartError, ValueError, UnicodeDecodeError) as exc:
            self.on_bad_peer(group, peer, str(exc))
            with trio.move_on_after(1, shield=True), suppress(Exception):
                await stream.reset()
