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
the store grows past ``blobs.max_store_bytes`` (quotas per kind and the training retention
policy are :mod:`p2pnode.blobs.policy`). A chunk no blob names and no live upload
(:mod:`p2pnode.blobs.ingest`) holds is an orphan: of an aborted or cut-off upload, a failed
put, a crash mid-put. Orphans are deleted when an upload ends without a blob, at opening after
an unclean stop, and by the periodic GC.

A full disk: a write that fails for want of space raises :class:`~p2pnode.blobs.errors.NoSpace`
(naming the data dir and its free space), and the upload that met it releases its chunks.
Deleting must work on a full disk, so :meth:`BlobStore.remove` unlinks chunk files before it
touches the database (whose WAL needs room to record the deletion), and spare files are given
back to the file system once space runs low.

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
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from p2pnode.blobs.chunkio import ChunkFiles, Data, as_buffer
from p2pnode.blobs.errors import free_bytes, is_no_space, no_space
from p2pnode.blobs.worker import Workers
from p2pnode.store import Store
from p2pnode_protocols.blobs.cid import DIGEST_LEN, SHA2_256
from p2pnode_protocols.blobs.manifest import Manifest, decode_manifest


class LiveUpload(Protocol):
    """What the store needs of a live upload (:class:`p2pnode.blobs.ingest.Ingest`): the
    chunks it has written so far."""

    chunks: list[tuple[bytes, int]]


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
# Below this much free space, a deleted chunk file is unlinked rather than kept as a spare: the
# spares would hold the very space a full disk needs back.
LOW_SPACE = 512 << 20


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
    kind: str = "user"
    job: str | None = None
    round: int | None = None

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
            "kind": self.kind,
            "job": self.job,
            "round": self.round,
        }


def chunk_hash(data: Data) -> bytes:
    """The sha2-256 multihash of a chunk."""
    return bytes([SHA2_256, DIGEST_LEN]) + hashlib.sha256(as_buffer(data)).digest()


