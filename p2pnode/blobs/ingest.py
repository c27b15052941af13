"""Building a blob from bytes that arrive in pieces (an upload, a file, a put's data).

An :class:`Ingest` is *live* from creation until :meth:`Ingest.finish` records its blob or
:meth:`Ingest.abort` ends it: the store counts a live ingest's chunks as held, so the orphan
collection (:meth:`p2pnode.blobs.store.BlobStore.collect_orphans`) leaves them alone, and an abort
deletes those no blob shares. A full disk raises :class:`~p2pnode.blobs.errors.NoSpace`; the
caller aborts the ingest, which releases what it wrote.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import trio

from p2pnode.blobs.store import BlobStore, chunk_hash
from p2pnode_protocols.blobs.manifest import CHUNK_SIZE, Manifest


class Ingest:
    """Builds a blob from bytes arriving in pieces: 1 MiB chunks hashed and written as they
    fill, so memory stays at one chunk whatever the blob's size."""

    def __init__(self, store: BlobStore) -> None:
        self.store = store
        self._buf = bytearray()
        self.chunks: list[tuple[bytes, int]] = []
        self.size = 0
        store.ingests.add(self)  # live: its chunks are not orphans until it ends

    def abort(self) -> int:
        """End without a blob: delete the chunks written that nothing else uses (safe to call
        twice, and after :meth:`finish`); returns bytes freed."""
        self._buf = bytearray()
        if self not in self.store.ingests:
            return 0
        self.store.ingests.discard(self)
        freed = self.store.collect_orphans(mh for mh, _ in self.chunks)
        self.chunks = []
        return freed

    async def write(self, data: bytes | memoryview) -> None:
        """Take ``data`` (not kept after this returns). Whole chunks inside it are hashed and
        written straight from it; only a chunk's head or tail is gathered in a buffer."""
        view = memoryview(data).cast("B")
        self.size += view.nbytes
        with self.store.guard("store a chunk"):
            await self._write(view)

    async def _write(self, view: memoryview) -> None:
        if self._buf:
            take = min(CHUNK_SIZE - len(self._buf), view.nbytes)
            self._buf += view[:take]
            view = view[take:]
            if len(self._buf) < CHUNK_SIZE:
                return
            piece = bytes(self._buf)
            self._buf.clear()
            await self._emit(piece)
        while view.nbytes >= CHUNK_SIZE:
            await self._emit(view[:CHUNK_SIZE])
            view = view[CHUNK_SIZE:]
        self._buf += view

    async def write_all(self, pieces: Iterable[bytes | memoryview]) -> None:
        for piece in pieces:
            await self.write(piece)

    async def _emit(self, piece: bytes | memoryview) -> None:
        store = self.store

        def work() -> tuple[bytes, bool]:  # hash and write in one hop to a worker thread
            mh = chunk_hash(piece)
            if store.has_chunk(mh):
                return mh, False
            store._write_file(mh, piece)
            return mh, True

        # Shielded: a chunk the thread writes is always recorded, and so held by this upload
        # (a client cut off mid-write would otherwise leave a file no row names).
        with trio.CancelScope(shield=True):
            mh, wrote = await store.writer.call(work)
            if not wrote and not store.has_chunk(mh):
                # Deleted meanwhile (an orphan collected while the thread hashed): write it again.
                await store.writer.call(lambda: store._write_file(mh, piece))
        store._record_chunk(mh, len(piece))
        self.chunks.append((mh, len(piece)))

    async def finish(
        self,
        *,
        media_type: str,
        meta: dict[str, Any] | None = None,
        pinned: bool = True,
        kind: str = "user",
    ) -> tuple[str, Manifest]:
        if self._buf:
            piece = bytes(self._buf)
            self._buf.clear()
            with self.store.guard("store a chunk"):
                await self._emit(piece)
        manifest = Manifest(
            chunks=tuple(self.chunks), size=self.size, media_type=media_type, meta=meta or {}
        )
        raw = manifest.encode()
        key = manifest.key
        with self.store.guard("record a blob"):
            self.store.add_manifest(key, raw, pinned=pinned, kind=kind)
        self.store.ingests.discard(self)  # the blob's rows name its chunks now
        return key, manifest
