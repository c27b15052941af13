"""Canonical CBOR codec for PBFT messages, and the digests and signing bytes derived from it.

A message is a CBOR array ``[type, version, field...]``; nested records (proofs, entries,
certificates) are bare arrays in a fixed order. ``encode`` writes canonical CBOR
(``canonical=True``), so the bytes a signature covers are a function of the message value alone.
``signing_bytes`` is a domain tag plus the canonical encoding *without* the signature field.

``decode`` is the only place peer bytes enter: the total size is checked before cbor2 sees the
bytes, nesting depth is capped, trailing bytes are refused, and every field goes through the
message constructors, which bound lengths. Anything wrong raises ``RemoteProtocolError``.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from typing import Any

import cbor2

from p2pnode_protocols.text import brief

from .errors import LocalProtocolError, RemoteProtocolError
from .messages import (
    Certificate,
    CertifiedEntry,
    Checkpoint,
    CommitVote,
    Entry,
    Message,
    NewView,
    Prepare,
    PreparedProof,
    PrePrepare,
    Request,
    StableCheckpoint,
    StateReply,
    Status,
    ViewChange,
)

__all__ = [
    "MAX_MESSAGE_BYTES",
    "VERSION",
    "batch_digest",
    "decode",
    "encode",
    "signing_bytes",
]

VERSION = 1
#: No single PBFT message may exceed this (a state reply with a full snapshot is the largest).
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
#: Deepest legitimate nesting is NewView > ViewChange > PreparedProof > PrePrepare > batch >
#: Request > field: well under this.
_MAX_DEPTH = 12
#: Separates our signatures from anything else signed with the same libp2p key.
_DOMAIN = b"p2pnode/pbft/v1\x00"

_TAGS: dict[type, int] = {
    Request: 1,
    PrePrepare: 2,
    Prepare: 3,
    CommitVote: 4,
    Checkpoint: 5,
    ViewChange: 6,
    NewView: 7,
    Status: 8,
    StateReply: 9,
}


# -- encoding ---------------------------------------------------------------------------------


def _body(msg: Message) -> list[Any]:
    """The fields of ``msg`` except its signature, as a CBOR-ready list. A message of a later
    epoch than genesis carries its epoch as a last field (genesis bytes are unchanged)."""
    body = _fields(msg)
    epoch = getattr(msg, "epoch", 0)
    if epoch:
        body.append(epoch)
    return body


def _fields(msg: Message) -> list[Any]:
    if isinstance(msg, Request):
        return [1, VERSION, msg.client, msg.request_id, msg.op]
    if isinstance(msg, PrePrepare):
        return [
            2,
            VERSION,
            msg.view,
            msg.seq,
            msg.digest,
            [_full(r) for r in msg.batch],
            msg.sender,
        ]
    if isinstance(msg, Prepare):
        return [3, VERSION, msg.view, msg.seq, msg.digest, msg.sender]
    if isinstance(msg, CommitVote):
        return [4, VERSION, msg.view, msg.seq, msg.digest, msg.sender]
    if isinstance(msg, Checkpoint):
        return [5, VERSION, msg.seq, msg.state_digest, msg.sender]
    if isinstance(msg, ViewChange):
        return [
            6,
            VERSION,
            msg.new_view,
            msg.stable_seq,
            [_full(c) for c in msg.checkpoint_proof],
            [[_full(p.pre_prepare), [_full(q) for q in p.prepares]] for p in msg.prepared],
            msg.sender,
        ]
    if isinstance(msg, NewView):
        return [
            7,
            VERSION,
            msg.view,
            [_full(v) for v in msg.view_changes],
            [_full(p) for p in msg.pre_prepares],
            msg.sender,
        ]
    if isinstance(msg, Status):
        return [
            8,
            VERSION,
            msg.view,
            msg.in_view_change,
            msg.executed_seq,
            msg.stable_seq,
            msg.sender,
        ]
    if isinstance(msg, StateReply):
        cp = msg.checkpoint
        return [
            9,
            VERSION,
            None if cp is None else [cp.seq, cp.snapshot, [_full(c) for c in cp.proof]],
            [_enc_certified(e) for e in msg.entries],
            msg.sender,
        ]
    raise LocalProtocolError(f"cannot encode {type(msg).__name__}")


def _enc_certified(e: CertifiedEntry) -> list[Any]:
    return [
        [e.entry.seq, e.entry.digest, [_full(r) for r in e.entry.batch]],
        [_full(v) for v in e.certificate.votes],
    ]


def _full(msg: Message) -> list[Any]:
    body = _body(msg)
    body.append(msg.signature)  # type: ignore[attr-defined]
    return body


def encode(msg: Message) -> bytes:
    """The canonical CBOR bytes of a signed message (what goes on the wire)."""
    data = cbor2.dumps(_full(msg), canonical=True)
    if len(data) > MAX_MESSAGE_BYTES:
        raise LocalProtocolError(f"{type(msg).__name__} encodes to {len(data)} bytes: too big")
    return data


def signing_bytes(msg: Message) -> bytes:
    """What ``msg.signature`` covers: a domain tag and the canonical CBOR of all other fields."""
    return _DOMAIN + cbor2.dumps(_body(msg), canonical=True)


def batch_digest(batch: tuple[Request, ...]) -> bytes:
    """The digest naming a batch of requests (signatures included, so a batch is one value)."""
    return hashlib.sha256(cbor2.dumps([_full(r) for r in batch], canonical=True)).digest()


# -- decoding ---------------------------------------------------------------------------------


def _arr(x: Any, n: int, what: str) -> list[Any]:
    if type(x) is not list or len(x) != n:
        raise LocalProtocolError(f"{what}: expected an array of {n} items")
    return x


def _seq_of(x: Any, what: str) -> list[Any]:
    if type(x) is not list:
        raise LocalProtocolError(f"{what}: expected an array")
    return x


def _head(x: Any, tag: int, n: int) -> list[Any]:
    arr = _arr(x, n, f"message type {brief(tag)}")
    if arr[0] != tag or type(arr[0]) is not int:
        raise LocalProtocolError(f"expected message type {brief(tag)}, got {brief(arr[0])}")
    if arr[1] != VERSION or type(arr[1]) is not int:
        raise LocalProtocolError(f"unsupported version {arr[1]!r}")
    return arr


def _ehead(x: Any, tag: int, n: int) -> tuple[list[Any], int]:
    """A message that may carry an epoch just before its signature: (fields, epoch)."""
    if type(x) is list and len(x) == n + 1:
        epoch = x[n - 1]
        if type(epoch) is not int or epoch < 1:
            raise LocalProtocolError("a present epoch is a positive int (genesis omits it)")
        return _head(x[: n - 1] + x[n:], tag, n), epoch
    return _head(x, tag, n), 0


def _request(x: Any) -> Request:
    a = _head(x, 1, 6)
    return Request(client=a[2], request_id=a[3], op=a[4], signature=a[5])


def _pre_prepare(x: Any) -> PrePrepare:
    a, epoch = _ehead(x, 2, 8)
    batch = tuple(_request(r) for r in _seq_of(a[5], "batch"))
    return PrePrepare(
        view=a[2], seq=a[3], digest=a[4], batch=batch, sender=a[6], signature=a[7], epoch=epoch
    )


def _prepare(x: Any) -> Prepare:
    a, epoch = _ehead(x, 3, 7)
    return Prepare(view=a[2], seq=a[3], digest=a[4], sender=a[5], signature=a[6], epoch=epoch)


def _commit_vote(x: Any) -> CommitVote:
    a, epoch = _ehead(x, 4, 7)
    return CommitVote(view=a[2], seq=a[3], digest=a[4], sender=a[5], signature=a[6], epoch=epoch)


def _checkpoint(x: Any) -> Checkpoint:
    a, epoch = _ehead(x, 5, 6)
    return Checkpoint(seq=a[2], state_digest=a[3], sender=a[4], signature=a[5], epoch=epoch)


def _view_change(x: Any) -> ViewChange:
    a, epoch = _ehead(x, 6, 8)
    proof = tuple(_checkpoint(c) for c in _seq_of(a[4], "checkpoint_proof"))
    prepared = []
    for p in _seq_of(a[5], "prepared"):
        pp, qs = _arr(p, 2, "prepared proof")
        prepares = tuple(_prepare(q) for q in _seq_of(qs, "prepares"))
        prepared.append(PreparedProof(pre_prepare=_pre_prepare(pp), prepares=prepares))
    return ViewChange(
        new_view=a[2],
        stable_seq=a[3],
        checkpoint_proof=proof,
        prepared=tuple(prepared),
        sender=a[6],
        signature=a[7],
        epoch=epoch,
    )


def _new_view(x: Any) -> NewView:
    a, epoch = _ehead(x, 7, 7)
    vcs = tuple(_view_change(v) for v in _seq_of(a[3], "view_changes"))
    pps = tuple(_pre_prepare(p) for p in _seq_of(a[4], "pre_prepares"))
    return NewView(
        view=a[2], view_changes=vcs, pre_prepares=pps, sender=a[5], signature=a[6], epoch=epoch
    )


def _status(x: Any) -> Status:
    a, epoch = _ehead(x, 8, 8)
    return Status(
        view=a[2],
        in_view_change=a[3],
        executed_seq=a[4],
        stable_seq=a[5],
        sender=a[6],
        signature=a[7],
        epoch=epoch,
    )


def _state_reply(x: Any) -> StateReply:
    a, epoch = _ehead(x, 9, 6)
    cp = None
    if a[2] is not None:
        seq, snapshot, proof = _arr(a[2], 3, "stable checkpoint")
        cps = tuple(_checkpoint(c) for c in _seq_of(proof, "checkpoint proof"))
        cp = StableCheckpoint(seq=seq, snapshot=snapshot, proof=cps)
    entries = []
    for e in _seq_of(a[3], "entries"):
        ent, votes = _arr(e, 2, "certified entry")
        seq, digest, batch = _arr(ent, 3, "entry")
        entry = Entry(seq=seq, digest=digest, batch=tuple(_request(r) for r in _seq_of(batch, "b")))
        cert = Certificate(votes=tuple(_commit_vote(v) for v in _seq_of(votes, "votes")))
        entries.append(CertifiedEntry(entry=entry, certificate=cert))
    return StateReply(
        checkpoint=cp, entries=tuple(entries), sender=a[4], signature=a[5], epoch=epoch
    )


_DECODERS: dict[int, Callable[[Any], Message]] = {
    1: _request,
    2: _pre_prepare,
    3: _prepare,
    4: _commit_vote,
    5: _checkpoint,
    6: _view_change,
    7: _new_view,
    8: _status,
    9: _state_reply,
}


def decode(data: bytes) -> Message:
    """Parse one whole message from peer bytes, or raise ``RemoteProtocolError``."""
    if type(data) is not bytes:
        raise RemoteProtocolError("expected bytes")
    if len(data) > MAX_MESSAGE_BYTES:
        raise RemoteProtocolError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}")
    if not data:
        raise RemoteProtocolError("empty message")
    fp = io.BytesIO(data)
    try:
        obj = cbor2.CBORDecoder(fp, max_depth=_MAX_DEPTH).decode()
    except (cbor2.CBORError, ValueError, RecursionError, OverflowError) as exc:
        raise RemoteProtocolError(f"bad CBOR: {exc}") from None
    if fp.tell() != len(data):
        raise RemoteProtocolError(f"{len(data) - fp.tell()} trailing bytes after the message")
    if type(obj) is not list or len(obj) < 2 or type(obj[0]) is not int:
        raise RemoteProtocolError("a message is an array [type, version, ...]")
    decoder = _DECODERS.get(obj[0])
    if decoder is None:
        raise RemoteProtocolError(f"unknown message type {brief(obj[0])}")
    try:
        return decoder(obj)
    except LocalProtocolError as exc:
        raise RemoteProtocolError(f"malformed message: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise RemoteProtocolError(f"malformed message: {exc}") from None
