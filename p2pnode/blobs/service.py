"""The blob service: store blobs, announce them, fetch them from whoever holds them.

One protocol, ``/p2pnode/blob/1.0.0``, one stream per provider and fetch (kept for the next):
the fetcher sends ``{"hashes": [...]}`` (at most ``MAX_BATCH``) and the provider answers every
hash, in order, with a header frame ``{"hash", "size"}`` (size 0: not held) followed by that
many raw bytes, then waits for the next request on the same stream. A fetch that lacks the
manifest opens with ``{"key", "first": n}``: the provider answers ``{"key", "size"}`` and the
manifest's bytes (size 0: not held, nothing follows), then the blob's first n chunks as above,
so the manifest and the first chunks cost one round trip. The data path costs what a plain
stream costs, plus the hash check and the chunk write. A node serves only what it holds, at
most ``blobs.max_upload_rate`` MiB/s over all peers.

Fetching: providers are taken as the DHT lookup finds them (or, in a first round, from the
provider records this node holds as a replica, without a lookup); the manifest comes from the
first that has it, its first chunks right behind it, and must hash to the blob key; then the
missing chunks are taken from one shared queue, ``blobs.window`` per batch, by one lane per
provider that keeps ``PIPELINE`` batches asked for on its stream, up to ``MAX_SOURCES``
providers at once, so faster providers take more; a finished stream is kept ``KEEP_FOR`` seconds
for the next fetch from that provider. Each chunk is gathered into a page-aligned staging buffer
and checked against its hash on a worker thread, while the next chunks arrive, before it is
written from that buffer. A bad chunk, a timeout or a dropped stream puts the chunk back in the
queue, bars that provider from that chunk, and counts a strike (after ``MAX_STRIKES`` the
provider sits out the round). Chunks already on disk are never fetched again, so a fetch that
stops part-way resumes where it stopped; rounds repeat with backoff, re-finding providers, until
the blob is complete or ``blobs.fetch_timeout`` passes (``blobs.find_timeout`` if no provider is
ever found).

Resources: per lane at most ``VERIFY_AHEAD`` received chunks (each in its staging buffer) wait
for their hash check and yamux holds at most its receive window (16 MiB) of frames beyond
them; a provider holds at most ``READ_AHEAD`` chunks read ahead per stream
and ends a stream idle for ``SERVE_IDLE``; every header is bounded before it is buffered, and a
manifest's size is bounded by ``MAX_MANIFEST_BYTES`` and a chunk's must match the manifest
before their bytes are read.
"""

from __future__ import annotations

import logging
import math
import random
from collections import deque
from collections.abc import Iterable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import trio
from libp2p.abc import IHost, INetStream
from libp2p.network.stream.exceptions import StreamEOF
from libp2p.peer.id import ID

from p2pnode.blobs.chunkio import StagingBuffer
from p2pnode.blobs.store import BlobStat, BlobStore, Ingest
from p2pnode.config import Config
from p2pnode.network.bulkread import bulk_reader
from p2pnode.network.bulkwrite import BulkWriter, bulk_writer
from p2pnode.network.dht import Dht
from p2pnode.network.host import (
    PieceCutter,
    WriteOutcome,
    allow_redial,
    set_guarded_handler,
    shielded_write,
)
from p2pnode.network.ratelimit import Pacer
from protocols.blobs.cid import CidError, manifest_cid, parse_cid
from protocols.blobs.manifest import (
    MAX_MANIFEST_BYTES,
    Manifest,
    ManifestError,
    decode_manifest,
)
from protocols.framing import FrameDecoder, FrameError, encode_frame

log = logging.getLogger(__name__)

