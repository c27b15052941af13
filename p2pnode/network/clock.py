"""Clock offset against a peer: ``/p2pnode/time/1.0.0``, for ``p2pnode doctor``.

The asker sends 8 bytes (its send time, which the answer ignores) and the peer answers with its
own Unix time as an 8-byte big-endian double. With t0 and t1 the asker's clock before and after,
the offset is ``peer_time - (t0 + t1) / 2``, good to within half the round trip, which is
reported beside it (NTP's estimate, one sample). Both directions read exactly 8 bytes within a
timeout and then close: a peer cannot hold the stream or send more.
"""

from __future__ import annotations

import math
import struct
import time
from contextlib import suppress

import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID

from p2pnode.network.host import guarded

TIME_PROTOCOL = TProtocol("/p2pnode/time/1.0.0")
_STAMP = struct.Struct(">d")
TIMEOUT = 5.0


async def _read_exactly(stream: INetStream, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = await stream.read(n - len(data))
        if not chunk:
            raise EOFError(f"stream closed after {len(data)} of {n} bytes")
        data += chunk
    return data


async def _answer(stream: INetStream) -> None:
    try:
        with trio.fail_after(TIMEOUT):
            await _read_exactly(stream, _STAMP.size)
            await stream.write(_STAMP.pack(time.time()))
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(TIMEOUT), suppress(Exception):
            await stream.close()


def install_clock(host: IHost) -> None:
    """Answer other nodes' clock questions."""
    host.set_stream_handler(TIME_PROTOCOL, guarded("time", _answer))


async def clock_offset(host: IHost, peer: ID, *, timeout: float = TIMEOUT) -> tuple[float, float]:
    """(offset, round trip) in seconds: how far ``peer``'s clock is ahead of ours. Raises on a
    transport error, a timeout or an answer that is not a finite time."""
    with trio.fail_after(timeout):
        stream = await host.new_stream(peer, [TIME_PROTOCOL])
        try:
            t0 = time.time()
            await stream.write(_STAMP.pack(t0))
            (theirs,) = _STAMP.unpack(await _read_exactly(stream, _STAMP.size))
            t1 = time.time()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(1), suppress(Exception):
                await stream.close()
    if not math.isfinite(theirs):
        raise ValueError("the peer's time is not a finite number")
    return theirs - (t0 + t1) / 2, t1 - t0


__all__ = ["TIME_PROTOCOL", "clock_offset", "install_clock"]
