"""The fetcher's side of ``/p2pnode/blob/1.0.0``: find a blob's providers and take from them
what this node lacks, driving the sans-I/O plan of ``p2pnode_protocols.blobs.fetch`` over the
network.

Providers are taken as the DHT lookup finds them (or, in a first round, from the provider
records this node holds as a replica, without a lookup); the manifest comes from the first that
has it, its first chunks right behind it, and must hash to the blob key; then the missing
chunks are taken from one shared queue, ``blobs.window`` per batch, by one lane per provider
that keeps ``PIPELINE`` batches asked for on its stream, up to ``MAX_SOURCES`` providers at
once (those two and ``MAX_STRIKES`` are the plan's), so faster providers take more; a finished
stream is kept (``p2pnode.blobs.streams``) for the next fetch from that provider. Each chunk is
gathered into a page-aligned staging buffer and checked against its hash on a worker thread,
while the next chunks arrive, before it is written from that buffer. A bad chunk, a timeout or
a dropped stream puts the chunk back in the queue, bars that provider from that chunk, and
counts a strike (after ``MAX_STRIKES`` the provider sits out the round). Rounds repeat with
backoff, re-finding providers, until the blob is complete (``blobs.fetch_timeout`` is the
caller's) or no provider is found for ``blobs.find_timeout``.

Resources: per lane at most ``VERIFY_AHEAD`` received chunks (each in its staging buffer) wait
for their hash check and yamux holds at most its receive window (16 MiB) of frames beyond
them; every header is bounded before it is buffered, and a manifest's size is bounded by
``MAX_MANIFEST_BYTES`` and a chunk's must match the manifest before their bytes are read.

Cancellation: a fetch cancelled mid-way leaves what it stored; streams it was reading are
closed, not kept.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass

import trio
from libp2p.abc import IHost, INetStream
from libp2p.peer.id import ID

from p2pnode.blobs.chunkio import StagingBuffer
from p2pnode.blobs.errors import BlobError, BlobNotFound, NoSpace
from p2pnode.blobs.ratelog import RateLimitedLog
from p2pnode.blobs.store import BlobStore
from p2pnode.blobs.streams import StreamCache
from p2pnode.blobs.wire import (
    MAX_BATCH,
    MAX_HEADER,
    PROTOCOL_ID,
    Reader,
    close_stream,
    write,
)
from p2pnode.config import Config
from p2pnode.network.dht import Dht
from p2pnode.network.host import allow_redial
from p2pnode_protocols.blobs.cid import manifest_cid
from p2pnode_protocols.blobs.fetch import Complete, FetchPlan, FetchRounds, Lane, NotFound
from p2pnode_protocols.blobs.manifest import MAX_MANIFEST_BYTES, Manifest, ManifestError
from p2pnode_protocols.framing import FrameError, encode_frame

log = logging.getLogger(__name__)

MAX_PROVIDERS = 20  # providers a round's lookup looks for
# Chunks hashed and written (by one thread) while the next ones arrive. Two: a fetch's last
# chunks then wait less for the thread, and the lane leaves the rest in yamux, which reads more
# efficiently with a backlog (alternating rounds, medians: 64 MiB 372 MiB/s with 2, 351 with 4;
# 256 MiB 377 and 363; with 8, 256 MiB fell to 306 against 384).
VERIFY_AHEAD = 2
MAX_SPARE_STAGING = 4 * VERIFY_AHEAD  # staging buffers kept between lanes (1 MiB each)


class Fetcher:
    """Fetches blobs into ``store`` from the providers ``dht`` names (``fetch``), keeping
    finished streams in ``streams``."""

    def __init__(
        self, host: IHost, dht: Dht, store: BlobStore, cfg: Config, streams: StreamCache
    ) -> None:
        self.host = host
        self.dht = dht
        self.store = store
        self.cfg = cfg
        self.streams = streams
        # Staging buffers lanes are not using, kept for the next: a new one's megabyte of pages
        # is faulted in on first use, and fresh pages are dear (docs/blobs.md).
        self._spare_staging: list[StagingBuffer] = []
        self.fetched_chunks = 0
        self.bad_chunks = 0  # chunks a provider sent that did not match their hash
        self.streams_opened = 0  # batch streams this node opened to fetch (kept ones reused)
        self.provider_lookups = 0  # fetch rounds that asked the DHT (not local records)
        self.warnings = RateLimitedLog(log)
        # Fetches under way: the scope that stops one, and the error that stopped it.
        self._running: dict[str, tuple[trio.CancelScope, list[BaseException]]] = {}

    def _stop(self, key: str, exc: BaseException) -> None:
        """End the fetch of ``key`` at once with ``exc`` (raised by :meth:`fetch`)."""
        running = self._running.get(key)
        if running is not None:
            running[1].append(exc)
            running[0].cancel()

    async def fetch(
        self, key: str, *, find_timeout: float | None = None, providers: Sequence[bytes] = ()
    ) -> None:
        """Rounds until every chunk of ``key`` is stored; BlobNotFound if no round finds a
        provider within ``find_timeout`` (default ``blobs.find_timeout``). The caller bounds
        the whole. ``providers`` are tried first in every round (a hint: the trainer that
        told us of its update holds it before its announcement reaches the DHT)."""
        scope = trio.CancelScope()
        stopped: list[BaseException] = []
        self._running[key] = (scope, stopped)
        try:
            with scope:
                await self._rounds(key, find_timeout, tuple(providers))
        finally:
            del self._running[key]
        if stopped:
            raise stopped[0]

    async def _rounds(
        self, key: str, find_timeout: float | None, hints: tuple[bytes, ...] = ()
    ) -> None:
        find_timeout = self.cfg.blobs.find_timeout if find_timeout is None else find_timeout
        rounds = FetchRounds(
            now=trio.current_time(),
            find_timeout=find_timeout,
            have_manifest=self.store.manifest(key) is not None,
        )
        while True:
            complete, found = await self._fetch_round(
                key, trust_local=rounds.trust_local, hints=hints
            )
            end = rounds.round_ended(complete=complete, found=found, now=trio.current_time())
            if isinstance(end, Complete):
                return
            if isinstance(end, NotFound):
                raise BlobNotFound(f"no provider of {key} found within {find_timeout:g} s")
            await trio.sleep(end.delay)

    async def _fetch_round(
        self, key: str, *, trust_local: bool, hints: tuple[bytes, ...] = ()
    ) -> tuple[bool, bool]:
        """Find providers and take what is missing from them, starting on each as the lookup
        finds it; returns whether the blob is complete and whether any provider was found.

        With ``trust_local``, provider records this node holds stand for the lookup: holding
        them makes it one of the replicas the providers announce to, so it knows what a lookup
        would learn from one (the lookup stops at the first replica that answers), and the
        lookup's requests would slow the fetch's start on a busy loop. Later rounds always
        look up: a provider may have come or gone."""
        send, recv = trio.open_memory_channel[ID](MAX_PROVIDERS)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._discover, key, send, trust_local, hints)
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
        self,
        key: str,
        send: trio.MemorySendChannel[ID],
        trust_local: bool,
        hints: tuple[bytes, ...] = (),
    ) -> None:
        sent = 0
        hinted: set[str] = set()

        def found(pid_text: str, _addrs: list[str]) -> None:
            nonlocal sent
            if pid_text == self.dht.local_b58 or sent >= MAX_PROVIDERS:
                return
            if pid_text in hinted and _addrs:
                return  # asked already as a hint
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
                for raw in hints[: MAX_PROVIDERS // 2]:
                    try:
                        text = ID(raw).to_base58()
                    except Exception:
                        continue
                    hinted.add(text)
                    found(text, [])
                if trust_local:
                    for pid_text, addrs in self.dht.local_providers(key, MAX_PROVIDERS):
                        found(pid_text, addrs)
                    if sent:
                        return
                self.provider_lookups += 1
                await self.dht.find_providers(key, limit=MAX_PROVIDERS, found=found)
            except Exception as exc:  # as if no more were found; the next round looks again
                log.info("looking up providers of %s failed: %r", key, exc)

    # -- the manifest ----------------------------------------------------------------------------

    async def _open_with_manifest(self, key: str, sources: _Sources) -> _Opening | None:
        """Ask the providers, in the order found, for the manifest and the blob's first chunks;
        the first whose manifest hashes to ``key`` is returned with the stream on which those
        chunks are arriving. A kept stream that fails is retried once on a fresh one (it may
        only have gone stale)."""
        first = self._batch_size()
        index = 0
        while (peer := await sources.get(index)) is not None:
            index += 1
            stream, reader = self.streams.take(peer)
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
                    self.streams.close_soon(stream)
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
                        self.streams.close_soon(stream)
                    else:
                        self.streams.keep(peer, stream, reader)
                    break
                try:
                    manifest = self._accept_manifest(peer, key, raw)
                except NoSpace as exc:  # the whole fetch stops (not a nursery's error group)
                    self.streams.close_soon(stream)
                    self._stop(key, exc)
                    return None
                if manifest is None:
                    with suppress(Exception):
                        await stream.reset()
                    break
                batch = list(range(min(first, len(manifest.chunks))))
                return _Opening(peer, stream, reader, manifest, batch)
        return None

    async def _ask_manifest(
        self, stream: INetStream, reader: Reader, peer: ID, key: str, first: int
    ) -> bytes | None:
        """The manifest's bytes (None: not held), asked for with the ``first`` chunks."""
        with trio.fail_after(self.cfg.blobs.chunk_timeout):
            await write(
                self.host, self.cfg, stream, peer, encode_frame({"key": key, "first": first})
            )
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
            with self.store.guard("record a manifest"):
                return self.store.add_manifest(key, raw, pinned=False)
        except ManifestError as exc:
            log.warning("peer %s sent a bad manifest for %s: %s", peer, key, exc)
            return None

    def _batch_size(self) -> int:
        return max(1, min(MAX_BATCH, self.cfg.blobs.window))

    # -- the chunks ------------------------------------------------------------------------------

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
        plan = FetchPlan[ID](missing, batch_size=self._batch_size())
        finding = trio.CancelScope()  # waiting for the next provider

        async def run_lane(lane: Lane[ID], opening: _Opening | None) -> None:
            try:
                await self._lane(lane, manifest, opening)
            finally:
                if plan.lane_ended(lane):
                    finding.cancel()

        async with trio.open_nursery() as nursery:
            with finding:
                if opening is not None:
                    lane = plan.add_lane(opening.peer, opening.batch)
                    assert lane is not None
                    nursery.start_soon(run_lane, lane, opening)
                index = 0
                while plan.wants_providers:
                    peer = await sources.get(index)
                    index += 1
                    if peer is None or plan.settled:
                        break
                    if (lane := plan.add_lane(peer)) is not None:
                        nursery.start_soon(run_lane, lane, None)

    async def _lane(self, lane: Lane[ID], manifest: Manifest, opening: _Opening | None) -> None:
        """Run ``lane`` on one stream to its provider (``opening``'s, if given, on which its
        first chunks are on their way), until it is done or struck out."""
        peer = lane.peer
        stream: INetStream | None = None
        reader: Reader | None = None
        kept = False  # `stream` was kept from an earlier fetch (and may have gone stale)
        finished = False  # every batch asked for was read: the stream can be kept
        if opening is not None:
            stream, reader = opening.stream, opening.reader
        verify = trio.Semaphore(VERIFY_AHEAD)
        staging = self._staging_buffers(VERIFY_AHEAD)  # one per chunk in `verify`
        try:
            async with trio.open_nursery() as storing:
                while lane.active:
                    # Keep PIPELINE batches asked for: the provider never waits for our next
                    # request, and one stream per provider stays full.
                    while (batch := lane.next_request()) is not None:
                        if stream is None:
                            stream, reader = self.streams.take(peer)
                            kept = stream is not None
                        if stream is None:
                            stream, reader = await self._open_batch_stream(peer)
                            if stream is None:
                                lane.open_failed()
                                return
                        hashes = [manifest.chunks[i][0] for i in batch]
                        try:
                            await write(
                                self.host, self.cfg, stream, peer, encode_frame({"hashes": hashes})
                            )
                        except BlobError as exc:
                            log.info("batch request to %s failed: %r", peer, exc)
                            break  # the read below fails at once and takes the strike
                    if (batch := lane.next_read()) is None:
                        finished = True
                        return
                    assert stream is not None and reader is not None
                    job = _Batch(lane, manifest, batch, storing, verify, staging)
                    if not await self._read_batch(reader, job):
                        lane.read_failed(maybe_stale=kept)
                        with suppress(Exception):
                            await stream.reset()
                        stream = reader = None
        finally:
            # Every chunk task has ended with the nursery: all buffers are back.
            self._spare_staging.extend(staging[: MAX_SPARE_STAGING - len(self._spare_staging)])
            lane.release()  # before any wait: another lane may take what this one held
            if stream is not None:
                if finished and reader is not None and not reader.decoder.buffered:
                    self.streams.keep(peer, stream, reader)
                else:
                    await close_stream(stream)

    def _staging_buffers(self, n: int) -> list[StagingBuffer]:
        spare = self._spare_staging
        taken = [spare.pop() for _ in range(min(n, len(spare)))]
        return taken + [StagingBuffer() for _ in range(n - len(taken))]

    async def _open_batch_stream(self, peer: ID) -> tuple[INetStream, Reader] | tuple[None, None]:
        """A new stream to ``peer`` and its reader (one per stream: a read may carry the next
        batch's bytes), or Nones if it cannot be opened."""
        self.streams_opened += 1
        try:
            with trio.fail_after(self.cfg.blobs.chunk_timeout):
                stream = await self.host.new_stream(peer, [PROTOCOL_ID])
        except Exception as exc:
            log.info("cannot open a blob stream to %s: %r", peer, exc)
            return None, None
        return stream, Reader(stream, None, MAX_HEADER)

    async def _store(self, job: _Batch, index: int, data: StagingBuffer) -> None:
        """Hash-check and write one received chunk (a task in the lane's nursery)."""
        mh, _ = job.manifest.chunks[index]
        try:
            if await self.store.put_verified_chunk(mh, data):
                self.fetched_chunks += 1
                return
            self.bad_chunks += 1
            self.warnings.warning(
                "corrupt", "%s sent a corrupt chunk %d (%s)", job.lane.peer, index, mh.hex()
            )
            job.lane.plan.bad_chunk(job.lane.peer, index)
        except NoSpace as exc:  # retrying cannot help: the whole fetch stops now
            self._stop(job.manifest.key, exc)
        except Exception as exc:  # our disk, not the peer: try the chunk again later
            self.warnings.warning("store", "cannot store chunk %d (%s): %r", index, mh.hex(), exc)
            job.lane.plan.store_failed(index)
        finally:
            job.staging.append(data)
            job.verify.release()

    async def _read_batch(self, reader: Reader, job: _Batch) -> bool:
        """Read the answer to ``job.batch`` (already asked for); each chunk that arrives is
        checked and written by a task in the lane's nursery while the next one is read.
        Returns whether the stream is still sound (not if it broke or the peer sent something
        wrong); the lane is told of each chunk that arrived or is not held."""
        lane = job.lane
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
                        lane.not_held(index)
                        continue
                    if got != size:
                        raise BlobError(f"chunk {index}: {got!r} bytes announced, {size} expected")
                    parts = await reader.exactly(size)
                lane.received(index)
                await job.verify.acquire()
                staged = job.staging.pop()
                staged.gather(parts)
                job.storing.start_soon(self._store, job, index, staged)
        except (BlobError, FrameError, trio.TooSlowError, OSError, EOFError) as exc:
            log.info("batch from %s failed: %r", lane.peer, exc)
            return False
        except Exception as exc:  # a stream error from py-libp2p: treat like a drop
            log.info("batch from %s broke: %r", lane.peer, exc)
            return False
        return True


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
    reader: Reader
    manifest: Manifest
    batch: list[int]  # the chunks asked for with the manifest


@dataclass(frozen=True, slots=True)
class _Batch:
    """One batch being read, and where its chunks go."""

    lane: Lane[ID]  # the provider's lane, told of each chunk
    manifest: Manifest
    batch: list[int]
    storing: trio.Nursery  # the lane's nursery, where chunks are checked and written
    verify: trio.Semaphore  # at most VERIFY_AHEAD chunks waiting for that
    staging: list[StagingBuffer]  # free buffers, one per free place in `verify`