# One stream per provider carries a fetch. The fetcher sends {"hashes": [...]}, the provider
# answers each hash with a header frame {"hash", "size"} (size 0: not held) followed by that
# many raw bytes, back to back; then the fetcher may send the next batch. A fetch that lacks
# the manifest opens with {"key", "first": n} instead: the provider answers {"key", "size"} and
# the manifest's bytes (size 0: not held, and nothing follows), then the blob's first n chunks
# as for their hashes, so the manifest and the first chunks cost one round trip. No per-chunk
# request round trip, no CBOR around the data.
PROTOCOL_ID = "/p2pnode/blob/1.0.0"
MAX_BATCH = 64
MAX_BATCH_REQUEST = 64 + MAX_BATCH * 40
MAX_HEADER = 256
# Batches asked for ahead on a provider's one stream. One stream kept full costs less CPU per
# MiB at both ends than two streams taking turns (the yamux write lock, twice the wakeups):
# 256 MiB on this 2-core VM, provider 2.4 -> 1.9-2.2 ms/MiB, fetcher's event loop 3.1 -> 2.7.
PIPELINE = 3
# Providers fetched from at once. Each stream may buffer up to yamux's 16 MiB window while our
# chunk checks lag, so this bounds a fetch's memory as well as its connections.
MAX_SOURCES = 6
MAX_PROVIDERS = 20  # providers a round's lookup looks for
# Chunks hashed and written (by one thread) while the next ones arrive. Two: a fetch's last
# chunks then wait less for the thread, and the lane leaves the rest in yamux, which reads more
# efficiently with a backlog (alternating rounds, medians: 64 MiB 372 MiB/s with 2, 351 with 4;
# 256 MiB 377 and 363; with 8, 256 MiB fell to 306 against 384).
VERIFY_AHEAD = 2
MAX_SPARE_STAGING = 4 * VERIFY_AHEAD  # staging buffers kept between lanes (1 MiB each)
READ_AHEAD = 2  # chunks a provider reads from disk while an earlier one is sent
MAX_STRIKES = 3
# A fetcher keeps a finished batch stream for the next fetch from that provider: opening one
# (yamux SYN, multistream-select) was 5-8 ms of a 17 ms fetch of a small blob on loopback.
KEEP_STREAMS = 2  # idle batch streams kept per provider
KEEP_FOR = 20.0  # seconds an idle batch stream is kept
SERVE_IDLE = 60.0  # seconds a provider waits for the next batch on a stream (> KEEP_FOR)
MAX_BACKOFF = 2.0
GC_INTERVAL = 60.0
MiB = 1 << 20
READ_SIZE = MiB
# Read coalescing (see _Reader.exactly): half a millisecond holds ~200 KiB at 400 MiB/s.
COALESCE_BELOW = 256 << 10
COALESCE_DELAY = 0.0005
UPLOAD_BURST = 4 * MiB  # slack of the upload limit (blobs.max_upload_rate)


class BlobError(Exception):
    """A blob could not be stored or fetched; the message says why."""


class BlobNotFound(BlobError):
    """No provider answered for the blob within the fetch timeout."""


def check_key(key: str) -> None:
    try:
        parse_cid(key)
    except CidError as exc:
        raise BlobError(str(exc)) from None


