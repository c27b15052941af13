"""One-way datagrams over reused libp2p streams: the transport under PBFT.

Each peer pair keeps one long-lived outbound stream per direction carrying 4-byte big-endian
length-prefixed packets; nothing is answered on the stream a packet came in on. A reused stream
costs one yamux frame per write (about 1 ms round trip on loopback; a new stream per packet
costs 4.5 ms and ``request_response`` about 22 ms). PBFT and the membership service (SWIM) both
run on it; ``on_stream_end`` tells SWIM a peer's stream ended (a killed daemon shows as EOF
within ~15 ms) and ``on_write`` feeds its bandwidth estimate.

Per peer there is a bounded outbound queue and one writer task. :meth:`DatagramTransport.send`
never blocks: a packet that does not fit is dropped and counted, as a datagram would be, and the
protocol above retransmits. The writer coalesces what is queued (up to ``COALESCE_BYTES``) into
one stream write, so a burst of small packets costs one yamux frame and one Noise seal.

Cancellation: writes run shielded under ``write_timeout`` (a write cancelled half-way can
corrupt the shared Noise session; field guide §4). A write that misses its deadline disconnects
the peer; the next packet redials. Cancelling :meth:`run` stops the writers and closes queues.

Errors: a failed dial drops what is queued for that peer and waits before dialling again
(packets sent meanwhile are dropped and counted): ``redial_backoff`` after the first failure,
doubling with each failure in a row up to ``max_redial_backoff``, so a peer that is gone for
good costs one dial (and one log line) every few seconds, not one per packet. A dial that
works resets the wait, and so does a stream the peer opens to us: a restarted peer that speaks
first is dialled back at once. A failed write resets the
stream. Inbound frames above ``max_packet`` make us drop that stream (the byte stream cannot be
resynchronised). The inbound handler is guarded: nothing a peer sends can raise into the swarm.

Resources: one writer task and at most ``queue_size`` packets per peer ever sent to; the
inbound buffer per stream is bounded by ``max_packet`` plus one read. The sender passed to
``on_packet`` is the transport-authenticated (Noise) peer id, never a claim inside the packet.
"""

from __future__ import annotations

import logging
import struct
import time
from collections import Counter
from collections.abc import Callable
from contextlib import suppress

import trio
from libp2p.abc import IHost, INetStream
from libp2p.network.stream.exceptions import StreamEOF, StreamReset
from libp2p.peer.id import ID

from p2pnode.network.host import (
    WriteOutcome,
    allow_redial,
    set_guarded_handler,
    shielded_write,
)

log = logging.getLogger(__name__)

_HEADER = struct.Struct(">I")
#: Queued packets joined into one write; a yamux frame carries up to 256 KiB by default.
COALESCE_BYTES = 256 * 1024
READ_CHUNK = 1 << 20
#: Peers whose last inbound stream is remembered (one float each; beyond this, new peers are
#: not remembered and simply wait out their dial backoff).
MAX_PEERS_REMEMBERED = 4096

OnPacket = Callable[[bytes, bytes], None]  # (sender, packet); must not block
OnStreamEnd = Callable[[bytes], None]  # (sender): a peer's inbound stream ended
OnWrite = Callable[[int, float], None]  # (bytes, seconds) of one write that went through


