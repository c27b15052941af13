"""The local blob store on a real SQLite file and real chunk files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from p2pnode.blobs.store import BlobStore, Ingest, chunk_hash
from p2pnode.store import Store
from protocols.blobs.manifest import CHUNK_SIZE


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
    # Same bytes, same key, however they were cut.
    assert await put(store, data, piece=1 << 20) == key


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
