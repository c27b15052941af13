"""The trust ledger's committed transactions (the body of a PBFT ``AppTx(app="trust")``).

A transaction that acts for a node (staking, a proposal, a vote, a transfer) carries that node's
signature over a domain-separated payload and a nonce that must grow with every transaction of
the node, so a replayed copy is refused. The PBFT client that submits it (a lane key) proves
nothing about who asks: the signature inside does.

- :class:`Stake` / :class:`Unstake`: move units between a node's balance and its stake.
- :class:`Transfer`: pay units of the balance to another node.
- :class:`Propose`: a governance proposal (``param``, ``committee`` or ``admission``).
- :class:`Vote`: a stake-weighted yes or no on an open proposal.
- :class:`Accuse`: self-contained evidence (two conflicting signed PBFT messages of one
  validator, or a node's signed update notice for a round it had no task in); anyone may submit
  it, every node verifies it before the penalty applies.
- :class:`Tick`: nothing but a log entry, so deadlines and epoch boundaries pass on a quiet log.

Canonical CBOR ``[tag, ...]``; :func:`decode_tx` bounds every field and raises
``RemoteProtocolError`` on anything else.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import cbor2

from p2pnode_protocols.cbor_tree import fits
from p2pnode_protocols.machine import RemoteProtocolError
from p2pnode_protocols.signing import Signer, Verifier

__all__ = [
    "APP",
    "KINDS",
    "Accuse",
    "Propose",
    "SignedTx",
    "Stake",
    "Tick",
    "Transfer",
    "TrustTx",
    "Unstake",
    "Vote",
    "decode_tx",
    "encode_tx",
    "proposal_id",
    "sign_tx",
]

APP = "trust"
KINDS = ("param", "committee", "admission")
ACCUSATIONS = ("equivocation", "unsolicited")
MAX_ID = 64
MAX_SIG = 128
MAX_AMOUNT = 1 << 62
MAX_EVIDENCE = 60 * 1024
MAX_LIST = 256
_DOMAIN = "p2pnode/trust/tx/1"


@dataclass(frozen=True, slots=True, kw_only=True)
class Stake:
    node: bytes
    amount: int
    nonce: int
    sig: bytes = field(default=b"", compare=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class Unstake:
    node: bytes
    amount: int
    nonce: int
    sig: bytes = field(default=b"", compare=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class Transfer:
    node: bytes
    to: bytes
    amount: int
    nonce: int
    sig: bytes = field(default=b"", compare=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class Propose:
    """``change``: ``param`` {name: value, ...}; ``committee`` {"validators": [id, ...]};
    ``admission`` any of {"allowlist": [id, ...], "min_stake": int, "reputation_threshold": x}."""

    node: bytes
    kind: str
    change: dict[str, Any]
    nonce: int
    title: str = ""
    sig: bytes = field(default=b"", compare=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class Vote:
    node: bytes
    proposal: str
    yes: bool
    nonce: int
    sig: bytes = field(default=b"", compare=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class Accuse:
    """Self-contained evidence: ``equivocation``, two encoded, signed, conflicting PBFT messages
    of a validator; ``unsolicited``, an encoded update notice (``second`` empty) signed by a
    node for a round whose committed tasks do not name it."""

    kind: str
    first: bytes
    second: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Tick:
    pass


SignedTx = Stake | Unstake | Transfer | Propose | Vote
TrustTx = SignedTx | Accuse | Tick


def _fields(tx: SignedTx) -> list[Any]:
    if isinstance(tx, Stake):
        return [1, tx.node, tx.nonce, tx.amount]
    if isinstance(tx, Unstake):
        return [2, tx.node, tx.nonce, tx.amount]
    if isinstance(tx, Transfer):
        return [7, tx.node, tx.nonce, tx.to, tx.amount]
    if isinstance(tx, Propose):
        return [3, tx.node, tx.nonce, tx.kind, tx.change, tx.title]
    if isinstance(tx, Vote):
        return [4, tx.node, tx.nonce, tx.proposal, tx.yes]
    raise TypeError(f"not a signed trust transaction: {tx!r}")


def signing_payload(tx: SignedTx) -> bytes:
    return cbor2.dumps([_DOMAIN, *_fields(tx)], canonical=True)


def verify_tx(tx: SignedTx, verifier: Verifier) -> bool:
    return verifier.verify(tx.node, signing_payload(tx), tx.sig)


def sign_tx(signer: Signer, tx: SignedTx) -> SignedTx:
    """``tx`` with ``node`` set to the signer and its signature."""
    unsigned = _with(tx, node=signer.node_id, sig=b"")
    return _with(unsigned, sig=signer.sign(signing_payload(unsigned)))


def _with(tx: SignedTx, **changes: Any) -> SignedTx:
    values = {k: getattr(tx, k) for k in tx.__dataclass_fields__}
    values.update(changes)
    return type(tx)(**values)


def encode_tx(tx: TrustTx) -> bytes:
    if isinstance(tx, Accuse):
        body: list[Any] = [5, tx.kind, tx.first, tx.second]
    elif isinstance(tx, Tick):
        body = [6]
    else:
        body = [*_fields(tx), tx.sig]
    return cbor2.dumps(body, canonical=True)


def proposal_id(body: bytes) -> str:
    """A proposal's id: the first 8 bytes of the hash of its transaction, in hex."""
    return hashlib.sha256(body).hexdigest()[:16]


