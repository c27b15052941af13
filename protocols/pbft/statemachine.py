"""The replicated state machine: a deterministic ``apply(state, tx)`` over an immutable state.

Every replica executes the same committed batches in the same order and must reach the same
state bit for bit: no clock, no randomness, no iteration over unordered containers. The state also
holds the client table (the last executed request id per client), so de-duplication is part of
what replicas agree on, and ``snapshot``/``restore`` give the canonical bytes that a checkpoint
digest covers and that state transfer ships.

Committee changes: a committed ``SetCommittee`` for epoch e+1 becomes ``pending`` and replaces
``committee`` when the entry at ``activate_seq`` executes. (Switching the running replicas to the
new committee is the daemon's job; see docs/pbft.md.)
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import cbor2

from .config import Committee
from .errors import RemoteProtocolError
from .messages import MAX_SNAPSHOT_BYTES, Request
from .transactions import AppTx, KvPut, Noop, SetCommittee, Transaction, decode_tx

__all__ = [
    "LedgerState",
    "TxResult",
    "apply",
    "execute_batch",
    "genesis",
    "restore",
    "snapshot",
    "state_digest",
]

_EMPTY: Mapping[Any, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True, kw_only=True)
class LedgerState:
    """What the committed log has built so far. Never mutated: ``apply`` returns a new one."""

    #: Sequence number of the last executed entry.
    seq: int = 0
    committee: Committee
    #: A committed committee change waiting for its activation seq.
    pending: tuple[Committee, int] | None = None
    kv: Mapping[str, bytes] = field(default_factory=lambda: _EMPTY)
    #: client id -> last executed request id (one outstanding request per client, as in PBFT).
    clients: Mapping[bytes, int] = field(default_factory=lambda: _EMPTY)


@dataclass(frozen=True, slots=True, kw_only=True)
class TxResult:
    """Outcome of one request: ``ok``, ``duplicate`` or ``rejected`` (with a reason)."""

    client: bytes
    request_id: int
    status: str
    detail: str = ""


def genesis(committee: Committee) -> LedgerState:
    return LedgerState(committee=committee)


def apply(state: LedgerState, tx: Transaction) -> tuple[LedgerState, str]:
    """Apply one decoded transaction; returns the new state and "" or a rejection reason."""
    if isinstance(tx, Noop | AppTx):
        # An application's transaction changes only the application's state (folded from the
        # log by the application itself), never this ledger's.
        return state, ""
    if isinstance(tx, KvPut):
        kv = dict(state.kv)
        kv[tx.key] = tx.value
        return _replace(state, kv=MappingProxyType(kv)), ""
    if isinstance(tx, SetCommittee):
        if tx.epoch != state.committee.epoch + 1 or state.pending is not None:
            return state, "committee change must name the next epoch, one at a time"
        if tx.activate_seq <= state.seq + 1:
            return state, "committee change must activate at a later sequence number"
        pending = (Committee(epoch=tx.epoch, validators=tx.validators), tx.activate_seq)
        return _replace(state, pending=pending), ""
    raise TypeError(f"not a transaction: {tx!r}")


def execute_batch(
    state: LedgerState, seq: int, batch: tuple[Request, ...]
) -> tuple[LedgerState, tuple[TxResult, ...]]:
    """Execute the committed entry ``seq``: activate a due committee, then each request once."""
    if seq != state.seq + 1:
        raise ValueError(f"entries execute in order: expected {state.seq + 1}, got {seq}")
    if state.pending is not None and seq >= state.pending[1]:
        state = _replace(state, committee=state.pending[0], pending=None)
    results = []
    clients: dict[bytes, int] | None = None
    for req in batch:
        table = clients if clients is not None else state.clients
        if table.get(req.client, 0) >= req.request_id:
            results.append(
                TxResult(client=req.client, request_id=req.request_id, status="duplicate")
            )
            continue
        if clients is None:
            clients = dict(state.clients)
        clients[req.client] = req.request_id
        try:
            tx = decode_tx(req.op)
        except RemoteProtocolError as exc:
            results.append(_result(req, "rejected", str(exc)))
            continue
        state, reason = apply(state, tx)
        results.append(_result(req, "rejected" if reason else "ok", reason))
    if clients is not None:
        state = _replace(state, clients=MappingProxyType(clients))
    return _replace(state, seq=seq), tuple(results)


def _result(req: Request, status: str, detail: str) -> TxResult:
    return TxResult(client=req.client, request_id=req.request_id, status=status, detail=detail)


def _replace(state: LedgerState, **changes: Any) -> LedgerState:
    values = {
        "seq": state.seq,
        "committee": state.committee,
        "pending": state.pending,
        "kv": state.kv,
        "clients": state.clients,
    }
    values.update(changes)
    return LedgerState(**values)


def _committee_cbor(c: Committee) -> list[Any]:
    return [c.epoch, list(c.validators)]


def snapshot(state: LedgerState) -> bytes:
    """Canonical bytes of the state: what a checkpoint digest covers."""
    pending = None
    if state.pending is not None:
        pending = [_committee_cbor(state.pending[0]), state.pending[1]]
    body = [
        1,
        state.seq,
        _committee_cbor(state.committee),
        pending,
        dict(state.kv),
        dict(state.clients),
    ]
    return cbor2.dumps(body, canonical=True)


def state_digest(snap: bytes) -> bytes:
    return hashlib.sha256(snap).digest()


def restore(data: bytes) -> LedgerState:
    """Parse a snapshot from a peer (after its digest matched a stable checkpoint)."""
    if type(data) is not bytes or len(data) > MAX_SNAPSHOT_BYTES:
        raise RemoteProtocolError("snapshot too large")
    try:
        obj = cbor2.loads(data, max_depth=6)
        version, seq, committee, pending, kv, clients = obj
        if version != 1 or type(seq) is not int or type(kv) is not dict:
            raise ValueError("bad snapshot header")
        if type(clients) is not dict:
            raise ValueError("bad client table")
        for k, v in kv.items():
            if type(k) is not str or type(v) is not bytes:
                raise ValueError("bad kv item")
        for k, v in clients.items():
            if type(k) is not bytes or type(v) is not int:
                raise ValueError("bad client item")
        pend = None
        if pending is not None:
            (epoch, vals), at = pending
            pend = (Committee(epoch=epoch, validators=tuple(vals)), at)
        state = LedgerState(
            seq=seq,
            committee=Committee(epoch=committee[0], validators=tuple(committee[1])),
            pending=pend,
            kv=MappingProxyType(kv),
            clients=MappingProxyType(clients),
        )
    except RemoteProtocolError:
        raise
    except Exception as exc:  # any shape error in peer bytes is the peer's fault
        raise RemoteProtocolError(f"bad snapshot: {exc}") from None
    if snapshot(state) != data:
        raise RemoteProtocolError("snapshot is not canonical")
    return state
