"""Chunks no blob names and no live upload holds are collected (issue 21, item 2)."""

from __future__ import annotations

import os
from pathlib import Path

from p2pnode.blobs.ingest import Ingest
from p2pnode.blobs.store import OPEN_MARKER, BlobStore
from p2pnode.store import Store
from p2pnode_protocols.blobs.manifest import CHUNK_SIZE


def make(tmp_path: Path) -> BlobStore:
    return BlobStore(Store(tmp_path / "node.db"), tmp_path / "blobs")


def chunk_files(tmp_path: Path) -> list[Path]:
    return [p for p in (tmp_path / "blobs").glob("??/*") if not p.name.startswith(".")]


async def committed(store: BlobStore, data: bytes) -> str:
    ingest = Ingest(store)
    await ingest.write(data)
    key, _ = await ingest.finish(media_type="x")
    store.mark_complete(key)
    return key


async def test_abort_releases_the_chunks_written_but_not_shared_ones(tmp_path: Path) -> None:
    store = make(tmp_path)
    shared = os.urandom(CHUNK_SIZE)
    await committed(store, shared)
    ingest = Ingest(store)
    await ingest.write(shared + os.urandom(3 * CHUNK_SIZE))
    assert store.bytes_stored == 4 * CHUNK_SIZE
    assert store.collect_orphans() == 0  # a live upload's chunks are not orphans
    assert ingest.abort() == 3 * CHUNK_SIZE
    assert ingest.abort() == 0
    assert store.bytes_stored == CHUNK_SIZE
    assert len(chunk_files(tmp_path)) == 1


async def test_orphans_of_a_crash_are_collected_at_opening(tmp_path: Path) -> None:
    store = make(tmp_path)
    key = await committed(store, os.urandom(CHUNK_SIZE))
    ingest = Ingest(store)
    await ingest.write(os.urandom(3 * CHUNK_SIZE))
    store.flush()  # their rows are written: as a crash after a batch would leave them
    store.db.close()  # no close(): the open marker stays, as after kill -9
    assert (tmp_path / "blobs" / OPEN_MARKER).exists()
    again = make(tmp_path)
    assert again.bytes_stored == CHUNK_SIZE
    assert len(chunk_files(tmp_path)) == 1
    assert again.is_complete(key)
    rows = again.db.db.execute("SELECT count(*) FROM chunks").fetchone()[0]
    assert rows == 1


async def test_periodic_collection_and_a_chunk_stored_again_after(tmp_path: Path) -> None:
    store = make(tmp_path)
    data = os.urandom(2 * CHUNK_SIZE)
    ingest = Ingest(store)
    await ingest.write(data)
    store.ingests.discard(ingest)  # as if its upload vanished without an abort
    assert store.collect_orphans() == 2 * CHUNK_SIZE
    assert chunk_files(tmp_path) == []
    # The same bytes again: written again, recorded again (the row's delete and insert meet in
    # one flush).
    key = await committed(store, data)
    store.close()
    again = make(tmp_path)
    assert again.bytes_stored == 2 * CHUNK_SIZE
    assert await again.read_range(key, 0, len(data)) == data


async def test_remove_deletes_files_first_and_spares_shared_chunks(tmp_path: Path) -> None:
    store = make(tmp_path)
    shared = os.urandom(CHUNK_SIZE)
    a = await committed(store, shared + os.urandom(CHUNK_SIZE))
    b = await committed(store, shared)
    assert store.remove(a) == CHUNK_SIZE
    assert store.is_complete(b) and await store.read_range(b, 0, CHUNK_SIZE) == shared
    assert store.bytes_stored == CHUNK_SIZE
