"""BlobService's storage API as the training rounds service calls it: labels on put and fetch,
retire with the configured retention, quotas after a put, and a full disk on put (no network:
the DHT is a stub and the blobs are local)."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest

from p2pnode.blobs.chunkio import ChunkFiles
from p2pnode.blobs.errors import BlobError, NoSpace
from p2pnode.blobs.service import BlobService
from p2pnode.blobs.store import BlobStore
from p2pnode.config import load_config
from p2pnode.store import Store

SIZE = 40_000


class StubDht:
    async def provide(self, key: str) -> int:
        return 0


def service(tmp_path: Path, **settings: Any) -> BlobService:
    cfg = load_config(tmp_path, env={}, overrides={f"blobs.{k}": v for k, v in settings.items()})
    store = BlobStore(Store(tmp_path / "node.db"), tmp_path / "blobs")
    return BlobService(None, StubDht(), store, cfg)  # type: ignore[arg-type]


async def put(blobs: BlobService, **labels: Any) -> str:
    stat, _ = await blobs.put([os.urandom(SIZE)], media_type="x", **labels)
    return stat.key


async def test_put_and_fetch_label_blobs(tmp_path: Path) -> None:
    blobs = service(tmp_path)
    stat, _ = await blobs.put([b"m" * SIZE], media_type="x", kind="model", job="j", round=1)
    assert (stat.kind, stat.job, stat.round) == ("model", "j", 1)
    plain = await put(blobs)
    # A fetch of a blob already stored only adds the labels.
    got = await blobs.fetch(plain, kind="update", job="j", round=2)
    assert (got.kind, got.job, got.round) == ("update", "j", 2)
    assert blobs.stats()["bytes_by_kind"] == {"user": 0, "model": SIZE, "update": SIZE}
    with pytest.raises(BlobError, match="kind"):
        await blobs.put([b"x"], media_type="x", kind="gradient")
    with pytest.raises(BlobError, match="round"):
        await blobs.fetch(plain, round=-1)


async def test_retire_uses_the_configured_retention(tmp_path: Path) -> None:
    blobs = service(tmp_path, keep_models=2, keep_update_rounds=1)
    models = [await put(blobs, kind="model", job="j", round=r) for r in range(4)]
    updates = [await put(blobs, kind="update", job="j", round=r) for r in range(4)]
    done = blobs.retire("j", 3, keep=[models[0]])
    assert set(done.removed) == {models[1], *updates[:3]}
    assert blobs.retire("j", 3, keep=[models[0]]).removed == []
    for key in (models[0], models[2], models[3], updates[3]):
        assert blobs.store.stat(key) is not None


async def test_a_quota_is_applied_after_each_put(tmp_path: Path) -> None:
    blobs = service(tmp_path, max_update_bytes=2 * SIZE)
    keys = [await put(blobs, kind="update", job="j", round=r, pin=False) for r in range(4)]
    assert [blobs.store.stat(k) is not None for k in keys] == [False, False, True, True]
    assert blobs.stats()["bytes_by_kind"]["update"] == 2 * SIZE


async def test_a_full_disk_on_put_is_no_space_and_releases_the_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blobs = service(tmp_path)
    kept = await put(blobs)
    real = ChunkFiles.write
    written = 0

    def write(self: ChunkFiles, path: Path, data: Any) -> None:
        nonlocal written
        if written >= 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        written += 1
        real(self, path, data)

    monkeypatch.setattr(ChunkFiles, "write", write)
    with pytest.raises(NoSpace, match=f"data dir {tmp_path}"):
        await blobs.put([os.urandom(6 << 20)], media_type="x")
    assert blobs.store.bytes_stored == SIZE
    assert blobs.store.ingests == set()
    files = [p for p in (tmp_path / "blobs").glob("??/*") if not p.name.startswith(".")]
    assert len(files) == 1 and blobs.store.stat(kept) is not None
