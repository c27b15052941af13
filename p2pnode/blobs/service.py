"""The blob service: store blobs, announce them, fetch them from whoever holds them.

One protocol, ``/p2pnode/blob/1.0.0`` (``p2pnode.blobs.wire``), one stream per provider and
fetch, kept for the next (``p2pnode.blobs.streams``): the fetcher asks for chunks by hash, in
batches, and the provider answers each with a small header and the chunk's raw bytes; a fetch
that lacks the manifest gets it and the blob's first chunks in one round trip. This module
composes the parts: the provider's side (``p2pnode.blobs.serving``), the fetcher's
(``p2pnode.blobs.fetcher``, which drives the sans-I/O plan of ``p2pnode_protocols.blobs.fetch``),
the kept streams, and the store's garbage collection.

Cancellation: ``run`` serves until cancelled; a fetch cancelled part-way keeps what it stored,
and the next fetch of the blob resumes there.

Errors: ``BlobError`` (a bad key, a bad blob), ``BlobNotFound`` (no provider found in
``blobs.find_timeout``, or the blob not complete after ``blobs.fetch_timeout``), ``NoSpace``
(the disk is full: a put releases the chunks it wrote; a fetch stops at the first chunk it cannot
store and drops what it stored unless the blob is pinned).

Resources: at most one fetch per blob at a time (later callers share it). The GC
(:meth:`BlobService.collect`, every ``GC_INTERVAL`` and after each put and fetch) deletes orphan
chunks, applies the quotas per kind (:mod:`p2pnode.blobs.policy`) and removes unpinned blobs
above ``blobs.max_store_bytes``; :meth:`BlobService.retire` applies the training retention policy.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any

import trio
from libp2p.abc import IHost

from p2pnode.blobs import policy
from p2pnode.blobs.errors import BlobError, BlobNotFound, NoSpace, check_key
from p2pnode.blobs.fetcher import Fetcher
from p2pnode.blobs.ingest import Ingest
from p2pnode.blobs.policy import Retired
from p2pnode.blobs.serving import BlobServer
from p2pnode.blobs.store import BlobStat, BlobStore
from p2pnode.blobs.streams import StreamCache
from p2pnode.blobs.wire import COALESCE_BELOW, COALESCE_DELAY, PROTOCOL_ID
from p2pnode.config import Config
from p2pnode.network.dht import Dht
from p2pnode.network.host import set_guarded_handler
from p2pnode_protocols.blobs.manifest import ManifestError

# Re-exported: the IPC layer imports the errors from here, the blob benchmark the read
# coalescing constants.
__all__ = [
    "COALESCE_BELOW",
    "COALESCE_DELAY",
    "BlobError",
    "BlobNotFound",
    "BlobService",
    "NoSpace",
    "check_key",
]

log = logging.getLogger(__name__)

GC_INTERVAL = 60.0


class BlobService:
    def __init__(self, host: IHost, dht: Dht, store: BlobStore, cfg: Config) -> None:
        self.host = host
        self.dht = dht
        self.store = store
        self.cfg = cfg
        self._fetching: dict[str, trio.Event] = {}
        self._fetch_started: dict[str, float] = {}  # key -> time.monotonic(), for transfers()
        self.streams = StreamCache()
        #: (seconds, ok, bytes fetched) of each fetch call, for the metrics
        self.observe_fetch: Callable[[float, bool, int], None] | None = None
        self.server = BlobServer(host, store, cfg)
        self.fetcher = Fetcher(host, dht, store, cfg, self.streams)
        self._background: trio.Nursery | None = None

    # Counters for `status` (the IPC layer reads them here).

    @property
    def served_chunks(self) -> int:
        return self.server.served_chunks

    @property
    def fetched_chunks(self) -> int:
        return self.fetcher.fetched_chunks

    @property
    def bad_chunks(self) -> int:
        """Chunks a provider sent that did not match their hash."""
        return self.fetcher.bad_chunks

    @property
    def streams_opened(self) -> int:
        """Batch streams this node opened to fetch (kept ones reused)."""
        return self.fetcher.streams_opened

    @property
    def provider_lookups(self) -> int:
        """Fetch rounds that asked the DHT (not local records)."""
        return self.fetcher.provider_lookups

    async def run(self, *, task_status: trio.TaskStatus[BlobService] = trio.TASK_STATUS_IGNORED):
        async with trio.open_nursery() as nursery:
            await nursery.start(self.store.writer.run)
            await nursery.start(self.store.reader.run)
            set_guarded_handler(self.host, PROTOCOL_ID, self.server.serve)
            self._background = nursery
            self.streams.attach(nursery)
            task_status.started(self)
            while True:
                await trio.sleep(GC_INTERVAL)
                try:
                    self.collect()
                except NoSpace as exc:  # the next round tries again
                    log.warning("garbage collection: %s", exc)
                self.streams.drop_stale()

    # -- garbage collection and policy -----------------------------------------------------------

    def quotas(self) -> dict[str, int]:
        b = self.cfg.blobs
        return {"model": b.max_model_bytes, "update": b.max_update_bytes, "user": b.max_user_bytes}

    def collect(self, *, protect: Collection[str] = (), orphans: bool = True) -> int:
        """One GC: orphan chunks, then the quotas per kind, then ``blobs.max_store_bytes``;
        the keys in ``protect`` (a blob being stored) are spared by the quotas. After a put or
        fetch, ``orphans=False`` skips the orphan scan (a pass over every chunk): orphans come
        only from ended uploads, which release theirs, and crashes, which start-up handles."""
        freed = self.store.collect_orphans() if orphans else 0
        freed += policy.enforce_quotas(self.store, self.quotas(), protect=protect)
        freed += self.store.collect(self.cfg.blobs.max_store_bytes)
        return freed

    def retire(self, job: str, committed_round: int, keep: Iterable[str] = ()) -> Retired:
        """Apply the retention policy after round ``committed_round`` of ``job`` was committed:
        keep the last ``blobs.keep_models`` models of the job and every key in ``keep``
        (models validators certified); remove the job's updates of rounds <=
        ``committed_round - blobs.keep_update_rounds``. Safe to call repeatedly."""
        return policy.retire(
            self.store,
            job,
            committed_round,
            keep,
            keep_models=self.cfg.blobs.keep_models,
            keep_update_rounds=self.cfg.blobs.keep_update_rounds,
        )

    def stats(self) -> dict[str, Any]:
        """Storage figures for ``status`` and ``blob.stats``."""
        return {
            "stored_bytes": self.store.bytes_stored,
            "max_store_bytes": self.cfg.blobs.max_store_bytes,
            "bytes_by_kind": policy.bytes_by_kind(self.store),
            "quotas": self.quotas(),
            "live_uploads": len(self.store.ingests),
        }

    def transfers(self) -> list[dict[str, Any]]:
        """Fetches in flight, oldest first: key, labels, chunks held of chunks (0 of 0 until
        the manifest came), bytes and seconds since the fetch started."""
        now = time.monotonic()
        out = []
        for key, started in sorted(self._fetch_started.items(), key=lambda kv: kv[1]):
            stat = self.store.stat(key)
            out.append(
                {
                    "key": key,
                    "kind": stat.kind if stat else None,
                    "job": stat.job if stat else None,
                    "round": stat.round if stat else None,
                    "chunks": stat.chunks if stat else 0,
                    "local_chunks": stat.local_chunks if stat else 0,
                    "size": stat.size if stat else None,
                    "seconds": round(now - started, 3),
                }
            )
        return out

    # -- storing -------------------------------------------------------------------------------

    async def put(
        self,
        pieces: Iterable[bytes | memoryview],
        *,
        media_type: str,
        meta: dict[str, Any] | None = None,
        pin: bool = True,
        kind: str = "user",
        job: str | None = None,
        round: int | None = None,
        wait_announce: bool = True,
    ) -> tuple[BlobStat, int]:
        """Store ``pieces`` as one blob, labelled ``kind`` (user, model, update) and, for
        training, ``job`` and ``round``; announce it. NoSpace on a full disk, with the chunks
        written released. ``wait_announce=False`` returns before the DHT announcement (made in
        the background; the count returned is then 0): for a blob whose fetchers are told who
        holds it (``fetch(..., providers=)``), such as a training update."""
        _check_labels(kind, job, round)
        ingest = Ingest(self.store)
        try:
            await ingest.write_all(pieces)
        except BaseException:
            ingest.abort()
            raise
        return await self.commit(
            ingest,
            media_type=media_type,
            meta=meta,
            pin=pin,
            kind=kind,
            job=job,
            round=round,
            wait_announce=wait_announce,
        )

    async def commit(
        self,
        ingest: Ingest,
        *,
        media_type: str,
        meta: dict[str, Any] | None,
        pin: bool,
        kind: str = "user",
        job: str | None = None,
        round: int | None = None,
        wait_announce: bool = True,
    ) -> tuple[BlobStat, int]:
        """Make the bytes ``ingest`` took a blob (see :meth:`put`); the ingest ends either way."""
        try:
            key, _ = await ingest.finish(media_type=media_type, meta=meta, pinned=pin, kind=kind)
        except ManifestError as exc:
            raise BlobError(str(exc)) from None
        finally:
            ingest.abort()  # nothing, if the blob now names its chunks
        with self.store.guard(f"record blob {key}"):
            self.store.label(key, kind=kind, job=job, round=round)
            self.store.mark_complete(key)
        if wait_announce or self._background is None:
            announced = await self.dht.provide(key)
        else:
            announced = 0
            self._background.start_soon(self._announce, key)
        self.collect(protect={key}, orphans=False)
        stat = self.store.stat(key)
        assert stat is not None
        return stat, announced

    # -- fetching ------------------------------------------------------------------------------

    async def fetch(
        self,
        key: str,
        *,
        timeout: float | None = None,
        kind: str | None = None,
        job: str | None = None,
        round: int | None = None,
        providers: Sequence[bytes] = (),
    ) -> BlobStat:
        """Make the blob complete locally (fetching what is missing); return its stat.
        ``providers`` (peer ids) are asked first, before any DHT lookup answers.

        ``timeout`` (a caller's, checked by the IPC layer) replaces both ``blobs.fetch_timeout``
        and ``blobs.find_timeout``: the whole call, waiting for another caller's fetch of the
        same blob included, ends within it. ``kind``, ``job`` and ``round`` label the blob (as
        :meth:`put`), also one already stored. NoSpace when a chunk cannot be stored: the fetch
        stops there and, unless the blob is pinned, drops what it stored.
        """
        check_key(key)
        _check_labels(kind, job, round)
        started = trio.current_time()
        held = self.store.is_complete(key)
        try:
            stat = await self._fetch_labelled(key, timeout, kind, job, round, providers)
        except Exception:  # a cancelled fetch is the caller's choice, not a failure
            if self.observe_fetch is not None:
                self.observe_fetch(trio.current_time() - started, False, 0)
            raise
        if self.observe_fetch is not None:
            fetched = 0 if held else stat.size
            self.observe_fetch(trio.current_time() - started, True, fetched)
        return stat

    async def _fetch_labelled(
        self,
        key: str,
        timeout: float | None,
        kind: str | None,
        job: str | None,
        round: int | None,
        providers: Sequence[bytes],
    ) -> BlobStat:
        limit = self.cfg.blobs.fetch_timeout if timeout is None else timeout
        try:
            with trio.fail_after(limit):
                while key in self._fetching:  # one fetch per blob; later callers share it
                    await self._fetching[key].wait()
                if not self.store.is_complete(key):
                    done = self._fetching[key] = trio.Event()
                    self._fetch_started[key] = time.monotonic()
                    try:
                        await self._fetch(key, find_timeout=timeout, kind=kind, providers=providers)
                    except NoSpace:
                        self._release_partial(key)
                        raise
                    finally:
                        del self._fetching[key]
                        del self._fetch_started[key]
                        done.set()
        except trio.TooSlowError:
            stat = self.store.stat(key)
            if stat is None:
                raise BlobNotFound(
                    f"blob {key} not found within {limit:g} s (no provider sent its manifest)"
                ) from None
            raise BlobNotFound(
                f"blob {key} not complete after {limit:g} s "
                f"({stat.local_chunks}/{stat.chunks} chunks; a later fetch resumes)"
            ) from None
        with self.store.guard(f"record blob {key}"):
            self.store.label(key, kind=kind, job=job, round=round)
            self.store.touch(key)
        stat = self.store.stat(key)
        assert stat is not None
        return stat

    def _release_partial(self, key: str) -> None:
        """After a fetch failed for want of space: drop the incomplete blob's chunks, unless
        someone pinned it (then a later fetch resumes where this one stopped)."""
        stat = self.store.stat(key)
        if stat is None or stat.pinned or stat.complete:
            return
        with contextlib.suppress(NoSpace):
            freed = self.store.remove(key)
            log.info("fetch of %s stopped on a full disk; released %d bytes", key, freed)

    async def _fetch(
        self,
        key: str,
        *,
        find_timeout: float | None,
        kind: str | None,
        providers: Sequence[bytes] = (),
    ) -> None:
        await self.fetcher.fetch(key, find_timeout=find_timeout, providers=providers)
        with self.store.guard(f"record blob {key}"):
            if kind is not None:  # before the GC below, which applies the quotas by kind
                self.store.label(key, kind=kind, job=None, round=None)
            self.store.mark_complete(key)
        # The blob is whole here: the fetch returns now and the announcement (a DHT round trip
        # of 10-20 ms) follows in the background; the local provider record is already written.
        if self._background is None:
            await self._announce(key)
        else:
            self._background.start_soon(self._announce, key)
        self.collect(protect={key}, orphans=False)

    async def _announce(self, key: str) -> None:
        try:
            await self.dht.provide(key)
        except Exception as exc:  # the periodic republish tries again
            log.info("announcing %s failed: %r", key, exc)


def _check_labels(kind: str | None, job: str | None, round: int | None) -> None:
    if kind is not None:
        try:
            policy.check_kind(kind)
        except ValueError as exc:
            raise BlobError(str(exc)) from None
    if job is not None and not (isinstance(job, str) and 0 < len(job) <= 256):
        raise BlobError("job must be a non-empty string of at most 256 characters")
    if round is not None and not (isinstance(round, int) and round >= 0):
        raise BlobError("round must be an integer >= 0")
