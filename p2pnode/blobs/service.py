"""The blob service: store blobs, announce them, fetch them from whoever holds them.

Exchange protocol ``/p2pnode/blob/1.0.0`` (length-prefixed CBOR frames on reused streams, see
:mod:`p2pnode.network.rpc`): ``{"op": "manifest", "key": cid}`` and ``{"op": "chunk", "hash":
multihash}``; replies carry ``data``. A node answers only for what it holds.

Fetching: the manifest comes from any provider and must hash to the blob key; then every
missing chunk is requested, ``blobs.window`` at a time per provider, from all providers at
once, pulling from one shared queue so faster providers take more. Each chunk is checked
against its hash before it is written. A bad chunk, a timeout or a dropped stream puts the
chunk back in the queue and counts against that provider (after ``MAX_STRIKES`` it is left
out of this round). Chunks already on disk are never fetched again, so a fetch that stops
part-way resumes where it stopped; rounds repeat with backoff, re-finding providers, until
the blob is complete or ``blobs.fetch_timeout`` passes.

Resources: the fetching daemon holds at most ``window`` chunks per provider in memory; every
frame from the wire is bounded by the RPC service (one chunk plus headroom).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable
from typing import Any

import trio
from libp2p.abc import IHost
from libp2p.peer.id import ID

from p2pnode.blobs.store import BlobStat, BlobStore, Ingest
from p2pnode.config import Config
from p2pnode.network.dht import Dht
from p2pnode.network.host import allow_redial
from p2pnode.network.rpc import RpcError, RpcService
from protocols.blobs.cid import CidError, manifest_cid, parse_cid
from protocols.blobs.manifest import MAX_CHUNK_SIZE, MAX_MANIFEST_BYTES, Manifest, ManifestError

log = logging.getLogger(__name__)

PROTOCOL_ID = "/p2pnode/blob/1.0.0"
MAX_STRIKES = 3
MAX_BACKOFF = 2.0
GC_INTERVAL = 60.0


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
        self.rpc = RpcService(
            host,
            PROTOCOL_ID,
            self._handle,
            max_frame=max(MAX_CHUNK_SIZE, MAX_MANIFEST_BYTES) + 65536,
            max_inflight=cfg.blobs.window * 4,
            write_timeout=cfg.blobs.chunk_timeout,
        )
        self._fetching: dict[str, trio.Event] = {}
        self.served_chunks = 0
        self.fetched_chunks = 0
        self.bad_chunks = 0  # chunks a provider sent that did not match their hash

    async def run(self, *, task_status: trio.TaskStatus[BlobService] = trio.TASK_STATUS_IGNORED):
        async with trio.open_nursery() as nursery:
            await nursery.start(self.rpc.run)
            task_status.started(self)
            while True:
                await trio.sleep(GC_INTERVAL)
                self.store.collect(self.cfg.blobs.max_store_bytes)

    # -- serving -------------------------------------------------------------------------------

    async def _handle(self, peer: ID, frame: dict[str, Any]) -> dict[str, Any]:
        op = frame.get("op")
        if op == "manifest":
            key = frame.get("key")
            raw = self.store.manifest_bytes(key) if isinstance(key, str) else None
            if raw is None:
                return {"ok": False, "err": "not held"}
            return {"ok": True, "data": raw}
        if op == "chunk":
            mh = frame.get("hash")
            if not isinstance(mh, bytes) or not self.store.has_chunk(mh):
                return {"ok": False, "err": "not held"}
            try:
                data = await self.store.read_chunk(mh)
            except Exception as exc:
                return {"ok": False, "err": str(exc)}
            self.served_chunks += 1
            return {"ok": True, "data": data}
        return {"ok": False, "err": f"unknown op {op!r}"}

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

    async def _providers(self, key: str) -> list[ID]:
        found = await self.dht.find_providers(key, limit=20)
        out = []
        for pid_text, _ in found:
            if pid_text == self.dht.local_b58:
                continue
            try:
                out.append(ID.from_base58(pid_text))
            except Exception:
                continue
        return out

    async def _fetch(self, key: str) -> None:
        manifest = self.store.manifest(key)
        backoff = 0.1
        while True:
            providers = await self._providers(key)
            for peer in providers:
                allow_redial(self.host, peer)  # a provider may have restarted since it failed
            if manifest is None:
                manifest = await self._fetch_manifest(key, providers)
            if manifest is not None:
                missing = self.store.missing(manifest)
                if not missing:
                    break
                if providers:
                    await self._download(manifest, missing, providers)
                if not self.store.missing(manifest):
                    break
            await trio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)
        self.store.mark_complete(key)
        await self.dht.provide(key)
        self.store.collect(self.cfg.blobs.max_store_bytes)

    async def _fetch_manifest(self, key: str, providers: list[ID]) -> Manifest | None:
        for peer in providers:
            try:
                reply = await self.rpc.request(
                    peer, {"op": "manifest", "key": key}, self.cfg.blobs.chunk_timeout
                )
            except RpcError as exc:
                log.debug("manifest from %s: %s", peer, exc)
                continue
            data = reply.get("data")
            if not reply.get("ok") or not isinstance(data, bytes):
                continue
            if manifest_cid(data) != key:
                log.warning("peer %s sent a manifest that does not match %s", peer, key)
                continue
            try:
                return self.store.add_manifest(key, data, pinned=False)
            except ManifestError as exc:
                log.warning("peer %s sent a bad manifest for %s: %s", peer, key, exc)
        return None

    async def _download(self, manifest: Manifest, missing: list[int], providers: list[ID]) -> None:
        queue = deque(missing)
        refused: set[tuple[ID, int]] = set()  # (provider, chunk) pairs that went wrong

        async def lane(peer: ID, strikes: list[int]) -> None:
            passes = 0
            while queue and strikes[0] < MAX_STRIKES:
                index = queue.popleft()
                mh, size = manifest.chunks[index]
                if self.store.has_chunk(mh):
                    continue
                if (peer, index) in refused:
                    queue.append(index)
                    passes += 1
                    if passes > len(queue):
                        return  # only chunks this peer already failed are left
                    continue
                passes = 0
                try:
                    reply = await self.rpc.request(
                        peer, {"op": "chunk", "hash": mh}, self.cfg.blobs.chunk_timeout
                    )
                    data = reply.get("data")
                    if not reply.get("ok") or not isinstance(data, bytes):
                        log.info("%s does not have chunk %d: %s", peer, index, reply.get("err"))
                        ok = False
                    elif len(data) != size or not await self.store.put_verified_chunk(mh, data):
                        self.bad_chunks += 1
                        log.warning("%s sent a corrupt chunk %d (%s)", peer, index, mh.hex())
                        ok = False
                    else:
                        self.fetched_chunks += 1
                        ok = True
                except RpcError as exc:
                    log.info("chunk %d from %s failed: %s", index, peer, exc)
                    ok = False
                if not ok:
                    refused.add((peer, index))
                    queue.append(index)
                    strikes[0] += 1

        async with trio.open_nursery() as nursery:
            for peer in providers:
                strikes = [0]
                for _ in range(self.cfg.blobs.window):
                    nursery.start_soon(lane, peer, strikes)
