"""The local blob store: chunk files under the data dir, indexed in SQLite.

Chunks live at ``<data dir>/blobs/<aa>/<hash hex>``, written to a temporary name and renamed,
so a chunk file is either whole or absent after a crash; its row is inserted only after the
rename. Rows of received chunks are written ``RECORD_BATCH`` to a transaction (one commit per
chunk cost a fetching daemon's event loop ~0.15 ms per MiB, WAL checkpoints included), and always
before anything that depends on them commits: a blob's manifest row, its *complete* flag, a
deletion. So a ``kill -9`` can leave at most a batch of chunk files that no row names; the store
notices an unclean stop by the marker file ``.open`` it keeps while open and deletes such files
(and temporary files cut short) when it next opens.

A blob is a manifest row plus the list of its chunk hashes; it is *complete* when every chunk
is on disk. Pinned blobs are kept; the others are removed least-recently-used first when
the store grows past ``blobs.max_store_bytes``.

Hashing and file I/O of chunks run on worker threads (:mod:`p2pnode.blobs.worker`; hashlib and
file I/O release the GIL), so a transfer does not stall the daemon's event loop; SQLite stays on
the trio thread. Chunk files bypass the page cache where the file system allows
(:mod:`p2pnode.blobs.chunkio` says why).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2pnode.blobs.chunkio import ChunkFiles, Data, as_buffer
from p2pnode.blobs.worker import Workers
from p2pnode.store import Store
from protocols.blobs.cid import DIGEST_LEN, SHA2_256
from protocols.blobs.manifest import CHUNK_SIZE, Manifest, decode_manifest

log = logging.getLogger(__name__)

# Chunks checked and written at once: one. On two cores shared with both ends of a transfer,
# every extra hashing thread crowds the event loops, which are what a fetch waits on (256 MiB
# fetch between two daemons, 12 alternating rounds, medians, with spare files: 2 threads 241
# MiB/s, 1 thread 303; in session 3, 4 threads gave 237-249 and 2 gave 268-277). A chunk's write
# into a spare file takes about 2 ms, so one thread keeps up with several hundred MiB/s.
WRITER_THREADS = 1
READER_THREADS = 2
RECORD_BATCH = 32  # chunk rows per transaction
SPARE_DIR = ".spare"  # deleted chunk files kept for reuse (chunkio.ChunkFiles.retire)
OPEN_MARKER = ".open"  # present while a store is open: found at opening, the last stop was unclean


class BlobStoreError(Exception):
    """A blob or chunk is missing, or the store cannot be written."""


@dataclass(frozen=True, slots=True)
class BlobStat:
    key: str
    size: int
    chunks: int
    local_chunks: int
    complete: bool
    pinned: bool
    media_type: str
    meta: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "size": self.size,
            "chunks": self.chunks,
            "local_chunks": self.local_chunks,
            "complete": self.complete,
            "pinned": self.pinned,
            "media_type": self.media_type,
            "meta": self.meta,
        }


def chunk_hash(data: Data) -> bytes:
    """The sha2-256 multihash of a chunk."""
    return bytes([SHA2_256, DIGEST_LEN]) + hashlib.sha256(as_buffer(data)).digest()


class BlobStore:
    def __init__(self, store: Store, root: Path, *, direct_io: bool = True) -> None:
        self.db = store
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.files = ChunkFiles(direct=direct_io, spare_dir=self.root / SPARE_DIR)
        # Threads that check and write received chunks, and threads that read chunks to serve;
        # the blob service runs them (without it, calls fall back to trio's thread pool).
        self.writer = Workers(WRITER_THREADS)
        self.reader = Workers(READER_THREADS)
        self._have: dict[bytes, int] = dict(store.db.execute("SELECT hash, size FROM chunks"))
        self.bytes_stored = sum(self._have.values())
        self._unrecorded: list[tuple[bytes, int]] = []  # in _have, row not yet written
        self._dirs: set[Path] = set()  # chunk directories known to exist
        marker = self.root / OPEN_MARKER
        if marker.exists():
            swept = self._sweep_unrecorded_files()
            log.info("blob store was not closed cleanly; removed %d stray chunk files", swept)
        marker.touch()

    def close(self) -> None:
        """Write the rows held back and mark the store closed cleanly."""
        self.flush()
        (self.root / OPEN_MARKER).unlink(missing_ok=True)

    def flush(self) -> None:
        """Write the chunk rows held back, in one transaction."""
        if self._unrecorded:
            rows, self._unrecorded = self._unrecorded, []
            with self.db.transaction() as db:
                db.executemany("INSERT OR IGNORE INTO chunks (hash, size) VALUES (?, ?)", rows)

    def _sweep_unrecorded_files(self) -> int:
        """Delete chunk files no row names and temporary files (both left by a crash)."""
        swept = 0
        for sub in os.scandir(self.root):
            if not sub.is_dir(follow_symlinks=False) or len(sub.name) != 2:
                continue
            for entry in os.scandir(sub.path):
                name = entry.name
                if name.startswith("."):
                    stray = name.endswith(".tmp")
                else:
                    try:
                        stray = bytes.fromhex(name) not in self._have
                    except ValueError:
                        stray = False  # not ours: leave it
                if stray:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)
                    swept += 1
        return swept

    # -- chunks --------------------------------------------------------------------------------

    def has_chunk(self, mh: bytes) -> bool:
        return mh in self._have

    def chunk_path(self, mh: bytes) -> Path:
        hexed = mh.hex()
        return self.root / hexed[4:6] / hexed

    def _write_file(self, mh: bytes, data: Data) -> None:
        path = self.chunk_path(mh)
        if path.parent not in self._dirs:  # a syscall saved per chunk, on a worker thread
            path.parent.mkdir(exist_ok=True)
            self._dirs.add(path.parent)
        self.files.write(path, data)

    def _record_chunk(self, mh: bytes, size: int) -> None:
        """A chunk file is in place: count it now, write its row with the next batch."""
        if mh in self._have:
            return
        self._have[mh] = size
        self.bytes_stored += size
        self._unrecorded.append((mh, size))
        if len(self._unrecorded) >= RECORD_BATCH:
            self.flush()

    async def put_verified_chunk(self, expected: bytes, data: Data) -> bool:
        """Store a chunk received from a peer if it hashes to ``expected``; False if not."""
        if expected in self._have:
            return True

        def work() -> bool:
            if chunk_hash(data) != expected:
                return False
            self._write_file(expected, data)
            return True

        ok = await self.writer.call(work)
        if ok:
            self._record_chunk(expected, len(as_buffer(data)))
        return ok

    async def read_chunk(self, mh: bytes) -> bytes:
        if mh not in self._have:
            raise BlobStoreError(f"chunk {mh.hex()} is not held here")
        path = self.chunk_path(mh)
        try:
            return await self.reader.call(lambda: self.files.read(path))
        except FileNotFoundError:
            self._forget_chunk(mh)
            raise BlobStoreError(f"chunk {mh.hex()} vanished from disk") from None

    def _forget_chunk(self, mh: bytes) -> None:
        self.flush()  # a row written after its DELETE would bring the chunk back
        size = self._have.pop(mh, 0)
        self.bytes_stored -= size
        self.db.db.execute("DELETE FROM chunks WHERE hash = ?", (mh,))
        self.db.db.execute(
            "UPDATE blobs SET complete = 0 WHERE key IN "
            "(SELECT blob FROM blob_chunks WHERE hash = ?)",
            (mh,),
        )

    def drop_corrupt_chunk(self, mh: bytes) -> None:
        """Forget a chunk whose file no longer matches its hash (detected on serve or read)."""
        log.warning("chunk %s is corrupt on disk; dropping it", mh.hex())
        self.chunk_path(mh).unlink(missing_ok=True)
        self._forget_chunk(mh)

    # -- blobs ---------------------------------------------------------------------------------

    def add_manifest(self, key: str, manifest_bytes: bytes, *, pinned: bool) -> Manifest:
        manifest = decode_manifest(manifest_bytes)
        complete = all(mh in self._have for mh, _ in manifest.chunks)
        self.flush()  # a blob's rows never name chunks whose own rows are not written
        with self.db.transaction() as db:
            db.execute(
                "INSERT INTO blobs (key, manifest, size, complete, pinned, last_access) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET "
                "pinned = max(blobs.pinned, excluded.pinned), last_access = excluded.last_access",
                (key, manifest_bytes, manifest.size, int(complete), int(pinned), time.time()),
            )
            db.executemany(
                "INSERT OR IGNORE INTO blob_chunks (blob, idx, hash) VALUES (?, ?, ?)",
                [(key, i, mh) for i, (mh, _) in enumerate(manifest.chunks)],
            )
        return manifest

    def manifest_bytes(self, key: str) -> bytes | None:
        row = self.db.db.execute("SELECT manifest FROM blobs WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def manifest(self, key: str) -> Manifest | None:
        raw = self.manifest_bytes(key)
        return None if raw is None else decode_manifest(raw)

    def missing(self, manifest: Manifest) -> list[int]:
        return [i for i, (mh, _) in enumerate(manifest.chunks) if mh not in self._have]

    def mark_complete(self, key: str) -> None:
        self.flush()
        self.db.db.execute(
            "UPDATE blobs SET complete = 1, last_access = ? WHERE key = ?", (time.time(), key)
        )

    def touch(self, key: str) -> None:
        self.db.db.execute("UPDATE blobs SET last_access = ? WHERE key = ?", (time.time(), key))

    def is_complete(self, key: str) -> bool:
        row = self.db.db.execute("SELECT complete FROM blobs WHERE key = ?", (key,)).fetchone()
        return bool(row and row[0])

    def set_pinned(self, key: str, pinned: bool) -> bool:
        cur = self.db.db.execute("UPDATE blobs SET pinned = ? WHERE key = ?", (int(pinned), key))
        return cur.rowcount > 0

    def stat(self, key: str) -> BlobStat | None:
        row = self.db.db.execute(
            "SELECT manifest, complete, pinned FROM blobs WHERE key = ?", (key,)
        ).fetchone()
        if row is None:
            return None
        manifest = decode_manifest(row[0])
        local = sum(1 for mh, _ in manifest.chunks if mh in self._have)
        return BlobStat(
            key=key,
            size=manifest.size,
            chunks=len(manifest.chunks),
            local_chunks=local,
            complete=bool(row[1]) and local == len(manifest.chunks),
            pinned=bool(row[2]),
            media_type=manifest.media_type,
            meta=manifest.meta,
        )

    def complete_keys(self) -> list[str]:
        return [k for (k,) in self.db.db.execute("SELECT key FROM blobs WHERE complete = 1")]

    async def read_range(self, key: str, offset: int, length: int) -> bytes:
        return b"".join(await self.read_range_parts(key, offset, length))

    async def read_range_parts(self, key: str, offset: int, length: int) -> list[memoryview]:
        """Up to ``length`` bytes of the blob from ``offset``, as views of the chunks read."""
        manifest = self.manifest(key)
        if manifest is None:
            raise BlobStoreError(f"blob {key} is not held here")
        end = min(manifest.size, offset + length)
        out = []
        at = 0
        for mh, size in manifest.chunks:
            if at + size > offset and at < end:
                data = await self.read_chunk(mh)
                out.append(memoryview(data)[max(0, offset - at) : min(size, end - at)])
            at += size
            if at >= end:
                break
        self.touch(key)
        return out

    def remove(self, key: str) -> int:
        """Forget a blob and delete the chunks no other blob uses; returns bytes freed."""
        freed = 0
        hashes = [
            h for (h,) in self.db.db.execute("SELECT hash FROM blob_chunks WHERE blob = ?", (key,))
        ]
        with self.db.transaction() as db:
            db.execute("DELETE FROM blob_chunks WHERE blob = ?", (key,))
            db.execute("DELETE FROM blobs WHERE key = ?", (key,))
        for mh in set(hashes):
            still_used = self.db.db.execute(
                "SELECT 1 FROM blob_chunks WHERE hash = ? LIMIT 1", (mh,)
            ).fetchone()
            if still_used or mh not in self._have:
                continue
            freed += self._have[mh]
            self.files.retire(self.chunk_path(mh))
            self._forget_chunk(mh)
        return freed

    # -- garbage collection --------------------------------------------------------------------

    def collect(self, limit: int) -> int:
        """Remove unpinned blobs, least recently used first, until under ``limit`` bytes.

        A chunk is deleted only when no remaining blob uses it. Returns bytes freed.
        """
        freed = 0
        if self.bytes_stored <= limit:
            return 0
        victims = self.db.db.execute(
            "SELECT key FROM blobs WHERE pinned = 0 ORDER BY last_access ASC"
        ).fetchall()
        for (key,) in victims:
            if self.bytes_stored <= limit:
                break
            freed += self.remove(key)
            log.info("garbage-collected blob %s", key)
        return freed


class Ingest:
    """Builds a blob from bytes arriving in pieces: 1 MiB chunks hashed and written as they
    fill, so memory stays at one chunk whatever the blob's size."""

    def __init__(self, store: BlobStore) -> None:
        self.store = store
        self._buf = bytearray()
        self.chunks: list[tuple[bytes, int]] = []
        self.size = 0

    async def write(self, data: bytes | memoryview) -> None:
        """Take ``data`` (not kept after this returns). Whole chunks inside it are hashed and
        written straight from it; only a chunk's head or tail is gathered in a buffer."""
        view = memoryview(data).cast("B")
        self.size += view.nbytes
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

        def work() -> bytes:  # hash and write in one hop to a worker thread
            mh = chunk_hash(piece)
            if not store.has_chunk(mh):
                store._write_file(mh, piece)
            return mh

        mh = await store.writer.call(work)
        store._record_chunk(mh, len(piece))
        self.chunks.append((mh, len(piece)))

    async def finish(
        self, *, media_type: str, meta: dict[str, Any] | None = None, pinned: bool = True
    ) -> tuple[str, Manifest]:
        if self._buf:
            piece = bytes(self._buf)
            self._buf.clear()
            await self._emit(piece)
        manifest = Manifest(
            chunks=tuple(self.chunks), size=self.size, media_type=media_type, meta=meta or {}
        )
        raw = manifest.encode()
        key = manifest.key
        self.store.add_manifest(key, raw, pinned=pinned)
        return key, manifest
