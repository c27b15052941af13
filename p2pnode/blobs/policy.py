"""The storage policy for training: what each kind of blob may take, and what a committed round
lets go (docs/blobs.md, "Storage policy").

Every blob has a *kind*: ``user`` (the default, what ``blob put`` stores), ``model`` (a job's model
after a round) or ``update`` (a trainer's update in a round), and for the last two the job and
round. Training writes an update blob per trainer and a model blob per round, job after job, so
two rules keep storage bounded without an operator:

* retention (:func:`retire`, called by the training rounds service once a round of a job is
  committed): the last ``blobs.keep_models`` models of the job and every model a validator
  certified are kept; older models, and the updates of rounds at least ``blobs.keep_update_rounds``
  behind the committed one (the evidence period is over), are removed;
* quotas (:func:`enforce_quotas`, part of every GC): above ``blobs.max_<kind>_bytes`` (0: none),
  blobs of that kind are removed, unpinned before pinned, oldest first, never the blob being
  stored. A kind's size is the sum of its blobs' sizes.

All of it is plain SQL over the store's ``blobs`` table, on the trio thread.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

from p2pnode.blobs.store import BlobStore

log = logging.getLogger(__name__)

KINDS = ("user", "model", "update")


def check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")


def bytes_by_kind(store: BlobStore) -> dict[str, int]:
    """The summed size of the blobs of each kind (every kind present, 0 if none)."""
    out = dict.fromkeys(KINDS, 0)
    for kind, size in store.db.db.execute("SELECT kind, sum(size) FROM blobs GROUP BY kind"):
        out[kind] = int(size or 0)
    return out


def enforce_quotas(
    store: BlobStore, quotas: Mapping[str, int], *, protect: Collection[str] = ()
) -> int:
    """Remove blobs of each kind over its quota (0: none), unpinned first, oldest first, except
    the keys in ``protect``; returns bytes freed."""
    freed = 0
    sizes = bytes_by_kind(store)
    for kind, quota in quotas.items():
        if quota <= 0 or sizes.get(kind, 0) <= quota:
            continue
        over = sizes[kind]
        victims = store.db.db.execute(
            "SELECT key, size, pinned FROM blobs WHERE kind = ? ORDER BY pinned ASC, created ASC",
            (kind,),
        ).fetchall()
        for key, size, pinned in victims:
            if over <= quota:
                break
            if key in protect:
                continue
            freed += store.remove(key)
            over -= size
            log.info(
                "removed %s blob %s (%d bytes%s): %s quota of %d bytes",
                kind,
                key,
                size,
                ", pinned" if pinned else "",
                kind,
                quota,
            )
    return freed


@dataclass(slots=True)
class Retired:
    """What one :func:`retire` removed."""

    removed: list[str] = field(default_factory=list)
    freed: int = 0

    def as_dict(self) -> dict[str, object]:
        return {"removed": self.removed, "freed": self.freed}


def retire(
    store: BlobStore,
    job: str,
    committed_round: int,
    keep: Iterable[str] = (),
    *,
    keep_models: int,
    keep_update_rounds: int,
) -> Retired:
    """Apply the retention policy to ``job`` once its round ``committed_round`` is committed:
    keep its last ``keep_models`` models (by round, then by time stored) and every key in
    ``keep``; remove its updates of rounds <= ``committed_round - keep_update_rounds``.
    Idempotent: a second call finds nothing more to remove."""
    kept = set(keep)
    done = Retired()
    models = store.db.db.execute(
        "SELECT key FROM blobs WHERE job = ? AND kind = 'model' "
        "ORDER BY coalesce(round, -1) DESC, created DESC",
        (job,),
    ).fetchall()
    doomed = [key for (key,) in models[keep_models:] if key not in kept]
    cutoff = committed_round - keep_update_rounds
    updates = store.db.db.execute(
        "SELECT key FROM blobs WHERE job = ? AND kind = 'update' AND round <= ?", (job, cutoff)
    ).fetchall()
    doomed += [key for (key,) in updates if key not in kept]
    for key in doomed:
        done.freed += store.remove(key)
        done.removed.append(key)
    if doomed:
        log.info(
            "job %s round %d committed: removed %d blobs (%d bytes)",
            job,
            committed_round,
            len(doomed),
            done.freed,
        )
    return done