class DatagramTransport:
    """Send and receive packets of one ``protocol``; ``on_packet(sender, data)`` must not block."""

    def __init__(
        self,
        host: IHost,
        protocol: str,
        on_packet: OnPacket,
        *,
        max_packet: int,
        queue_size: int,
        write_timeout: float,
        connect_timeout: float,
        redial_backoff: float = 0.5,
        max_redial_backoff: float = 8.0,
        on_stream_end: OnStreamEnd | None = None,
        on_write: OnWrite | None = None,
    ) -> None:
        if max_packet < 1 or queue_size < 1:
            raise ValueError("max_packet and queue_size must be positive")
        self.host = host
        self.protocol = protocol
        self.on_packet = on_packet
        self.max_packet = max_packet
        self.queue_size = queue_size
        self.write_timeout = write_timeout
        self.connect_timeout = connect_timeout
        self.redial_backoff = redial_backoff
        self.max_redial_backoff = max(max_redial_backoff, redial_backoff)
        self.on_stream_end = on_stream_end
        self.on_write = on_write
        self.counters: Counter[str] = Counter()
        self._me = host.get_id().to_bytes()
        self._outq: dict[bytes, trio.MemorySendChannel[bytes]] = {}
        #: When each peer last opened a stream to us (it is up: a dial wait ends early).
        self._opened_by: dict[bytes, float] = {}
        self._nursery: trio.Nursery | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    async def run(
        self, *, task_status: trio.TaskStatus[DatagramTransport] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Register the inbound handler and own the writer tasks until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            set_guarded_handler(self.host, self.protocol, self._serve)
            task_status.started(self)
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None
                for q in self._outq.values():
                    q.close()
                self._outq.clear()

    # -- outbound ------------------------------------------------------------------------------

    def send(self, to: bytes, data: bytes) -> bool:
        """Queue one packet for ``to``; False if it was dropped (queue full, not running)."""
        if self._nursery is None or to == self._me:
            return False
        if len(data) > self.max_packet:
            raise ValueError(f"packet of {len(data)} bytes exceeds {self.max_packet}")
        q = self._outq.get(to)
        if q is None:
            send, recv = trio.open_memory_channel[bytes](self.queue_size)
            self._outq[to] = q = send
            self._nursery.start_soon(self._writer, to, recv)
        try:
            q.send_nowait(data)
        except trio.WouldBlock:
            self.counters["dropped_queue_full"] += 1
            return False
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._outq.pop(to, None)
            return False
        self.counters["packets_sent"] += 1
        return True

    async def _writer(self, to: bytes, recv: trio.MemoryReceiveChannel[bytes]) -> None:
        peer = ID(to)
        stream: INetStream | None = None
        next_dial = 0.0
        backoff = 0.0  # the wait after the last failed dial; 0 after one that worked
        failed_at = 0.0
        try:
            async with recv:
                async for first in recv:
                    parts = [_HEADER.pack(len(first)), first]
                    size = len(first) + 4
                    while size < COALESCE_BYTES:
                        try:
                            more = recv.receive_nowait()
                        except trio.WouldBlock:
                            break
                        parts += (_HEADER.pack(len(more)), more)
                        size += len(more) + 4
                    if stream is None:
                        now = trio.current_time()
                        if now < next_dial and self._opened_by.get(to, -1.0) < failed_at:
                            self.counters["dropped_unreachable"] += len(parts) // 2
                            continue
                        stream = await self._dial(peer)
                        if stream is None:
                            backoff = min(
                                max(2 * backoff, self.redial_backoff), self.max_redial_backoff
                            )
                            failed_at = trio.current_time()
                            next_dial = failed_at + backoff
                            self.counters["dropped_unreachable"] += len(parts) // 2
                            continue
                        backoff = 0.0
                    if not await self._write(peer, stream, b"".join(parts)):
                        self.counters["dropped_write_failed"] += len(parts) // 2
                        with trio.move_on_after(self.write_timeout, shield=True):
                            with suppress(Exception):
                                await stream.reset()
                        stream = None
        finally:
            if stream is not None:
                with trio.move_on_after(self.write_timeout, shield=True):
                    with suppress(Exception):
                        await stream.reset()

    async def _dial(self, peer: ID) -> INetStream | None:
        # A deliberate dial after a failure: lift libp2p's 60 s negative cache, or a peer that
        # restarted within the minute could not be reached (our own backoff bounds the rate).
        allow_redial(self.host, peer)
        with trio.move_on_after(self.connect_timeout):
            try:
                return await self.host.new_stream(peer, [self.protocol])  # type: ignore[list-item]
            except Exception as exc:
                log.debug("no %s stream to %s: %r", self.protocol, peer, exc)
        self.counters["dial_failures"] += 1
        return None

    async def _write(self, peer: ID, stream: INetStream, data: bytes) -> bool:
        started = time.perf_counter()
        outcome = await shielded_write(self.host, stream, peer, (data,), timeout=self.write_timeout)
        if outcome is not WriteOutcome.OK:
            return False
        self.counters["bytes_sent"] += len(data)
        if self.on_write is not None:
            self.on_write(len(data), time.perf_counter() - started)
        return True

    # -- inbound -------------------------------------------------------------------------------

    async def _serve(self, stream: INetStream) -> None:
        sender = stream.muxed_conn.peer_id.to_bytes()
        if sender in self._opened_by or len(self._opened_by) < MAX_PEERS_REMEMBERED:
            self._opened_by[sender] = trio.current_time()
        buf = bytearray()
        try:
            while True:
                try:
                    chunk = await stream.read(READ_CHUNK)
                except (StreamEOF, StreamReset):  # a peer that resets has ended too
                    return
                if not chunk:
                    return
                buf += chunk
                pos = 0
                while len(buf) - pos >= 4:
                    (n,) = _HEADER.unpack_from(buf, pos)
                    if n > self.max_packet:
                        self.counters["refused_oversized"] += 1
                        log.info(
                            "oversized %s packet (%d bytes) from %s", self.protocol, n, ID(sender)
                        )
                        return  # cannot resynchronise: drop the stream
                    if len(buf) - pos < 4 + n:
                        break
                    data = bytes(buf[pos + 4 : pos + 4 + n])
                    pos += 4 + n
                    self.counters["packets_received"] += 1
                    try:
                        self.on_packet(sender, data)
                    except Exception:
                        log.exception("%s packet handler failed", self.protocol)
                if pos:
                    del buf[:pos]
        finally:
            if self.on_stream_end is not None:
                try:
                    self.on_stream_end(sender)
                except Exception:
                    log.exception("%s stream-end handler failed", self.protocol)
            with trio.move_on_after(self.write_timeout, shield=True):
                with suppress(Exception):
                    await stream.reset()


__all__ = ["DatagramTransport"]
