"""Typed transactions of the replicated log, and their canonical CBOR encoding.

A client request's ``op`` is the encoding of one transaction. The replica never decodes ops: only
``statemachine.apply`` does, and an op that does not decode is committed and *rejected*
deterministically (every replica rejects it the same way), never an exception.

Applications (the training rounds of ``protocols/rounds``) commit their own transactions as
:class:`AppTx`: the ledger orders them and leaves them uninterpreted; every node folds them from the
committed log with the application's own deterministic state machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cbor2

from p2pnode_protocols.cbor_tree import fits
from p2pnode_protocols.signing import Signer, Verifier

from .errors import RemoteProtocolError
from .messages import MAX_COMMITTEE, MAX_ID_BYTES, MAX_OP_BYTES, MAX_SIG_BYTES

__all__ = [
    "MAX_APP_NAME",
    "MAX_KEY_BYTES",
    "AppTx",
    "KvPut",
    "Noop",
    "SetCommittee",
    "Transaction",
    "check_committee_vote",
    "committee_vote_bytes",
    "decode_tx",
    "encode_tx",
    "sign_committee_vote",
]

MAX_KEY_BYTES = 256
MAX_APP_NAME = 32
_VOTE_DOMAIN = b"p2pnode/pbft/committee-vote/v1\x00"


@dataclass(frozen=True, slots=True, kw_only=True)
class Noop:
    """Does nothing; a primary may use it to advance the log."""


@dataclass(frozen=True, slots=True, kw_only=True)
class KvPut:
    """Sets ``key`` to ``value`` in a small key/value map (for tests and simple parameters)."""

    key: str
    value: bytes

    def __post_init__(self) -> None:
        if type(self.key) is not str or not 0 < len(self.key.encode()) <= MAX_KEY_BYTES:
            raise ValueError(f"key must be a str of 1..{MAX_KEY_BYTES} UTF-8 bytes")
        if type(self.value) is not bytes or len(self.value) > MAX_OP_BYTES // 2:
            raise ValueError("value must be bytes of bounded size")


@dataclass(frozen=True, slots=True, kw_only=True)
class SetCommittee:
    """One validator's signed vote to replace the committee by ``validators`` as ``epoch``
    (the current epoch + 1). ``sig`` is ``voter``'s signature over :func:`committee_vote_bytes`.
    The change happens only when 2f+1 members of the committee in force vote for the same
    (epoch, validators): no single client, nor f validators, can change the committee."""

    epoch: int
    validators: tuple[bytes, ...]
    voter: bytes
    sig: bytes

    def __post_init__(self) -> None:
        if type(self.epoch) is not int or self.epoch < 1:
            raise ValueError("epoch must be an int >= 1")
        if type(self.validators) is not tuple or not 1 <= len(self.validators) <= MAX_COMMITTEE:
            raise ValueError("validators must be a non-empty tuple")
        for v in self.validators:
            if type(v) is not bytes or not 0 < len(v) <= MAX_ID_BYTES:
                raise ValueError("validator ids are non-empty bytes")
        if len(set(self.validators)) != len(self.validators):
            raise ValueError("validator ids must be distinct")
        if type(self.voter) is not bytes or not 0 < len(self.voter) <= MAX_ID_BYTES:
            raise ValueError("voter is a non-empty node id")
        if type(self.sig) is not bytes or len(self.sig) > MAX_SIG_BYTES:
            raise ValueError("sig must be bytes of bounded size")


def committee_vote_bytes(epoch: int, validators: tuple[bytes, ...]) -> bytes:
    """What a committee vote's signature covers: its own domain tag (a vote can never be
    mistaken for a PBFT message or anything else signed with a node key) and the change."""
    return _VOTE_DOMAIN + cbor2.dumps([epoch, list(validators)], canonical=True)


def sign_committee_vote(signer: Signer, epoch: int, validators: tuple[bytes, ...]) -> SetCommittee:
    """This validator's vote for ``validators`` as ``epoch``."""
    sig = signer.sign(committee_vote_bytes(epoch, validators))
    return SetCommittee(epoch=epoch, validators=validators, voter=signer.node_id, sig=sig)


def check_committee_vote(tx: SetCommittee, verifier: Verifier) -> bool:
    return verifier.verify(tx.voter, committee_vote_bytes(tx.epoch, tx.validators), tx.sig)


@dataclass(frozen=True, slots=True, kw_only=True)
class AppTx:
    """An application's transaction: ordered by the log, interpreted by the application."""

    app: str
    body: bytes

    def __post_init__(self) -> None:
        if type(self.app) is not str or not 0 < len(self.app) <= MAX_APP_NAME:
            raise ValueError(f"app must be a str of 1..{MAX_APP_NAME} characters")
        if type(self.body) is not bytes or len(self.body) > MAX_OP_BYTES - 64:
            raise ValueError("body must be bytes of bounded size")


Transaction = Noop | KvPut | SetCommittee | AppTx


def encode_tx(tx: Transaction) -> bytes:
    if isinstance(tx, Noop):
        body: list[Any] = [0]
    elif isinstance(tx, KvPut):
        body = [1, tx.key, tx.value]
    elif isinstance(tx, SetCommittee):
        body = [2, tx.epoch, list(tx.validators), tx.voter, tx.sig]
    elif isinstance(tx, AppTx):
        body = [3, tx.app, tx.body]
    else:
        raise TypeError(f"not a transaction: {tx!r}")
    return cbor2.dumps(body, canonical=True)


def decode_tx(data: bytes) -> Transaction:
    """Parse an op, or raise ``RemoteProtocolError`` (the client sent a bad transaction)."""
    if type(data) is not bytes or len(data) > MAX_OP_BYTES:
        raise RemoteProtocolError("op must be bytes of bounded size")
    try:
        obj = cbor2.loads(data, max_depth=4)
        if not fits(obj, len(data)) or cbor2.dumps(obj, canonical=True) != data:
            # One value, one encoding: replicas must agree on what an op means.
            raise ValueError("op is not canonical CBOR")
        if type(obj) is not list or not obj or type(obj[0]) is not int:
            raise ValueError("op must be [tag, ...]")
        tag = obj[0]
        if tag == 0 and len(obj) == 1:
            return Noop()
        if tag == 1 and len(obj) == 3:
            return KvPut(key=obj[1], value=obj[2])
        if tag == 2 and len(obj) == 5 and type(obj[2]) is list:
            return SetCommittee(epoch=obj[1], validators=tuple(obj[2]), voter=obj[3], sig=obj[4])
        if tag == 3 and len(obj) == 3:
            return AppTx(app=obj[1], body=obj[2])
        raise ValueError(f"unknown transaction {tag!r}")
    except (cbor2.CBORError, ValueError, TypeError, RecursionError) as exc:
        raise RemoteProtocolError(f"bad transaction: {exc}") from None