class BlobStore:
    def __init__(self, store: Store, root: Path, *, direct_io: bool = True) -> None:
        self.db = store
        self.root = root
        self.data_dir = root.parent
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
        self._stale: set[bytes] = set()  # chunks whose files are gone, rows not yet deleted
        self.ingests: set[LiveUpload] = set()  # live uploads: their chunks are not orphans
        marker = self.root / OPEN_MARKER
        if marker.exists():
            swept = self._sweep_unrecorded_files()
            # No upload is live yet: every chunk no blob names is an orphan (of an upload the
            # crash cut off). A clean stop ended its uploads, releasing theirs.
            freed = self.collect_orphans()
            log.info(
                "blob store was not closed cleanly; removed %d stray chunk files and %d bytes "
                "of chunks no blob uses",
                swept,
                freed,
            )
        marker.touch()

    def close(self) -> None:
        """Write the rows held back and mark the store closed cleanly."""
        self.flush()
        (self.root / OPEN_MARKER).unlink(missing_ok=True)

    def flush(self) -> None:
        """Write the chunk rows held back (and delete those of files already gone), in one
        transaction; kept for the next flush if the disk is full."""
        if not (self._unrecorded or self._stale):
            return
        # `_have` is the truth: a chunk deleted and stored again (or the reverse) between two
        # flushes gets the row its last state calls for.
        rows = [r for r in self._unrecorded if r[0] in self._have]
        stale = [(h,) for h in self._stale if h not in self._have]
        with self.db.transaction() as db:
            db.executemany("DELETE FROM chunks WHERE hash = ?", stale)
            db.executemany("INSERT OR IGNORE INTO chunks (hash, size) VALUES (?, ?)", rows)
        self._unrecorded = []
        self._stale = set()

    @contextlib.contextmanager
    def guard(self, what: str) -> Iterator[None]:
        """Turn a full disk met in the body (an OSError or SQLite's) into NoSpace."""
        try:
            yield
        except (OSError, sqlite3.OperationalError) as exc:
            if not is_no_space(exc):
                raise
            self.files.drop_spares()  # room for the deletions that must follow
            raise no_space(self.data_dir, what) from None

    def low_on_space(self) -> bool:
        free = free_bytes(self.root)
        return 0 <= free < LOW_SPACE

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

        with self.guard("store a fetched chunk"):
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
        with contextlib.suppress(sqlite3.OperationalError):
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

    def add_manifest(
        self, key: str, manifest_bytes: bytes, *, pinned: bool, kind: str = "user"
    ) -> Manifest:
        manifest = decode_manifest(manifest_bytes)
        complete = all(mh in self._have for mh, _ in manifest.chunks)
        now = time.time()
        self.flush()  # a blob's rows never name chunks whose own rows are not written
        with self.db.transaction() as db:
            db.execute(
                "INSERT INTO blobs (key, manifest, size, complete, pinned, last_access, kind, "
                "created) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET "
                "pinned = max(blobs.pinned, excluded.pinned), last_access = excluded.last_access",
                (key, manifest_bytes, manifest.size, int(complete), int(pinned), now, kind, now),
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

    def label(self, key: str, *, kind: str | None, job: str | None, round: int | None) -> None:
        """Add what a blob is for; a kind other than "user" is never turned back into "user"
        (a plain put of a model's bytes does not make it a user blob)."""
        self.db.db.execute(
            "UPDATE blobs SET kind = CASE WHEN ? IS NULL OR ? = 'user' THEN kind ELSE ? END, "
            "job = coalesce(?, job), round = coalesce(?, round) WHERE key = ?",
            (kind, kind, kind, job, round, key),
        )

    def set_pinned(self, key: str, pinned: bool) -> bool:
        cur = self.db.db.execute("UPDATE blobs SET pinned = ? WHERE key = ?", (int(pinned), key))
        return cur.rowcount > 0

    def stat(self, key: str) -> BlobStat | None:
        row = self.db.db.execute(
            "SELECT manifest, complete, pinned, kind, job, round FROM blobs WHERE key = ?", (key,)
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
            kind=row[3],
            job=row[4],
            round=row[5],
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
        """Forget a blob and delete the chunks no other blob or live upload uses; returns bytes
        freed. Works on a full disk: the files go first (freeing the room the database needs
        to record it); a crash in between leaves rows whose files are gone, which a read
        forgets and the next orphan collection deletes."""
        hashes = {
            h for (h,) in self.db.db.execute("SELECT hash FROM blob_chunks WHERE blob = ?", (key,))
        }
        shared = {
            h
            for h in hashes
            if self.db.db.execute(
                "SELECT 1 FROM blob_chunks WHERE hash = ? AND blob != ? LIMIT 1", (h, key)
            ).fetchone()
        }
        doomed = [h for h in hashes - shared - self._live_hashes() if h in self._have]
        freed = self._delete_files(doomed)
        with self.guard(f"record the removal of blob {key}"), self.db.transaction() as db:
            db.execute("DELETE FROM blob_chunks WHERE blob = ?", (key,))
            db.execute("DELETE FROM blobs WHERE key = ?", (key,))
        with contextlib.suppress(sqlite3.OperationalError):  # kept in _stale if it fails
            self.flush()
        return freed

    def _delete_files(self, hashes: Iterable[bytes]) -> int:
        """Delete these chunks' files now and their rows with the next flush; bytes freed."""
        low = self.low_on_space()
        freed = 0
        for mh in hashes:
            path = self.chunk_path(mh)
            if low:
                path.unlink(missing_ok=True)
            else:
                self.files.retire(path)
            size = self._have.pop(mh, 0)
            self.bytes_stored -= size
            freed += size
            self._stale.add(mh)
        if low:
            self.files.drop_spares()
        return freed

    def _live_hashes(self) -> set[bytes]:
        return {mh for ingest in self.ingests for mh, _ in ingest.chunks}

    def collect_orphans(self, candidates: Iterable[bytes] | None = None) -> int:
        """Delete chunks (of ``candidates``, default all) that no blob names and no live upload
        holds; returns bytes freed."""
        pool = set(self._have if candidates is None else candidates) - self._live_hashes()
        if candidates is None:
            named = {h for (h,) in self.db.db.execute("SELECT DISTINCT hash FROM blob_chunks")}
            orphans = [h for h in pool if h not in named]
        else:
            orphans = [
                h
                for h in pool
                if h in self._have
                and not self.db.db.execute(
                    "SELECT 1 FROM blob_chunks WHERE hash = ? LIMIT 1", (h,)
                ).fetchone()
            ]
        if not orphans:
            return 0
        freed = self._delete_files(orphans)
        with contextlib.suppress(sqlite3.OperationalError):  # kept in _stale if it fails
            self.flush()
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
