"""The storage policy for training (p2pnode.blobs.policy): kinds, quotas, retention."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from p2pnode.blobs import policy
from p2pnode.blobs.ingest import Ingest
from p2pnode.blobs.store import BlobStore
from p2pnode.store import Store

SIZE = 50_000  # one chunk each


def make(tmp_path: Path) -> BlobStore:
    return BlobStore(Store(tmp_path / "node.db"), tmp_path / "blobs")


async def put(
    store: BlobStore,
    *,
    kind: str = "user",
    job: str | None = None,
    round: int | None = None,
    pinned: bool = True,
) -> str:
    ingest = Ingest(store)
    await ingest.write(os.urandom(SIZE))
    key, _ = await ingest.finish(media_type="x", pinned=pinned, kind=kind)
    store.label(key, kind=kind, job=job, round=round)
    store.mark_complete(key)
    await trio.sleep(0.002)  # distinct creation times: "oldest first" is well defined
    return key


def keys(store: BlobStore) -> set[str]:
    return {k for (k,) in store.db.db.execute("SELECT key FROM blobs")}


async def test_labels_show_in_stat_and_user_never_overrides_a_kind(tmp_path: Path) -> None:
    store = make(tmp_path)
    key = await put(store, kind="model", job="j", round=4)
    stat = store.stat(key)
    assert stat is not None
    assert (stat.kind, stat.job, stat.round) == ("model", "j", 4)
    assert stat.as_dict()["kind"] == "model"
    store.label(key, kind="user", job=None, round=None)  # a plain put of the same bytes
    stat = store.stat(key)
    assert stat is not None and (stat.kind, stat.job, stat.round) == ("model", "j", 4)
    assert policy.bytes_by_kind(store) == {"user": 0, "model": SIZE, "update": 0}


async def test_retire_keeps_last_models_and_certified_ones_and_drops_old_updates(
    tmp_path: Path,
) -> None:
    store = make(tmp_path)
    models = [await put(store, kind="model", job="j", round=r) for r in range(6)]
    updates = {
        r: [await put(store, kind="update", job="j", round=r) for _ in range(2)] for r in range(6)
    }
    other_job = await put(store, kind="update", job="other", round=0)
    user = await put(store)
    done = policy.retire(store, "j", 5, keep=[models[1]], keep_models=3, keep_update_rounds=2)
    left = keys(store)
    # Models: the last 3 (rounds 3, 4, 5) and the certified one of round 1.
    assert {m for m in models if m in left} == {models[1], models[3], models[4], models[5]}
    # Updates: rounds <= 5 - 2 = 3 dropped, 4 and 5 kept (the evidence period).
    for r, us in updates.items():
        assert all((u in left) == (r > 3) for u in us), r
    assert other_job in left and user in left
    assert done.freed == len(done.removed) * SIZE == (2 + 8) * SIZE
    # Idempotent.
    again = policy.retire(store, "j", 5, keep=[models[1]], keep_models=3, keep_update_rounds=2)
    assert again.removed == [] and keys(store) == left
    # Every chunk of the removed blobs is gone from disk and from the count.
    assert store.bytes_stored == len(left) * SIZE
    files = [p for p in (tmp_path / "blobs").glob("??/*")]
    assert len(files) == len(left)


async def test_quota_removes_unpinned_first_then_oldest_and_spares_protected(
    tmp_path: Path,
) -> None:
    store = make(tmp_path)
    old_pinned = await put(store, kind="update", job="j", round=0)
    unpinned = await put(store, kind="update", job="j", round=1, pinned=False)
    mid = await put(store, kind="update", job="j", round=2)
    newest = await put(store, kind="update", job="j", round=3)
    models = [await put(store, kind="model", job="j", round=r) for r in range(3)]
    freed = policy.enforce_quotas(
        store, {"update": 2 * SIZE, "model": 0, "user": 0}, protect={newest}
    )
    left = keys(store)
    assert unpinned not in left and old_pinned not in left  # unpinned first, then oldest
    assert mid in left and newest in left
    assert all(m in left for m in models)  # no quota on models
    assert freed == 2 * SIZE
    # A protected blob survives even alone over its quota.
    policy.enforce_quotas(store, {"update": 1}, protect={newest})
    assert newest in keys(store) and mid not in keys(store)
    assert policy.bytes_by_kind(store)["update"] == SIZE


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="kind must be one of"):
        policy.check_kind("gradients")
