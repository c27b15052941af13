"""The replica's durable state and the committed log, in the node's SQLite file.

Tables (migration 3): ``consensus_meta`` (view, view change, new view, stable checkpoint, boot
counter), ``consensus_slots`` (one row per seq with an accepted pre-prepare or a prepared
proof), ``consensus_certified`` (certified entries above the stable checkpoint) and
``consensus_log`` (every committed entry with its certificate, kept forever, idempotent per
seq).

``DurableState`` is the whole state, but writing it whole on every ``Persist`` would
re-encode the window (up to L batches) per message. :meth:`ConsensusStore.save` diffs it against
the last state written, by object identity (the machine's records are immutable, so an
unchanged slot keeps the same objects), and writes only rows that changed, all in one
transaction with the log rows of the same step. A crash leaves either the previous state or
the new one.

Encoding: the PBFT codec's canonical CBOR. Records that are not messages themselves travel in
an unsigned envelope message (a ``PreparedProof`` in a ``ViewChange``, certified entries and
checkpoints in a ``StateReply``), so one bounded decoder reads both the wire and the disk.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from typing import Any

import cbor2

from p2pnode.store import Store
from p2pnode_protocols.pbft import (
    CertifiedEntry,
    DurableSlot,
    DurableState,
    NewView,
    PreparedProof,
    PrePrepare,
    RemoteProtocolError,
    StableCheckpoint,
    StateReply,
    ViewChange,
    decode,
    encode,
)

_ENVELOPE_SENDER = b"\x00"


class ConsensusStoreError(Exception):
    """The durable consensus state is unreadable (corrupt or from another program)."""


# -- envelopes ----------------------------------------------------------------------------------


def encode_prepared(p: PreparedProof) -> bytes:
    env = ViewChange(
        new_view=1, stable_seq=0, checkpoint_proof=(), prepared=(p,), sender=_ENVELOPE_SENDER
    )
    return encode(env)


def decode_prepared(data: bytes) -> PreparedProof:
    env = decode(data)
    if type(env) is not ViewChange or len(env.prepared) != 1:
        raise ConsensusStoreError("not a prepared-proof envelope")
    return env.prepared[0]


def encode_entries(entries: tuple[CertifiedEntry, ...]) -> bytes:
    return encode(StateReply(checkpoint=None, entries=entries, sender=_ENVELOPE_SENDER))


def decode_entries(data: bytes) -> tuple[CertifiedEntry, ...]:
    """Certified entries from an envelope (disk or a log reply); raises RemoteProtocolError,
    also for a valid message of another type (a peer's log reply is where it comes from)."""
    env = decode(data)
    if type(env) is not StateReply:
        raise RemoteProtocolError(f"not an entries envelope: a {type(env).__name__}")
    return env.entries


def encode_stable(cp: StableCheckpoint) -> bytes:
    return encode(StateReply(checkpoint=cp, entries=(), sender=_ENVELOPE_SENDER))


def decode_stable(data: bytes) -> StableCheckpoint:
    env = decode(data)
    if type(env) is not StateReply or env.checkpoint is None:
        raise ConsensusStoreError("not a checkpoint envelope")
    return env.checkpoint


@dataclass(frozen=True, slots=True)
class LogRow:
    seq: int
    digest: bytes
    entry: CertifiedEntry
    #: [[client, request_id, status, detail], ...] or None where the node did not execute it.
    results: list[list[Any]] | None


class ConsensusStore:
    """Reads and writes the consensus tables. Calls are synchronous and short (the trio thread,
    as everywhere in the store)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._db: sqlite3.Connection = store.db
        self._last: DurableState | None = None
        self._slots: dict[int, DurableSlot] = {}
        self._certified: dict[int, CertifiedEntry] = {}
        self.writes = 0

    # -- boot ------------------------------------------------------------------------------------

    def next_boot(self) -> int:
        """A counter bumped at every start: request ids are (boot << 32) + n, so a restarted
        daemon never reuses an id its lanes signed before."""
        with self._store.transaction() as db:
            row = db.execute("SELECT value FROM consensus_meta WHERE key = 'boot'").fetchone()
            boot = (cbor2.loads(row[0]) if row else 0) + 1
            db.execute(
                "INSERT OR REPLACE INTO consensus_meta (key, value) VALUES ('boot', ?)",
                (cbor2.dumps(boot),),
            )
        return int(boot)

    # -- durable replica state --------------------------------------------------------------------

    def durable_epoch(self) -> int:
        """The committee epoch whose replica wrote the durable state (0 before any switch)."""
        row = self._db.execute("SELECT value FROM consensus_meta WHERE key = 'epoch'").fetchone()
        return int(cbor2.loads(row[0])) if row else 0

    def reset_durable(self, epoch: int) -> None:
        """A new epoch's replica starts: drop the old epoch's durable state and name the new
        epoch, in one transaction (a crash leaves one or the other)."""
        with self._store.transaction() as db:
            for key in ("view", "view_change", "new_view", "stable"):
                db.execute("DELETE FROM consensus_meta WHERE key = ?", (key,))
            db.execute("DELETE FROM consensus_slots")
            db.execute("DELETE FROM consensus_certified")
            db.execute(
                "INSERT OR REPLACE INTO consensus_meta (key, value) VALUES ('epoch', ?)",
                (cbor2.dumps(epoch),),
            )
        self._last = None
        self._slots = {}
        self._certified = {}

    def load(self) -> DurableState | None:
        meta = dict(self._db.execute("SELECT key, value FROM consensus_meta").fetchall())
        if "view" not in meta:
            return None
        try:
            view, in_vc = cbor2.loads(meta["view"])
            vc = decode(meta["view_change"]) if meta.get("view_change") else None
            nv = decode(meta["new_view"]) if meta.get("new_view") else None
            stable = decode_stable(meta["stable"])
            slots = []
            for seq, sview, pp, prepared, sent in self._db.execute(
                "SELECT seq, view, pre_prepare, prepared, sent_commit FROM consensus_slots "
                "ORDER BY seq"
            ):
                slots.append(
                    DurableSlot(
                        seq=seq,
                        view=sview,
                        pre_prepare=decode(pp) if pp else None,  # type: ignore[arg-type]
                        prepared=decode_prepared(prepared) if prepared else None,
                        sent_commit=bool(sent),
                    )
                )
            certified = []
            for (entry,) in self._db.execute("SELECT entry FROM consensus_certified ORDER BY seq"):
                certified.extend(decode_entries(entry))
            state = DurableState(
                view=view,
                in_view_change=bool(in_vc),
                view_change=vc,  # type: ignore[arg-type]
                new_view=nv,  # type: ignore[arg-type]
                stable=stable,
                slots=tuple(slots),
                certified=tuple(certified),
            )
        except Exception as exc:
            raise ConsensusStoreError(f"durable consensus state is unreadable: {exc}") from None
        if (vc is not None and type(vc) is not ViewChange) or (
            nv is not None and type(nv) is not NewView
        ):
            raise ConsensusStoreError("durable view change / new view has the wrong type")
        for s in slots:
            if s.pre_prepare is not None and type(s.pre_prepare) is not PrePrepare:
                raise ConsensusStoreError("durable slot holds a non-pre-prepare")
        self._remember(state)
        return state

    def _remember(self, state: DurableState) -> None:
        self._last = state
        self._slots = {s.seq: s for s in state.slots}
        self._certified = {c.entry.seq: c for c in state.certified}

    def save(self, state: DurableState | None, log_rows: list[LogRow]) -> None:
        """Write ``state`` (diffed against the last one) and ``log_rows`` in one transaction."""
        if state is None and not log_rows:
            return
        now = time.time()
        with self._store.transaction() as db:
            if state is not None:
                self._save_state(db, state)
            if log_rows:
                db.executemany(
                    "INSERT OR IGNORE INTO consensus_log (seq, digest, entry, results, "
                    "committed_at) VALUES (?, ?, ?, ?, ?)",
                    [
                        (
                            r.seq,
                            r.digest,
                            encode_entries((r.entry,)),
                            None if r.results is None else cbor2.dumps(r.results),
                            now,
                        )
                        for r in log_rows
                    ],
                )
        self.writes += 1
        if state is not None:
            self._remember(state)

    def _save_state(self, db: sqlite3.Connection, state: DurableState) -> None:
        last = self._last
        put = "INSERT OR REPLACE INTO consensus_meta (key, value) VALUES (?, ?)"
        if last is None or (last.view, last.in_view_change) != (state.view, state.in_view_change):
            db.execute(put, ("view", cbor2.dumps([state.view, state.in_view_change])))
        if last is None or last.view_change is not state.view_change:
            vc = b"" if state.view_change is None else encode(state.view_change)
            db.execute(put, ("view_change", vc))
        if last is None or last.new_view is not state.new_view:
            nv = b"" if state.new_view is None else encode(state.new_view)
            db.execute(put, ("new_view", nv))
        if last is None or last.stable is not state.stable:
            db.execute(put, ("stable", encode_stable(state.stable)))
        seen = set()
        for s in state.slots:
            seen.add(s.seq)
            old = self._slots.get(s.seq)
            if (
                old is not None
                and old.view == s.view
                and old.pre_prepare is s.pre_prepare
                and old.prepared is s.prepared
                and old.sent_commit == s.sent_commit
            ):
                continue
            db.execute(
                "INSERT OR REPLACE INTO consensus_slots (seq, view, pre_prepare, prepared, "
                "sent_commit) VALUES (?, ?, ?, ?, ?)",
                (
                    s.seq,
                    s.view,
                    None if s.pre_prepare is None else encode(s.pre_prepare),
                    None if s.prepared is None else encode_prepared(s.prepared),
                    int(s.sent_commit),
                ),
            )
        gone = [(seq,) for seq in self._slots if seq not in seen]
        if gone:
            db.executemany("DELETE FROM consensus_slots WHERE seq = ?", gone)
        seen = set()
        for c in state.certified:
            seq = c.entry.seq
            seen.add(seq)
            if self._certified.get(seq) is c:
                continue
            db.execute(
                "INSERT OR REPLACE INTO consensus_certified (seq, entry) VALUES (?, ?)",
                (seq, encode_entries((c,))),
            )
        gone = [(seq,) for seq in self._certified if seq not in seen]
        if gone:
            db.executemany("DELETE FROM consensus_certified WHERE seq = ?", gone)

    # -- the committed log ------------------------------------------------------------------------

    def log_bounds(self) -> tuple[int, int]:
        """(number of rows, highest seq) of the local log."""
        count, top = self._db.execute("SELECT count(*), max(seq) FROM consensus_log").fetchone()
        return int(count), int(top or 0)

    def contiguous_upto(self, start: int = 0) -> int:
        """The highest s >= start such that every seq in 1..s is in the log (given 1..start are)."""
        s = start
        while True:
            rows = self._db.execute(
                "SELECT seq FROM consensus_log WHERE seq > ? ORDER BY seq LIMIT 1024", (s,)
            ).fetchall()
            if not rows:
                return s
            for (seq,) in rows:
                if seq != s + 1:
                    return s
                s = seq

    def read_log(self, first: int, last: int, limit: int) -> list[LogRow]:
        out = []
        for seq, digest, entry, results in self._db.execute(
            "SELECT seq, digest, entry, results FROM consensus_log WHERE seq >= ? AND seq <= ? "
            "ORDER BY seq LIMIT ?",
            (first, last, limit),
        ):
            (ce,) = decode_entries(entry)
            out.append(LogRow(seq, digest, ce, None if results is None else cbor2.loads(results)))
        return out

    def read_raw_entries(self, first: int, limit: int) -> list[bytes]:
        """Encoded single-entry envelopes from ``first`` on, contiguous, for log replies."""
        out = []
        expect = first
        for seq, entry in self._db.execute(
            "SELECT seq, entry FROM consensus_log WHERE seq >= ? ORDER BY seq LIMIT ?",
            (first, limit),
        ):
            if seq != expect:
                break
            out.append(entry)
            expect += 1
        return out


__all__ = [
    "ConsensusStore",
    "ConsensusStoreError",
    "LogRow",
    "decode_entries",
    "decode_prepared",
    "decode_stable",
    "encode_entries",
    "encode_prepared",
    "encode_stable",
]
