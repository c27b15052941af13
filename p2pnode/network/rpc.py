"""Request/response over long-lived, multiplexed libp2p streams.

py-libp2p's ``request_response`` opens a stream per request (about 22 ms a round trip on
loopback) and its KadDHT resets inbound streams beyond 12 at once. Here each peer pair keeps
one outbound stream per direction; requests carry ids, responses come back in any order, and a
reader task routes them. A round trip costs one yamux frame each way (about 1 ms).

Cancellation: a caller's timeout never interrupts a write in progress (the field guide saw a
cancelled ``write()`` corrupt the shared Noise session). Writes run shielded under their own
deadline; a write that misses it marks the connection poisoned and we disconnect the peer,
which the next request redials.

Errors: :class:`RpcError` for anything that went wrong with one request (timeout, stream lost,
the peer's own error reply). Inbound frames that do not parse are answered with an error and
counted against the peer; they never reach the handler.

Resources: at most ``max_inflight`` requests are served at once per inbound stream; the reader
stops reading while they are all busy, so a flood queues in flow control instead of being
dropped or spawning unbounded tasks.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Any

import trio
from libp2p.abc import IHost, INetStream
from libp2p.network.stream.exceptions import StreamEOF, StreamReset
from libp2p.peer.id import ID

from p2pnode.network.host import WriteOutcome, set_guarded_handler, shielded_write
from p2pnode_protocols.framing import FrameDecoder, FrameError, MalformedFrame, encode_frame_parts

log = logging.getLogger(__name__)

READ_CHUNK = 1 << 20  # yamux returns what is buffered, up to this
SPLIT_WRITE_ABOVE = 1 << 16
# Handler: (remote peer, request frame) -> response frame without the id.
Handler = Callable[[ID, dict[str, Any]], Awaitable[dict[str, Any]]]


class RpcError(Exception):
    """One request failed: timed out, lost its stream, or the peer answered with an error."""


class _Waiter:
    __slots__ = ("event", "frame")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.frame: dict[str, Any] | None = None


class _Channel:
    """Our outbound stream to one peer and the requests waiting on it."""

    def __init__(self, peer: ID, stream: INetStream) -> None:
        self.peer = peer
        self.stream = stream
        self.write_lock = trio.Lock()
        self.waiting: dict[int, _Waiter] = {}
        self.closed = False

    def fail_all(self) -> None:
        self.closed = True
        for waiter in self.waiting.values():
            waiter.event.set()  # frame stays None: the caller sees a lost stream
        self.waiting.clear()


async def _read_frames(stream: INetStream, decoder: FrameDecoder):  # type: ignore[no-untyped-def]
    """Yield decoded frames until EOF. Raises FrameError on bad framing."""
    while True:
        while True:
            try:
                frame = decoder.next_frame()
            except MalformedFrame as exc:
                yield exc  # in sync: the caller answers and goes on
                continue
            if frame is None:
                break
            yield frame
        try:
            data = await stream.read(READ_CHUNK)
        except (StreamEOF, StreamReset):  # a reset peer has ended: no warning
            data = b""
        decoder.receive_data(data)
        if not data:
            if decoder.buffered:
                decoder.next_body()  # raises FrameError: truncated frame
            return


def _wire(frame: dict[str, Any], max_frame: int | None) -> tuple[bytes, ...]:
    """A frame as buffers to write: joined when small, header and body apart when large
    (joining a 1 MiB chunk would copy it once more for nothing)."""
    header, body = encode_frame_parts(frame, max_frame=max_frame)
    if len(body) < SPLIT_WRITE_ABOVE:
        return (header + body,)
    return (header, body)


class RpcService:
    """Serve ``protocol`` with ``handler`` and send requests to peers over the same protocol."""

    def __init__(
        self,
        host: IHost,
        protocol: str,
        handler: Handler,
        *,
        max_frame: int,
        max_inflight: int,
        write_timeout: float,
        on_bad_frame: Callable[[ID, str], None] | None = None,
    ) -> None:
        self.host = host
        self.protocol = protocol
        self.handler = handler
        self.max_frame = max_frame
        self.max_inflight = max_inflight
        self.write_timeout = write_timeout
        self.on_bad_frame = on_bad_frame
        self._channels: dict[ID, _Channel] = {}
        self._opening: dict[ID, trio.Lock] = {}
        self._ids = itertools.count(1)
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[RpcService] = trio.TASK_STATUS_IGNORED):
        """Register the handler and own the outbound reader tasks until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            set_guarded_handler(self.host, self.protocol, self._serve_stream)
            task_status.started(self)
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None
                for channel in list(self._channels.values()):
                    channel.fail_all()
                self._channels.clear()

    # -- outbound ------------------------------------------------------------------------------

    async def request(self, peer: ID, frame: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Send one request and wait for its response frame (with ``id`` removed)."""
        with trio.move_on_after(timeout) as scope:
            channel = await self._channel(peer)
            rid = next(self._ids)
            waiter = _Waiter()
            channel.waiting[rid] = waiter
            try:
                await self._write(channel, {**frame, "id": rid})
                await waiter.event.wait()
            finally:
                channel.waiting.pop(rid, None)
            if waiter.frame is None:
                raise RpcError(f"stream to {peer} closed before the reply")
            return waiter.frame
        assert scope.cancelled_caught
        raise RpcError(f"no reply from {peer} within {timeout:g} s")

    async def _channel(self, peer: ID) -> _Channel:
        channel = self._channels.get(peer)
        if channel is not None and not channel.closed:
            return channel
        lock = self._opening.setdefault(peer, trio.Lock())
        async with lock:
            channel = self._channels.get(peer)
            if channel is not None and not channel.closed:
                return channel
            if self._nursery is None:
                raise RpcError("RPC service is not running")
            try:
                stream = await self.host.new_stream(peer, [self.protocol])  # type: ignore[list-item]
            except Exception as exc:
                raise RpcError(f"cannot open a stream to {peer}: {exc}") from None
            channel = _Channel(peer, stream)
            self._channels[peer] = channel
            self._nursery.start_soon(self._read_replies, channel)
            return channel

    async def _write(self, channel: _Channel, frame: dict[str, Any]) -> None:
        data = _wire(frame, self.max_frame)
        async with channel.write_lock:
            if channel.closed:
                raise RpcError(f"stream to {channel.peer} is closed")
            await self._shielded_write(channel.stream, channel.peer, data)

    async def _shielded_write(self, stream: INetStream, peer: ID, data: tuple[bytes, ...]) -> None:
        outcome = await shielded_write(self.host, stream, peer, data, timeout=self.write_timeout)
        if outcome is not WriteOutcome.OK:
            # A failed or torn write leaves the stream unusable: later requests reopen it.
            self._drop(peer)
            raise RpcError(f"write to {peer} {outcome.value}")

    def _drop(self, peer: ID) -> None:
        channel = self._channels.pop(peer, None)
        if channel is not None:
            channel.fail_all()

    async def _read_replies(self, channel: _Channel) -> None:
        decoder = FrameDecoder(self.max_frame)
        try:
            async for item in _read_frames(channel.stream, decoder):
                if isinstance(item, MalformedFrame):
                    log.warning("bad reply frame from %s: %s", channel.peer, item)
                    continue
                rid = item.pop("id", None)
                waiter = channel.waiting.get(rid) if isinstance(rid, int) else None
                if waiter is not None:
                    waiter.frame = item
                    waiter.event.set()
        except FrameError as exc:
            log.warning("reply stream from %s broke: %s", channel.peer, exc)
        except Exception as exc:
            log.debug("reply stream from %s ended: %r", channel.peer, exc)
        finally:
            if self._channels.get(channel.peer) is channel:
                del self._channels[channel.peer]
            channel.fail_all()
            with suppress(Exception):
                await channel.stream.reset()

    # -- inbound -------------------------------------------------------------------------------

    async def _serve_stream(self, stream: INetStream) -> None:
        peer: ID = stream.muxed_conn.peer_id
        decoder = FrameDecoder(self.max_frame)
        write_lock = trio.Lock()
        limit = trio.Semaphore(self.max_inflight)

        async def reply(frame: dict[str, Any]) -> None:
            async with write_lock:
                await self._shielded_write(stream, peer, _wire(frame, None))

        async def serve_one(request: dict[str, Any]) -> None:
            rid = request.get("id")
            try:
                try:
                    response = await self.handler(peer, request)
                except Exception as exc:  # a handler bug must not kill the stream
                    log.exception("handler error for %s", peer)
                    response = {"ok": False, "err": f"internal error: {type(exc).__name__}"}
                await reply({**response, "id": rid if isinstance(rid, int) else 0})
            except RpcError:
                pass
            finally:
                limit.release()

        try:
            async with trio.open_nursery() as nursery:
                try:
                    async for item in _read_frames(stream, decoder):
                        if isinstance(item, MalformedFrame):
                            self._bad(peer, str(item))
                            await reply({"id": 0, "ok": False, "err": f"bad frame: {item}"})
                            continue
                        await limit.acquire()  # backpressure: stop reading while saturated
                        nursery.start_soon(serve_one, item)
                except FrameError as exc:
                    self._bad(peer, str(exc))
                    with suppress(RpcError):
                        await reply({"id": 0, "ok": False, "err": str(exc)})
        finally:
            with suppress(Exception):
                await stream.reset()

    def _bad(self, peer: ID, reason: str) -> None:
        log.info("bad RPC frame from %s: %s", peer, reason)
        if self.on_bad_frame is not None:
            self.on_bad_frame(peer, reason)
