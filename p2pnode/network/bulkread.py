"""Bulk reads from a yamux stream: the frames as they arrived, never copied into one buffer.

py-libp2p 0.8.1 keeps each stream's received bytes in one ``bytearray``: every frame is copied
onto its end, and ``stream.read(n)`` copies ``n`` bytes off its front twice (a slice, then
``bytes()``) before deleting them. When a fast sender keeps a 16 MiB window full, that buffer
grows by reallocation to 16 MiB and more, and on the fetching daemon the allocator's heap grew
by 50-70 MiB that it never gave back.

For a stream that moves bulk data, :func:`bulk_reader` swaps that ``bytearray`` for a
:class:`FrameBuffer`, which keeps the frames as the ``bytes`` objects py-libp2p made of them and
answers the few operations py-libp2p uses on its buffer the same way. :meth:`BulkReader.read`
takes every buffered frame at once, without a copy, and returns the window credit for them as
``stream.read`` would. At the stream's end states (closed, reset, connection going away) it
leaves the work to ``stream.read``, so EOF and reset surface exactly as py-libp2p reports them.
This reads private state of py-libp2p 0.8.1 (pinned exactly); for any other muxer
:func:`bulk_reader` returns None.
"""

from __future__ import annotations

from collections import deque

import trio
from libp2p.abc import INetStream
from libp2p.stream_muxer.yamux.yamux import YamuxStream

FALLBACK_READ = 1 << 20  # bytes asked of stream.read at the stream's end states

Part = bytes | memoryview


class FrameBuffer:
    """What py-libp2p's yamux does with a stream's ``bytearray`` buffer (``extend``, ``len``,
    ``bytes()``, ``clear``, ``[:n]`` and ``del [:n]``), over the received frames kept as they
    came. Only front slices are supported: that is all py-libp2p takes."""

    __slots__ = ("_parts", "_size")

    def __init__(self, initial: bytes | bytearray = b"") -> None:
        self._parts: deque[Part] = deque()
        self._size = 0
        self.extend(initial)

    def __len__(self) -> int:
        return self._size

    def extend(self, data: bytes | bytearray | memoryview) -> None:
        if len(data):
            self._parts.append(data if isinstance(data, bytes) else bytes(data))
            self._size += len(data)

    def __bytes__(self) -> bytes:
        return b"".join(self._parts)

    def clear(self) -> None:
        self._parts.clear()
        self._size = 0

    def __getitem__(self, key: slice) -> bytes:
        return b"".join(self._front(_front_length(key, self._size), remove=False))

    def __delitem__(self, key: slice) -> None:
        self._front(_front_length(key, self._size), remove=True)

    def take_all(self) -> list[Part]:
        """Every buffered part, in order; the buffer is then empty."""
        parts = list(self._parts)
        self.clear()
        return parts

    def _front(self, n: int, *, remove: bool) -> list[Part]:
        """The first ``n`` bytes (``n`` <= len) as parts, split by a view where they end inside
        a part; removed from the buffer if ``remove``."""
        out: list[Part] = []
        got = 0
        if remove:
            parts = self._parts
            while got < n:
                want = n - got
                if len(parts[0]) <= want:
                    out.append(parts.popleft())
                    got += len(out[-1])
                else:
                    view = memoryview(parts[0])
                    out.append(view[:want])
                    parts[0] = view[want:]
                    got = n
            self._size -= n
        else:
            for part in self._parts:
                if got >= n:
                    break
                want = n - got
                out.append(part if len(part) <= want else memoryview(part)[:want])
                got += min(len(part), want)
        return out


def _front_length(key: slice, size: int) -> int:
    if not isinstance(key, slice) or key.step not in (None, 1) or key.start not in (None, 0):
        raise TypeError("a FrameBuffer only slices from its front")
    return size if key.stop is None else max(0, min(key.stop, size))


def bulk_reader(stream: INetStream) -> BulkReader | None:
    """A reader for ``stream`` (its buffer swapped for a :class:`FrameBuffer`), or None when
    it is not a yamux stream of py-libp2p 0.8.1."""
    muxed = getattr(stream, "muxed_stream", None)
    if type(muxed) is not YamuxStream:
        return None
    buffers = muxed.conn.stream_buffers
    current = buffers.get(muxed.stream_id)
    if isinstance(current, FrameBuffer):
        return BulkReader(stream, muxed)
    if not isinstance(current, bytearray):
        return None  # already gone (the stream ended), or not the buffer we know
    # No await between the read of the old buffer and the swap: no frame can slip in.
    buffers[muxed.stream_id] = FrameBuffer(current)
    return BulkReader(stream, muxed)


class BulkReader:
    """Reads one yamux stream whose buffer is a :class:`FrameBuffer`. One task at a time."""

    __slots__ = ("_muxed", "_stream")

    def __init__(self, stream: INetStream, muxed: YamuxStream) -> None:
        self._stream = stream
        self._muxed = muxed

    async def read(self) -> list[Part]:
        """At least one byte, as the frames it arrived in: all the stream has received and not
        yet been read. Raises as ``stream.read`` does at the end of the stream."""
        muxed = self._muxed
        conn = muxed.conn
        sid = muxed.stream_id
        while True:
            async with conn.streams_lock:
                buffer = conn.stream_buffers.get(sid)
                usable = (
                    isinstance(buffer, FrameBuffer)
                    and sid in conn.streams
                    and not (muxed.recv_closed or muxed.closed or muxed.reset_received)
                    and not conn.event_shutting_down.is_set()
                )
                parts = buffer.take_all() if usable and buffer else []  # type: ignore[union-attr]
                event = conn.stream_events.get(sid)
            if not usable or event is None:
                return [await self._stream.read(FALLBACK_READ)]
            if parts:
                got = sum(len(p) for p in parts)
                await muxed._auto_tune_and_send_window_update(bytes_read=got)
                return parts
            await event.wait()
            # As py-libp2p's own reader does: a fresh event for the next wait, then look again.
            if conn.stream_events.get(sid) is event:
                conn.stream_events[sid] = trio.Event()