def _id(v: object, name: str) -> bytes:
    if type(v) is not bytes or not 0 < len(v) <= MAX_ID:
        raise ValueError(f"{name} must be 1..{MAX_ID} bytes")
    return v


def _amount(v: object) -> int:
    if type(v) is not int or not 0 < v <= MAX_AMOUNT:
        raise ValueError(f"amount must be an int in 1..{MAX_AMOUNT}")
    return v


def _nonce(v: object) -> int:
    if type(v) is not int or not 0 < v < 1 << 63:
        raise ValueError("nonce must be a positive int")
    return v


def _sig(v: object) -> bytes:
    if type(v) is not bytes or not 0 < len(v) <= MAX_SIG:
        raise ValueError("sig must be 1..128 bytes")
    return v


def _change(kind: object, change: object) -> tuple[str, dict[str, Any]]:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}")
    if type(change) is not dict or not 0 < len(change) <= 32:
        raise ValueError("change must be a non-empty map")
    for k, v in change.items():
        if type(k) is not str or len(k) > 64:
            raise ValueError("change keys are short strings")
        if type(v) is list:
            if len(v) > MAX_LIST:
                raise ValueError("a list in a change holds at most 256 items")
            for item in v:
                _id(item, k)
        elif type(v) not in (int, float, bool):
            raise ValueError(f"{k}: a value is a number or a list of node ids")
    return kind, change  # type: ignore[return-value]


def decode_tx(data: bytes) -> TrustTx:
    try:
        o = cbor2.loads(data, max_depth=4)
        if not fits(o, len(data)) or cbor2.dumps(o, canonical=True) != data:
            raise ValueError("not canonical CBOR")
        if type(o) is not list or not o:
            raise ValueError("a transaction is [tag, ...]")
        tag = o[0]
        if tag == 6 and len(o) == 1:
            return Tick()
        if tag == 5 and len(o) == 4:
            if o[1] not in ACCUSATIONS:
                raise ValueError(f"an accusation is one of {', '.join(ACCUSATIONS)}")
            messages = o[2:] if o[1] == "equivocation" else o[2:3]
            for m in messages:
                if type(m) is not bytes or not 0 < len(m) <= MAX_EVIDENCE:
                    raise ValueError("evidence messages are bounded bytes")
            if o[1] == "unsolicited" and o[3] != b"":
                raise ValueError("an unsolicited notice is one message")
            return Accuse(kind=o[1], first=o[2], second=o[3])
        if tag in (1, 2) and len(o) == 5:
            cls = Stake if tag == 1 else Unstake
            return cls(
                node=_id(o[1], "node"), nonce=_nonce(o[2]), amount=_amount(o[3]), sig=_sig(o[4])
            )
        if tag == 7 and len(o) == 6:
            return Transfer(
                node=_id(o[1], "node"),
                nonce=_nonce(o[2]),
                to=_id(o[3], "to"),
                amount=_amount(o[4]),
                sig=_sig(o[5]),
            )
        if tag == 3 and len(o) == 7:
            kind, change = _change(o[3], o[4])
            if type(o[5]) is not str or len(o[5]) > 200:
                raise ValueError("title must be a str of at most 200 characters")
            return Propose(
                node=_id(o[1], "node"),
                nonce=_nonce(o[2]),
                kind=kind,
                change=change,
                title=o[5],
                sig=_sig(o[6]),
            )
        if tag == 4 and len(o) == 6:
            if type(o[3]) is not str or len(o[3]) != 16:
                raise ValueError("proposal must be a 16-character id")
            if type(o[4]) is not bool:
                raise ValueError("yes must be true or false")
            return Vote(
                node=_id(o[1], "node"), nonce=_nonce(o[2]), proposal=o[3], yes=o[4], sig=_sig(o[5])
            )
        raise ValueError(f"unknown trust transaction {tag!r}")
    except RemoteProtocolError:
        raise
    except (cbor2.CBORError, ValueError, TypeError, RecursionError) as exc:
        raise RemoteProtocolError(f"bad trust transaction: {exc}") from None
