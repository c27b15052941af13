"""The local blob store on a real SQLite file and real chunk files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from p2pnode.blobs.ingest import Ingest
from p2pnode.blobs.store import BlobStore, chunk_hash
from p2pnode.store import Store
from p2pnode_protocols.blobs.manifest import CHUNK_SIZE


def make(tmp_path: Path) -> BlobStore:
    return BlobStore(Store(tmp_path / "node.db"), tmp_path / "blobs")


async def put(store: BlobStore, data: bytes, *, pinned: bool = True, piece: int = 300_000) -> str:
    ingest = Ingest(store)
    await ingest.write_all(data[i : i + piece] for i in range(0, len(data), piece))
    key, _ = await ingest.finish(media_type="application/octet-stream", pinned=pinned)
    store.mark_complete(key)
    return key


async def test_ingest_chunks_and_reads_back_any_range(tmp_path: Path) -> None:
    store = make(tmp_path)
    data = os.urandom(2 * CHUNK_SIZE + 12345)
    key = await put(store, data)
    stat = store.stat(key)
    assert stat is not None and stat.complete and stat.chunks == 3 and stat.size == len(data)
    assert await store.read_range(key, 0, len(data)) == data
    assert await store.read_range(key, CHUNK_SIZE - 5, 10) == data[CHUNK_SIZE - 5 : CHUNK_SIZE + 5]
    # Same bytes, same key, however they were cut: chunks whole inside a piece, spanning two
    # pieces, or pieces larger than several chunks.
    for piece in (CHUNK_SIZE, CHUNK_SIZE - 1, 3 * CHUNK_SIZE + 7):
        assert await put(store, data, piece=piece) == key


async def test_store_survives_reopen(tmp_path: Path) -> None:
    store = make(tmp_path)
    data = os.urandom(CHUNK_SIZE + 1)
    key = await put(store, data)
    store.db.close()
    again = make(tmp_path)
    assert again.is_complete(key)
    assert await again.read_range(key, 0, len(data)) == data


async def test_verified_chunks_only(tmp_path: Path) -> None:
    store = make(tmp_path)
    good = b"x" * 100
    assert await store.put_verified_chunk(chunk_hash(good), good)
    assert not await store.put_verified_chunk(chunk_hash(good + b"!"), good)
    assert store.has_chunk(chunk_hash(good))
    assert not store.has_chunk(chunk_hash(good + b"!"))


async def test_gc_removes_unpinned_lru_and_keeps_shared_chunks(tmp_path: Path) -> None:
    store = make(tmp_path)
    shared = os.urandom(CHUNK_SIZE)
    pinned = await put(store, shared + os.urandom(CHUNK_SIZE), pinned=True)
    old = await put(store, shared + os.urandom(CHUNK_SIZE), pinned=False)
    new = await put(store, os.urandom(CHUNK_SIZE), pinned=False)
    store.touch(new)
    before = store.bytes_stored
    freed = store.collect(limit=before - 1)
    assert freed == CHUNK_SIZE  # only `old`'s own chunk: the shared one is still used
    assert store.stat(old) is None
    assert store.stat(pinned) is not None and store.is_complete(pinned)
    assert store.stat(new) is not None
    assert store.has_chunk(chunk_hash(shared))
    store.set_pinned(new, False)
    store.collect(limit=0)
    assert store.stat(pinned) is not None  # pinned blobs are never collected


async def test_a_vanished_chunk_file_is_an_error_not_a_crash(tmp_path: Path) -> None:
    from p2pnode.blobs.store import BlobStoreError

    store = make(tmp_path)
    key = await put(store, os.urandom(CHUNK_SIZE + 10))
    manifest = store.manifest(key)
    assert manifest is not None
    store.chunk_path(manifest.chunks[0][0]).unlink()
    with pytest.raises(BlobStoreError, match="vanished"):
        await store.read_range(key, 0, 10)
    assert not store.is_complete(key)


async def test_clean_close_writes_held_back_rows(tmp_path: Path) -> None:
    store = make(tmp_path)
    chunks = [os.urandom(1000 + i) for i in range(3)]  # fewer than a batch: rows held back
    for c in chunks:
        assert await store.put_verified_chunk(chunk_hash(c), c)
    store.close()
    store.db.close()
    again = make(tmp_path)
    assert all(again.has_chunk(chunk_hash(c)) for c in chunks)
    assert all(again.chunk_path(chunk_hash(c)).exists() for c in chunks)


async def test_after_a_crash_unrecorded_chunk_files_and_temp_files_are_swept(
    tmp_path: Path,
) -> None:
    store = make(tmp_path)
    data = os.urandom(CHUNK_SIZE + 7)
    key = await put(store, data)  # its rows are written with its manifest
    loose = os.urandom(5000)
    assert await store.put_verified_chunk(chunk_hash(loose), loose)  # row held back
    loose_path = store.chunk_path(chunk_hash(loose))
    temp = loose_path.with_name(f".{loose_path.name}.1.2.tmp")
    temp.write_bytes(b"cut short")
    foreign = loose_path.parent / "notes.txt"
    foreign.write_text("not a chunk")
    store.db.close()  # no close(): as after kill -9

    again = make(tmp_path)
    assert again.is_complete(key)
    assert await again.read_range(key, 0, len(data)) == data
    assert not again.has_chunk(chunk_hash(loose))
    assert not loose_path.exists() and not temp.exists()
    assert foreign.exists(), "files the store did not write are left alone"


async def test_a_forgotten_chunk_stays_forgotten_though_its_row_was_held_back(
    tmp_path: Path,
) -> None:
    store = make(tmp_path)
    c = os.urandom(3000)
    assert await store.put_verified_chunk(chunk_hash(c), c)
    store.drop_corrupt_chunk(chunk_hash(c))
    store.close()
    store.db.close()
    assert not make(tmp_path).has_chunk(chunk_hash(c))


async def test_rows_are_written_in_batches(tmp_path: Path) -> None:
    from p2pnode.blobs.store import RECORD_BATCH

    store = make(tmp_path)
    rows = lambda: store.db.db.execute("SELECT count(*) FROM chunks").fetchone()[0]  # noqa: E731
    for i in range(RECORD_BATCH - 1):
        c = i.to_bytes(4, "big") * 100
        assert await store.put_verified_chunk(chunk_hash(c), c)
    assert rows() == 0
    c = b"last" * 100
    assert await store.put_verified_chunk(chunk_hash(c), c)
    assert rows() == RECORD_BATCH


async def test_removed_chunks_become_spares_that_the_next_blob_is_written_into(
    tmp_path: Path,
) -> None:
    store = make(tmp_path)
    first, second = os.urandom(3 * CHUNK_SIZE), os.urandom(2 * CHUNK_SIZE + 99)
    key = await put(store, first)
    assert store.remove(key) == len(first)
    assert store.files.spares == 3
    other = await put(store, second)
    assert store.files.spares == 0, "two full chunks and a short one took all three"
    assert await store.read_range(other, 0, len(second)) == second
    store.close()
    again = make(tmp_path)  # a reopened store reads the same bytes and finds no stray file
    assert await again.read_range(other, 0, len(second)) == second