class BlobService:
    def __init__(self, host: IHost, dht: Dht, store: BlobStore, cfg: Config) -> None:
        self.host = host
        self.dht = dht
        self.store = store
        self.cfg = cfg
        self._fetching: dict[str, trio.Event] = {}
        self._kept: dict[ID, list[tuple[INetStream, _Reader, float]]] = {}  # idle batch streams
        # Staging buffers lanes are not using, kept for the next: a new one's megabyte of pages
        # is faulted in on first use, and fresh pages are dear (docs/blobs.md).
        self._spare_staging: list[StagingBuffer] = []
        rate = cfg.blobs.max_upload_rate * MiB
        self._upload = Pacer(rate=rate, burst=UPLOAD_BURST) if rate > 0 else None
        self.served_chunks = 0
        self.fetched_chunks = 0
        self.bad_chunks = 0  # chunks a provider sent that did not match their hash
        self.streams_opened = 0  # batch streams this node opened to fetch (kept ones reused)
        self.provider_lookups = 0  # fetch rounds that asked the DHT (not local records)
        self._background: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[BlobService] = trio.TASK_STATUS_IGNORED):
        async with trio.open_nursery() as nursery:
            await nursery.start(self.store.writer.run)
            await nursery.start(self.store.reader.run)
            set_guarded_handler(self.host, PROTOCOL_ID, self._serve)
            self._background = nursery
            task_status.started(self)
            while True:
                await trio.sleep(GC_INTERVAL)
                self.store.collect(self.cfg.blobs.max_store_bytes)
                self._drop_stale_streams()

    # -- serving -------------------------------------------------------------------------------

    async def _serve(self, stream: INetStream) -> None:
        """Answer requests on one stream until the fetcher closes it. Chunks are read from disk
        up to ``READ_AHEAD`` ahead of the one being written, so the disk's latency hides behind
        the network's."""
        peer = stream.muxed_conn.peer_id
        # (header, bytes after it, whether they are a chunk)
        send, recv = trio.open_memory_channel[tuple[dict[str, Any], bytes, bool]](READ_AHEAD)

        async def read_ahead() -> None:
            async with send:
                reader = _Reader(
                    stream, self.cfg.blobs.chunk_timeout, MAX_BATCH_REQUEST, idle_timeout=SERVE_IDLE
                )
                while (frame := await reader.frame(idle_ok=True)) is not None:
                    if "key" in frame:
                        key, first = _manifest_request(frame)
                        raw = self.store.manifest_bytes(key) or b""
                        await send.send(({"key": key, "size": len(raw)}, raw, False))
                        chunks = decode_manifest(raw).chunks[:first] if raw else []
                        hashes = [mh for mh, _ in chunks]
                    else:
                        hashes = _batch_request(frame)
                    for mh in hashes:
                        data = await self._chunk_to_serve(mh)
                        await send.send(({"hash": mh, "size": len(data)}, data, True))

        # Chunks go out as one continuous run of full frames: a chunk's last few hundred bytes
        # wait for the next chunk's header when that chunk is already read, instead of
        # costing a short frame of their own (one Noise message per chunk fewer at both ends).
        cutter = PieceCutter()
        writer = bulk_writer(stream)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_ahead)
                async with recv:
                    async for head, data, is_chunk in recv:
                        if data and self._upload is not None:
                            wait = self._upload.reserve(len(data), trio.current_time())
                            if wait > 0:
                                await trio.sleep(wait)
                        header = encode_frame(head)
                        more = recv.statistics().current_buffer_used > 0
                        await self._write(
                            stream, peer, header, data, cutter=cutter, flush=not more, writer=writer
                        )
                        if data and is_chunk:
                            self.served_chunks += 1
        finally:
            with trio.move_on_after(self.cfg.blobs.chunk_timeout, shield=True):
                with suppress(Exception):
                    await stream.close()

    async def _chunk_to_serve(self, mh: object) -> bytes:
        """The chunk's bytes, or b"" when it is not held (or cannot be read)."""
        if not isinstance(mh, bytes) or not self.store.has_chunk(mh):
            return b""
        try:
            return await self.store.read_chunk(mh)
        except Exception as exc:
            log.info("cannot serve chunk %s: %s", mh.hex(), exc)
            return b""

    async def _write(
        self,
        stream: INetStream,
        peer: ID,
        *bufs: bytes,
        cutter: PieceCutter | None = None,
        flush: bool = True,
        writer: BulkWriter | None = None,
    ) -> None:
        outcome = await shielded_write(
            self.host,
            stream,
            peer,
            bufs,
            timeout=self.cfg.blobs.chunk_timeout,
            disconnect_timeout=self.cfg.network.connect_timeout,
            cutter=cutter,
            flush=flush,
            writer=writer,
        )
        if outcome is not WriteOutcome.OK:
            raise BlobError(f"write to {peer} {outcome.value}")

    # -- storing -------------------------------------------------------------------------------

    async def put(
        self,
        pieces: Iterable[bytes | memoryview],
        *,
        media_type: str,
        meta: dict[str, Any] | None = None,
        pin: bool = True,
    ) -> tuple[BlobStat, int]:
        ingest = Ingest(self.store)
        await ingest.write_all(pieces)
        return await self.commit(ingest, media_type=media_type, meta=meta, pin=pin)

    async def commit(
        self, ingest: Ingest, *, media_type: str, meta: dict[str, Any] | None, pin: bool
    ) -> tuple[BlobStat, int]:
        try:
            key, _ = await ingest.finish(media_type=media_type, meta=meta, pinned=pin)
        except ManifestError as exc:
            raise BlobError(str(exc)) from None
        self.store.mark_complete(key)
        announced = await self.dht.provide(key)
        self.store.collect(self.cfg.blobs.max_store_bytes)
        stat = self.store.stat(key)
        assert stat is not None
        return stat, announced

    # -- fetching ------------------------------------------------------------------------------

    async def fetch(self, key: str) -> BlobStat:
        """Make the blob complete locally (fetching what is missing); return its stat."""
        check_key(key)
        while key in self._fetching:  # one fetch per blob; later callers share it
            await self._fetching[key].wait()
        if not self.store.is_complete(key):
            done = self._fetching[key] = trio.Event()
            try:
                with trio.fail_after(self.cfg.blobs.fetch_timeout):
                    await self._fetch(key)
            except trio.TooSlowError:
                stat = self.store.stat(key)
                have = f"{stat.local_chunks}/{stat.chunks} chunks" if stat else "no manifest"
                raise BlobNotFound(
                    f"blob {key} not complete after {self.cfg.blobs.fetch_timeout:g} s ({have})"
                ) from None
            finally:
                del self._fetching[key]
                done.set()
        self.store.touch(key)
        stat = self.store.stat(key)
        assert stat is not None
        return stat

    async def _fetch(self, key: str) -> None:
        backoff = 0.1
        first = True
        give_up = trio.current_time() + self.cfg.blobs.find_timeout
        found_any = self.store.manifest(key) is not None
        while True:
            complete, found = await self._fetch_round(key, trust_local=first)
            if complete:
                break
            found_any = found_any or found
            if not found_any and trio.current_time() >= give_up:
                raise BlobNotFound(
                    f"no provider of {key} found within {self.cfg.blobs.find_timeout:g} s"
                )
            first = False
            await trio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)
        self.store.mark_complete(key)
        # The blob is whole here: the fetch returns now and the announcement (a DHT round trip
        # of 10-20 ms) follows in the background; the local provider record is already written.
        if self._background is None:
            await self._announce(key)
        else:
            self._background.start_soon(self._announce, key)
        self.store.collect(self.cfg.blobs.max_store_bytes)

    async def _fetch_round(self, key: str, *, trust_local: bool) -> tuple[bool, bool]:
        """Find providers and take what is missing from them, starting on each as the lookup
        finds it; returns whether the blob is complete and whether any provider was found.

        With ``trust_local``, provider records this node holds stand for the lookup: holding
        them makes it one of the replicas the providers announce to, so it knows what a lookup
        would learn from one (the lookup stops at the first replica that answers), and the
        lookup's requests would slow the fetch's start on a busy loop. Later rounds always
        look up: a provider may have come or gone."""
        send, recv = trio.open_memory_channel[ID](MAX_PROVIDERS)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._discover, key, send, trust_local)
            sources = _Sources(recv)
            manifest = self.store.manifest(key)
            opening = None
            if manifest is None:
                opening = await self._open_with_manifest(key, sources)
                manifest = opening.manifest if opening is not None else None
            if manifest is not None:
                asked = set(opening.batch) if opening is not None else set()
                missing = [i for i in self.store.missing(manifest) if i not in asked]
                if missing or opening is not None:
                    await self._download(manifest, missing, sources, opening)
            nursery.cancel_scope.cancel()  # the lookup, if it is still going
        complete = manifest is not None and not self.store.missing(manifest)
        return complete, bool(sources.peers)

    async def _discover(
        self, key: str, send: trio.MemorySendChannel[ID], trust_local: bool
    ) -> None:
        sent = 0

        def found(pid_text: str, _addrs: list[str]) -> None:
            nonlocal sent
            if pid_text == self.dht.local_b58:
                return
            try:
                peer = ID.from_base58(pid_text)
            except Exception:
                return
            allow_redial(self.host, peer)  # a provider may have restarted since it failed
            # At most MAX_PROVIDERS calls: the channel holds them all, nothing blocks.
            send.send_nowait(peer)
            sent += 1

        async with send:
            try:
                if trust_local:
                    for pid_text, addrs in self.dht.local_providers(key, MAX_PROVIDERS):
                        found(pid_text, addrs)
                    if sent:
                        return
                self.provider_lookups += 1
                await self.dht.find_providers(key, limit=MAX_PROVIDERS, found=found)
            except Exception as exc:  # as if no more were found; the next round looks again
                log.info("looking up providers of %s failed: %r", key, exc)

    async def _announce(self, key: str) -> None:
        try:
            await self.dht.provide(key)
        except Exception as exc:  # the periodic republish tries again
            log.info("announcing %s failed: %r", key, exc)

    async def _open_with_manifest(self, key: str, sources: _Sources) -> _Opening | None:
        """Ask the providers, in the order found, for the manifest and the blob's first chunks;
        the first whose manifest hashes to ``key`` is returned with the stream on which those
        chunks are arriving. A kept stream that fails is retried once on a fresh one (it may
        only have gone stale)."""
        first = self._batch_size()
        index = 0
        while (peer := await sources.get(index)) is not None:
            index += 1
            stream, reader = self._kept_stream(peer)
            retry = stream is not None
            while True:
                if stream is None:
                    stream, reader = await self._open_batch_stream(peer)
                    if stream is None:
                        break
                assert reader is not None
                try:
                    raw = await self._ask_manifest(stream, reader, peer, key, first)
                except trio.Cancelled:  # the fetch's deadline: the stream is not ours to keep
                    self._close_soon(stream)
                    raise
                except Exception as exc:  # ours (BlobError, FrameError, ...) or py-libp2p's
                    log.info("manifest from %s failed: %r", peer, exc)
                    with suppress(Exception):
                        await stream.reset()
                    stream = reader = None
                    if retry:
                        retry = False
                        continue
                    break
                if raw is None:  # not held there: nothing follows
                    if reader.decoder.buffered:
                        self._close_soon(stream)
                    else:
                        self._keep_stream(peer, stream, reader)
                    break
                manifest = self._accept_manifest(peer, key, raw)
                if manifest is None:
                    with suppress(Exception):
                        await stream.reset()
                    break
                batch = list(range(min(first, len(manifest.chunks))))
                return _Opening(peer, stream, reader, manifest, batch)
        return None

    async def _ask_manifest(
        self, stream: INetStream, reader: _Reader, peer: ID, key: str, first: int
    ) -> bytes | None:
        """The manifest's bytes (None: not held), asked for with the ``first`` chunks."""
        with trio.fail_after(self.cfg.blobs.chunk_timeout):
            await self._write(stream, peer, encode_frame({"key": key, "first": first}))
            header = await reader.frame()
            if header is None or header.get("key") != key:
                raise BlobError("reply out of order or cut short")
            size = header.get("size")
            if type(size) is not int or not 0 <= size <= MAX_MANIFEST_BYTES:
                raise BlobError(f"a manifest of {size!r} bytes announced")
            if size == 0:
                return None
            return b"".join(await reader.exactly(size))

    def _accept_manifest(self, peer: ID, key: str, raw: bytes) -> Manifest | None:
        if manifest_cid(raw) != key:
            log.warning("peer %s sent a manifest that does not match %s", peer, key)
            return None
        try:
            return self.store.add_manifest(key, raw, pinned=False)
        except ManifestError as exc:
            log.warning("peer %s sent a bad manifest for %s: %s", peer, key, exc)
            return None

    def _batch_size(self) -> int:
        return max(1, min(MAX_BATCH, self.cfg.blobs.window))

    async def _download(
        self,
        manifest: Manifest,
        missing: list[int],
        sources: _Sources,
        opening: _Opening | None = None,
    ) -> None:
        """Take the ``missing`` chunks (and those ``opening`` brings) from up to
        ``MAX_SOURCES`` providers, one lane each, started as the lookup finds them; returns
        when no lane is left and either nothing is left to take or the lookup has ended."""
        queue = deque(missing)
        refused: set[tuple[ID, int]] = set()  # (provider, chunk) pairs that went wrong
        batch_size = self._batch_size()

        async def lane(peer: ID, strikes: list[int], opening: _Opening | None) -> None:
            stream: INetStream | None = None
            reader: _Reader | None = None
            kept = False  # `stream` was kept from an earlier fetch (and may have gone stale)
            finished = False  # every batch asked for was read: the stream can be kept
            asked: deque[list[int]] = deque()  # batches asked for on `stream`, not yet read
            if opening is not None:  # its first chunks are on their way
                stream, reader = opening.stream, opening.reader
                if opening.batch:
                    asked.append(opening.batch)
            verify = trio.Semaphore(VERIFY_AHEAD)
            staging = self._staging_buffers(VERIFY_AHEAD)  # one per chunk in `verify`
            try:
                async with trio.open_nursery() as storing:
                    while strikes[0] < MAX_STRIKES:
                        # Keep PIPELINE batches asked for: the provider never waits for our
                        # next request, and one stream per provider stays full.
                        while len(asked) < PIPELINE and queue:
                            batch = self._take_batch(queue, peer, refused, batch_size)
                            if not batch:
                                break  # only chunks this peer already failed are left
                            asked.append(batch)
                            if stream is None:
                                stream, reader = self._kept_stream(peer)
                                kept = stream is not None
                            if stream is None:
                                stream, reader = await self._open_batch_stream(peer)
                                if stream is None:
                                    strikes[0] = MAX_STRIKES
                                    return
                            hashes = [manifest.chunks[i][0] for i in batch]
                            try:
                                await self._write(stream, peer, encode_frame({"hashes": hashes}))
                            except BlobError as exc:
                                log.info("batch request to %s failed: %r", peer, exc)
                                break  # the read below fails at once and takes the strike
                        if not asked:
                            finished = True
                            return
                        assert stream is not None and reader is not None
                        batch = asked.popleft()
                        job = _Batch(
                            peer, manifest, batch, refused, queue, storing, verify, staging
                        )
                        healthy, received = await self._read_batch(reader, job)
                        if not healthy:
                            if not (kept and received == 0):  # a stale kept stream is no strike
                                strikes[0] += 1
                            while asked:  # asked for but never read: back to the queue
                                queue.extend(asked.popleft())
                            with suppress(Exception):
                                await stream.reset()
                            stream = reader = None
            finally:
                # Every chunk task has ended with the nursery: all buffers are back.
                self._spare_staging.extend(staging[: MAX_SPARE_STAGING - len(self._spare_staging)])
                while asked:
                    queue.extend(asked.popleft())
                if stream is not None:
                    if finished and reader is not None and not reader.decoder.buffered:
                        self._keep_stream(peer, stream, reader)
                    else:
                        await _close_stream(stream)

        live = 0
        finding = trio.CancelScope()  # waiting for the next provider

        async def run_lane(peer: ID, opening: _Opening | None) -> None:
            nonlocal live
            try:
                await lane(peer, [0], opening)
            finally:
                live -= 1
                if not live and not queue:
                    finding.cancel()

        async with trio.open_nursery() as nursery:
            with finding:
                if opening is not None:
                    live += 1
                    nursery.start_soon(run_lane, opening.peer, opening)
                index = 0
                while live < MAX_SOURCES:
                    peer = await sources.get(index)
                    index += 1
                    if peer is None or not (live or queue):
                        break
                    if opening is None or peer != opening.peer:
                        live += 1
                        nursery.start_soon(run_lane, peer, None)

    def _staging_buffers(self, n: int) -> list[StagingBuffer]:
        spare = self._spare_staging
        taken = [spare.pop() for _ in range(min(n, len(spare)))]
        return taken + [StagingBuffer() for _ in range(n - len(taken))]

    def _kept_stream(self, peer: ID) -> tuple[INetStream, _Reader] | tuple[None, None]:
        """An idle batch stream to ``peer`` kept from an earlier fetch, if a fresh one is."""
        kept = self._kept.get(peer, [])
        now = trio.current_time()
        while kept:
            stream, reader, since = kept.pop()
            if now - since < KEEP_FOR:
                return stream, reader
            self._close_soon(stream)
        self._kept.pop(peer, None)
        return None, None

    def _keep_stream(self, peer: ID, stream: INetStream, reader: _Reader) -> None:
        kept = self._kept.setdefault(peer, [])
        if len(kept) < KEEP_STREAMS and self._background is not None:
            kept.append((stream, reader, trio.current_time()))
        else:
            self._close_soon(stream)

    def _drop_stale_streams(self) -> None:
        now = trio.current_time()
        for peer, kept in list(self._kept.items()):
            for entry in [e for e in kept if now - e[2] >= KEEP_FOR]:
                kept.remove(entry)
                self._close_soon(entry[0])
            if not kept:
                del self._kept[peer]

    def _close_soon(self, stream: INetStream) -> None:
        if self._background is not None:
            self._background.start_soon(_close_stream, stream)

    async def _open_batch_stream(self, peer: ID) -> tuple[INetStream, _Reader] | tuple[None, None]:
        """A new stream to ``peer`` and its reader (one per stream: a read may carry the next
        batch's bytes), or Nones if it cannot be opened."""
        self.streams_opened += 1
        try:
            with trio.fail_after(self.cfg.blobs.chunk_timeout):
                stream = await self.host.new_stream(peer, [PROTOCOL_ID])
        except Exception as exc:
            log.info("cannot open a blob stream to %s: %r", peer, exc)
            return None, None
        return stream, _Reader(stream, None, MAX_HEADER)

    @staticmethod
    def _take_batch(
        queue: deque[int], peer: ID, refused: set[tuple[ID, int]], size: int
    ) -> list[int]:
        batch: list[int] = []
        skipped: list[int] = []
        while queue and len(batch) < size:
            index = queue.popleft()
            (skipped if (peer, index) in refused else batch).append(index)
        queue.extend(skipped)
        return batch

    async def _store(self, job: _Batch, index: int, data: StagingBuffer) -> None:
        """Hash-check and write one received chunk (a task in the lane's nursery)."""
        mh, _ = job.manifest.chunks[index]
        try:
            if await self.store.put_verified_chunk(mh, data):
                self.fetched_chunks += 1
                return
            self.bad_chunks += 1
            log.warning("%s sent a corrupt chunk %d (%s)", job.peer, index, mh.hex())
            job.refused.add((job.peer, index))
            job.queue.append(index)
        except Exception as exc:  # our disk, not the peer: try the chunk again later
            log.warning("cannot store chunk %d (%s): %r", index, mh.hex(), exc)
            job.queue.append(index)
        finally:
            job.staging.append(data)
            job.verify.release()

    async def _read_batch(self, reader: _Reader, job: _Batch) -> tuple[bool, int]:
        """Read the answer to ``job.batch`` (already asked for); each chunk that arrives is
        checked and written by a task in the lane's nursery while the next one is read.
        Returns whether the stream is still sound (not if it broke or the peer sent something
        wrong) and how many chunks arrived; every chunk not received goes back in the queue,
        barred from this peer."""
        pending = list(job.batch)
        healthy = True
        try:
            for index in job.batch:
                mh, size = job.manifest.chunks[index]
                # One deadline per chunk, not per read: a chunk arrives in a dozen or more reads.
                with trio.fail_after(self.cfg.blobs.chunk_timeout):
                    header = await reader.frame()
                    if header is None or header.get("hash") != mh:
                        raise BlobError("reply out of order or cut short")
                    got = header.get("size")
                    if got == 0:
                        job.refused.add((job.peer, index))
                        job.queue.append(index)
                        pending.remove(index)
                        continue
                    if got != size:
                        raise BlobError(f"chunk {index}: {got!r} bytes announced, {size} expected")
                    parts = await reader.exactly(size)
                pending.remove(index)
                await job.verify.acquire()
                staged = job.staging.pop()
                staged.gather(parts)
                job.storing.start_soon(self._store, job, index, staged)
        except (BlobError, FrameError, trio.TooSlowError, OSError, EOFError) as exc:
            log.info("batch from %s failed: %r", job.peer, exc)
            healthy = False
        except Exception as exc:  # a stream error from py-libp2p: treat like a drop
            log.info("batch from %s broke: %r", job.peer, exc)
            healthy = False
        for index in pending:
            job.refused.add((job.peer, index))
            job.queue.append(index)
        return healthy, len(job.batch) - len(pending)


