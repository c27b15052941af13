"""Batch streams a fetcher keeps between fetches, per provider.

Opening a stream (yamux SYN, multistream-select) was 5-8 ms of a 17 ms fetch of a small blob on
loopback, so a fetch that ends with a stream in good order (every batch asked for was read)
keeps it ``KEEP_FOR`` seconds, at most ``KEEP_STREAMS`` per provider, for the next fetch from
that provider. Providers end a stream idle for ``SERVE_IDLE`` (longer), so a kept stream goes
stale only when its provider restarted; the fetcher finds out on its first read.

Resources: streams are closed (within a second, shielded) in the background nursery given to
``attach``; without one nothing is kept. ``drop_stale``, called now and then, closes those kept
too long.
"""

from __future__ import annotations

import trio
from libp2p.abc import INetStream
from libp2p.peer.id import ID

from p2pnode.blobs.wire import Reader, close_stream

KEEP_STREAMS = 2  # idle batch streams kept per provider
KEEP_FOR = 20.0  # seconds an idle batch stream is kept


class StreamCache:
    """Idle batch streams, each with its reader (a read may have carried more than its
    answer, so a stream is only ever read through one reader)."""

    def __init__(self) -> None:
        self._kept: dict[ID, list[tuple[INetStream, Reader, float]]] = {}
        self._background: trio.Nursery | None = None

    def attach(self, nursery: trio.Nursery) -> None:
        """Close streams in ``nursery`` from now on, and keep them."""
        self._background = nursery

    def take(self, peer: ID) -> tuple[INetStream, Reader] | tuple[None, None]:
        """An idle batch stream to ``peer`` kept from an earlier fetch, if a fresh one is."""
        kept = self._kept.get(peer, [])
        now = trio.current_time()
        while kept:
            stream, reader, since = kept.pop()
            if now - since < KEEP_FOR:
                return stream, reader
            self.close_soon(stream)
        self._kept.pop(peer, None)
        return None, None

    def keep(self, peer: ID, stream: INetStream, reader: Reader) -> None:
        """Keep ``stream`` (every answer asked for on it read) for the next fetch from
        ``peer``, or close it if ``peer`` has enough kept."""
        kept = self._kept.setdefault(peer, [])
        if len(kept) < KEEP_STREAMS and self._background is not None:
            kept.append((stream, reader, trio.current_time()))
        else:
            self.close_soon(stream)

    def drop_stale(self) -> None:
        """Close the streams kept ``KEEP_FOR`` or longer."""
        now = trio.current_time()
        for peer, kept in list(self._kept.items()):
            for entry in [e for e in kept if now - e[2] >= KEEP_FOR]:
                kept.remove(entry)
                self.close_soon(entry[0])
            if not kept:
                del self._kept[peer]

    def close_soon(self, stream: INetStream) -> None:
        """Close ``stream`` in the background (before ``attach`` there is no nursery to close
        it in: it is left to its connection)."""
        if self._background is not None:
            self._background.start_soon(close_stream, stream)
