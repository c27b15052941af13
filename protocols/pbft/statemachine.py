"""The replicated state machine: a deterministic ``apply(state, tx)`` over an immutable state.

Every replica executes the same committed batches in the same order and must reach the same
state bit for bit: no clock, no randomness, no iteration over unordered containers. The state also
holds the client table (the last executed request id per client), so de-duplication is part of
what replicas agree on, and ``snapshot``/``restore`` give the canonical bytes that a checkpoint
digest covers and that state transfer ships.

Committee changes: a ``SetCommittee`` is one validator's signed vote. Votes of members of the
committee in force are kept (one per voter, its newest); when 2f+1 of them name the same
(epoch, validators), executed in entry s, the change becomes ``pending`` with the activation seq
``activation_seq(s, config)``: entries below it are ordered by the old committee, from it on by
the new one. ``committee`` is replaced when the entry just below the activation has executed, so
the state after that entry (a checkpoint: the activation is one past a checkpoint seq) is the
new epoch's starting state. Why no old-epoch entry can reach the activation: docs/pbft.md.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import cbor2

from p2pnode_protocols.cbor_tree import fits
from p2pnode_protocols.signing import Verifier

from .config import Committee, PbftConfig
from .errors import RemoteProtocolError
from .messages import MAX_SNAPSHOT_BYTES, Request
from .transactions import (
    AppTx,
    KvPut,
    Noop,
    SetCommittee,
    Transaction,
    check_committee_vote,
    decode_tx,
)

__all__ = [
    "LedgerState",
    "TxResult",
    "activation_seq",
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
    #: voter -> the (epoch, validators) it voted for last: committee votes for the next epoch by
    #: members of ``committee`` (at most one per member, so bounded by the committee size).
    votes: Mapping[bytes, tuple[int, tuple[bytes, ...]]] = field(default_factory=lambda: _EMPTY)


@dataclass(frozen=True, slots=True, kw_only=True)
class TxResult:
    """Outcome of one request: ``ok``, ``duplicate`` or ``rejected`` (with a reason)."""

    client: bytes
    request_id: int
    status: str
    detail: str = ""


def genesis(committee: Committee) -> LedgerState:
    return LedgerState(committee=committee)


def activation_seq(seq: int, config: PbftConfig) -> int:
    """The first seq the new committee orders when the change's quorum vote executes in ``seq``.

    An honest replica accepts a pre-prepare for q only if q <= stable + window, and its stable
    checkpoint is a multiple of K at or below what it executed. Before it executes ``seq`` its
    stable is at most ((seq - 1) // K) * K, so q is below the value returned here; after, it
    knows the change and accepts nothing from the activation on. So no honest old replica ever
    prepares an entry at or above it. The seq below it is a checkpoint seq."""
    k, window = config.checkpoint_interval, config.window
    return (seq - 1) // k * k + window + 1


def _vote(
    state: LedgerState, tx: SetCommittee, verifier: Verifier | None, config: PbftConfig
) -> tuple[LedgerState, str]:
    if verifier is None:
        return state, "committee votes need a verifier"
    if state.pending is not None or tx.epoch != state.committee.epoch + 1:
        return state, "committee change must name the next epoch, one at a time"
    if not state.committee.is_member(tx.voter):
        return state, "only a member of the committee in force votes"
    if not check_committee_vote(tx, verifier):
        return state, "bad committee vote signature"
    votes = dict(state.votes)
    votes[tx.voter] = (tx.epoch, tx.validators)
    same = sum(1 for v in votes.values() if v == (tx.epoch, tx.validators))
    if same < state.committee.quorum:
        return _replace(state, votes=MappingProxyType(votes)), ""
    new = Committee(epoch=tx.epoch, validators=tx.validators)
    at = activation_seq(state.seq + 1, config)
    return _replace(state, votes=_EMPTY, pending=(new, at)), ""


def apply(
    state: LedgerState,
    tx: Transaction,
    *,
    verifier: Verifier | None = None,
    config: PbftConfig | None = None,
) -> tuple[LedgerState, str]:
    """Apply one decoded transaction; returns the new state and "" or a rejection reason.
    ``state.seq`` is the entry before the one executing. ``verifier`` checks committee votes
    (without one they are rejected); ``config`` gives K and the window for the activation."""
    if isinstance(tx, Noop | AppTx):
        # An application's transaction changes only the application's state (folded from the
        # log by the application itself), never this ledger's.
        return state, ""
    if isinstance(tx, KvPut):
        kv = dict(state.kv)
        kv[tx.key] = tx.value
        return _replace(state, kv=MappingProxyType(kv)), ""
    if isinstance(tx, SetCommittee):
        return _vote(state, tx, verifier, config if config is not None else PbftConfig())
    raise TypeError(f"not a transaction: {tx!r}")


def execute_batch(
    state: LedgerState,
    seq: int,
    batch: tuple[Request, ...],
    *,
    verifier: Verifier | None = None,
    config: PbftConfig | None = None,
) -> tuple[LedgerState, tuple[TxResult, ...]]:
    """Execute the committed entry ``seq``: each request once; then, if ``seq`` is the last
    entry of the old committee, the pending committee takes over."""
    if seq != state.seq + 1:
        raise ValueError(f"entries execute in order: expected {state.seq + 1}, got {seq}")
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
        state, reason = apply(state, tx, verifier=verifier, config=config)
        results.append(_result(req, "rejected" if reason else "ok", reason))
    if clients is not None:
        state = _replace(state, clients=MappingProxyType(clients))
    if state.pending is not None and seq + 1 >= state.pending[1]:
        state = _replace(state, committee=state.pending[0], pending=None, votes=_EMPTY)
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
        "votes": state.votes,
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
        {voter: [e, list(vals)] for voter, (e, vals) in state.votes.items()},
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
        if not fits(obj, len(data)):
            raise ValueError("not canonical CBOR (shared references)")
        version, seq, committee, pending, kv, clients, votes = obj
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
        if type(votes) is not dict:
            raise ValueError("bad vote table")
        vote_table = {}
        for voter, (e, vals) in votes.items():
            if type(voter) is not bytes or type(e) is not int or type(vals) is not list:
                raise ValueError("bad vote item")
            vote_table[voter] = (e, Committee(epoch=e, validators=tuple(vals)).validators)
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
            votes=MappingProxyType(vote_table),
        )
    except RemoteProtocolError:
        raise
    except Exception as exc:  # any shape error in peer bytes is the peer's fault
        raise RemoteProtocolError(f"bad snapshot: {exc}") from None
    if snapshot(state) != data:
        raise RemoteProtocolError("snapshot is not canonical")
    return state