def _manifest_request(frame: dict[str, Any]) -> tuple[str, int]:
    key, first = frame.get("key"), frame.get("first", 0)
    if not isinstance(key, str) or type(first) is not int or not 0 <= first <= MAX_BATCH:
        raise BlobError(f"a manifest request names a key and 0 to {MAX_BATCH} first chunks")
    return key, first


def _batch_request(frame: dict[str, Any]) -> list[object]:
    hashes = frame.get("hashes")
    if not isinstance(hashes, list) or not 0 < len(hashes) <= MAX_BATCH:
        raise BlobError(f"a batch names 1 to {MAX_BATCH} chunk hashes")
    return hashes


async def _close_stream(stream: INetStream) -> None:
    with trio.move_on_after(1, shield=True), suppress(Exception):
        await stream.close()


class _Sources:
    """The providers a round's lookup has found so far, in the order found (each group that
    arrives at once shuffled, so rounds draw differently among equals)."""

    def __init__(self, found: trio.MemoryReceiveChannel[ID]) -> None:
        self._found = found
        self._ended = False
        self.peers: list[ID] = []

    async def get(self, index: int) -> ID | None:
        """The ``index``-th provider, waiting for the lookup to find it; None if it ends first."""
        while index >= len(self.peers) and not self._ended:
            group: list[ID] = []
            try:
                group.append(await self._found.receive())
                while True:
                    group.append(self._found.receive_nowait())
            except trio.WouldBlock:
                pass
            except trio.EndOfChannel:
                self._ended = True
            random.shuffle(group)
            self.peers.extend(group)
        return self.peers[index] if index < len(self.peers) else None


@dataclass(frozen=True, slots=True)
class _Opening:
    """A stream on which a provider sent the manifest and is sending the first chunks."""

    peer: ID
    stream: INetStream
    reader: _Reader
    manifest: Manifest
    batch: list[int]  # the chunks asked for with the manifest


@dataclass(frozen=True, slots=True)
class _Batch:
    """One batch being read, and where its chunks go."""

    peer: ID
    manifest: Manifest
    batch: list[int]
    refused: set[tuple[ID, int]]  # (provider, chunk) pairs that went wrong
    queue: deque[int]  # chunks still to fetch, shared by all lanes
    storing: trio.Nursery  # the lane's nursery, where chunks are checked and written
    verify: trio.Semaphore  # at most VERIFY_AHEAD chunks waiting for that
    staging: list[StagingBuffer]  # free buffers, one per free place in `verify`


class _Reader:
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
