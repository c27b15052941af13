"""What trainers and validators tell each other about a round, and the result they commit.

- :class:`UpdateNotice`: a trainer's signed "my update for (job, round) is blob KEY". The same
  signature travels on inside the committed result, so anyone can check that every included
  update came from the node it names.
- :class:`RoundResult`: the exact update set (by key), the new model key, contributors,
  outliers, scores and metrics. Its canonical bytes are what validators attest.
- :class:`Proposal`: a result signed by the validator proposing it.
- :class:`Attestation`: a validator's signature over a result's digest, sent only after its own
  recomputation gave the same model key.
- :class:`Commitment`: commit then reveal: a trainer's signed hash of its update key and a salt,
  sent before the key itself; the reveal is the :class:`UpdateNotice` with the salt.
- :class:`CommitClosed`: a validator tells the round's trainers that its commit phase closed
  (reveal now).
- :class:`Flag`: a validator's finding about a node in a round (a failed spot-check, a copy, a
  wrong aggregate, censorship), carried by the result it attests.

Wire form: canonical CBOR ``[tag, ...]``; :func:`decode_message` bounds every field before use.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, replace
from typing import Any

import cbor2

from p2pnode_protocols.cbor_tree import fits
from p2pnode_protocols.machine import RemoteProtocolError
from p2pnode_protocols.signing import Signer, Verifier

from .spec import MAX_PARTICIPANTS

__all__ = [
    "FLAG_KINDS",
    "MAX_KEY",
    "MAX_MESSAGE_BYTES",
    "Attestation",
    "CommitClosed",
    "Commitment",
    "Flag",
    "Proposal",
    "RoundResult",
    "UpdateNotice",
    "UpdateRef",
    "attestation_payload",
    "commitment_digest",
    "decode_message",
    "decode_result",
    "encode_message",
    "encode_result",
    "result_digest",
    "sign_commitment",
    "sign_notice",
]

MAX_KEY = 128
MAX_ID = 64
MAX_SIG = 128
MAX_JOB = 32
#: the largest result: MAX_PARTICIPANTS * (staleness window) updates with signatures.
MAX_RESULT_BYTES = 48 * 1024
MAX_MESSAGE_BYTES = MAX_RESULT_BYTES + 1024

_NOTICE_DOMAIN = "p2pnode/rounds/update/1"
_ATTEST_DOMAIN = "p2pnode/rounds/attest/1"
_PROPOSE_DOMAIN = "p2pnode/rounds/propose/1"
_COMMIT_DOMAIN = "p2pnode/rounds/commit/1"
_COMMIT_SIG_DOMAIN = "p2pnode/rounds/commitment/1"
MAX_SALT = 32
MAX_DETAIL = 128

#: what a flag may say of a node: ``spot_check`` (its update did not recompute; detail: the hash
#: of the update it should have been), ``copy`` (a near-duplicate of another trainer's update;
#: detail: that trainer's id in hex), ``wrong_aggregate`` (a validator proposed a result that did
#: not recompute; detail: the result's digest hex), ``censorship`` (a proposer left out updates
#: the validators held; detail: its result's digest hex).
FLAG_KINDS = ("spot_check", "copy", "wrong_aggregate", "censorship")
#: the kinds about an update in the result (the update stays listed, out of the aggregate).
UPDATE_FLAGS = ("spot_check", "copy")


def _check_bytes(name: str, v: object, hi: int) -> None:
    if type(v) is not bytes or not 0 < len(v) <= hi:
        raise ValueError(f"{name} must be 1..{hi} bytes")


def _check_str(name: str, v: object, hi: int) -> None:
    if type(v) is not str or not 0 < len(v) <= hi:
        raise ValueError(f"{name} must be a str of 1..{hi} characters")


def _check_int(name: str, v: object, lo: int = 0, hi: int = 1 << 62) -> None:
    if type(v) is not int or not lo <= v <= hi:
        raise ValueError(f"{name} must be an int in {lo}..{hi}")


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateRef:
    """One update as the result names it: trained by ``node`` on round ``round``'s task."""

    node: bytes
    round: int
    key: str
    size: int
    samples: int
    sig: bytes

    def __post_init__(self) -> None:
        _check_bytes("node", self.node, MAX_ID)
        _check_int("round", self.round, 1)
        _check_str("key", self.key, MAX_KEY)
        _check_int("size", self.size, 1)
        _check_int("samples", self.samples, 1)
        _check_bytes("sig", self.sig, MAX_SIG)

    def payload(self, job: str) -> bytes:
        return cbor2.dumps(
            [_NOTICE_DOMAIN, job, self.round, self.node, self.key, self.size, self.samples],
            canonical=True,
        )

    def verify(self, job: str, verifier: Verifier) -> bool:
        return verifier.verify(self.node, self.payload(job), self.sig)

    def as_list(self) -> list[Any]:
        return [self.node, self.round, self.key, self.size, self.samples, self.sig]


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateNotice:
    job: str
    update: UpdateRef
    #: the commitment's salt under commit then reveal (b"" without).
    salt: bytes = b""

    def __post_init__(self) -> None:
        _check_str("job", self.job, MAX_JOB)
        if type(self.salt) is not bytes or len(self.salt) > MAX_SALT:
            raise ValueError(f"salt must be 0..{MAX_SALT} bytes")


def commitment_digest(job: str, round: int, node: bytes, key: str, salt: bytes) -> bytes:
    """What a trainer commits to before it reveals its update key."""
    return hashlib.sha256(
        cbor2.dumps([_COMMIT_DOMAIN, job, round, node, key, salt], canonical=True)
    ).digest()


@dataclass(frozen=True, slots=True, kw_only=True)
class Commitment:
    """A trainer's signed commitment to its update of (job, round)."""

    job: str
    round: int
    node: bytes
    digest: bytes
    sig: bytes

    def __post_init__(self) -> None:
        _check_str("job", self.job, MAX_JOB)
        _check_int("round", self.round, 1)
        _check_bytes("node", self.node, MAX_ID)
        if type(self.digest) is not bytes or len(self.digest) != 32:
            raise ValueError("digest must be 32 bytes")
        _check_bytes("sig", self.sig, MAX_SIG)

    def payload(self) -> bytes:
        return cbor2.dumps(
            [_COMMIT_SIG_DOMAIN, self.job, self.round, self.node, self.digest], canonical=True
        )

    def verify(self, verifier: Verifier) -> bool:
        return verifier.verify(self.node, self.payload(), self.sig)


def sign_commitment(signer: Signer, job: str, round: int, digest: bytes) -> Commitment:
    c = Commitment(job=job, round=round, node=signer.node_id, digest=digest, sig=b"-")
    return replace(c, sig=signer.sign(c.payload()))


@dataclass(frozen=True, slots=True, kw_only=True)
class CommitClosed:
    """A validator's commit phase of (job, round) closed: the trainers may reveal."""

    job: str
    round: int

    def __post_init__(self) -> None:
        _check_str("job", self.job, MAX_JOB)
        _check_int("round", self.round, 1)


@dataclass(frozen=True, slots=True, kw_only=True)
class Flag:
    """A finding about ``node`` that the result's attesters agree with (see FLAG_KINDS)."""

    node: bytes
    kind: str
    detail: str = ""

    def __post_init__(self) -> None:
        _check_bytes("node", self.node, MAX_ID)
        if self.kind not in FLAG_KINDS:
            raise ValueError(f"flag kind must be one of {', '.join(FLAG_KINDS)}")
        if type(self.detail) is not str or len(self.detail) > MAX_DETAIL:
            raise ValueError(f"flag detail must be a str of at most {MAX_DETAIL} characters")

    def as_list(self) -> list[Any]:
        return [self.node, self.kind, self.detail]


def sign_notice(
    signer: Signer, job: str, round: int, key: str, size: int, samples: int, salt: bytes = b""
) -> UpdateNotice:
    ref = UpdateRef(node=signer.node_id, round=round, key=key, size=size, samples=samples, sig=b"-")
    sig = signer.sign(ref.payload(job))
    return UpdateNotice(
        job=job,
        update=UpdateRef(node=ref.node, round=round, key=key, size=size, samples=samples, sig=sig),
        salt=salt,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class RoundResult:
    """A round's outcome. Floats are rounded to 6 decimals by whoever builds one, so that a
    validator's tolerance check compares like with like."""

    job: str
    round: int
    base_key: str
    model_key: str
    updates: tuple[UpdateRef, ...]
    contributors: tuple[bytes, ...]
    outliers: tuple[bytes, ...]
    scores: tuple[tuple[bytes, float], ...]
    accuracy: float
    loss: float
    proposer: bytes
    #: the validators' findings, sorted by (node, kind); flagged updates stay in ``updates`` (so
    #: they count as delivered and cannot be replayed) but not among the contributors.
    flags: tuple[Flag, ...] = ()

    def __post_init__(self) -> None:
        _check_str("job", self.job, MAX_JOB)
        _check_int("round", self.round, 1)
        _check_str("base_key", self.base_key, MAX_KEY)
        _check_str("model_key", self.model_key, MAX_KEY)
        if type(self.updates) is not tuple or not 0 < len(self.updates) <= 4 * MAX_PARTICIPANTS:
            raise ValueError("updates must be a non-empty tuple of bounded length")
        for u in self.updates:
            if not isinstance(u, UpdateRef):
                raise ValueError("updates must be UpdateRefs")
        order = [(u.node, u.round) for u in self.updates]
        if order != sorted(set(order)):
            raise ValueError("updates must be sorted by (node, round) without repeats")
        nodes = {u.node for u in self.updates}
        for name in ("contributors", "outliers"):
            v = getattr(self, name)
            if type(v) is not tuple or list(v) != sorted(set(v)) or not set(v) <= nodes:
                raise ValueError(f"{name} must be sorted distinct nodes of the update set")
        if type(self.scores) is not tuple:
            raise ValueError("scores must be a tuple")
        for node, score in self.scores:
            if node not in nodes or type(score) is not float or not math.isfinite(score):
                raise ValueError("scores map update nodes to finite floats")
        for name in ("accuracy", "loss"):
            v = getattr(self, name)
            if type(v) is not float or not math.isfinite(v):
                raise ValueError(f"{name} must be a finite float")
        _check_bytes("proposer", self.proposer, MAX_ID)
        if type(self.flags) is not tuple or len(self.flags) > 4 * MAX_PARTICIPANTS:
            raise ValueError("flags must be a bounded tuple")
        for fl in self.flags:
            if not isinstance(fl, Flag):
                raise ValueError("flags must be Flags")
            if fl.kind in UPDATE_FLAGS and (fl.node not in nodes or fl.node in self.contributors):
                raise ValueError("an update flag names a node of the update set, not a contributor")
        order_f = [(fl.node, fl.kind) for fl in self.flags]
        if order_f != sorted(set(order_f)):
            raise ValueError("flags must be sorted by (node, kind) without repeats")

    def flagged(self, *kinds: str) -> frozenset[bytes]:
        """The nodes flagged with any of ``kinds`` (every kind when none given)."""
        return frozenset(f.node for f in self.flags if not kinds or f.kind in kinds)

    def update_keys(self) -> tuple[str, ...]:
        return tuple(u.key for u in self.updates)


def encode_result(r: RoundResult) -> bytes:
    # A result without flags keeps the 11-item form, so logs written before flags existed
    # decode to the same bytes.
    flags = [[f.as_list() for f in r.flags]] if r.flags else []
    return cbor2.dumps(
        [
            r.job,
            r.round,
            r.base_key,
            r.model_key,
            [u.as_list() for u in r.updates],
            list(r.contributors),
            list(r.outliers),
            [[n, s] for n, s in r.scores],
            r.accuracy,
            r.loss,
            r.proposer,
            *flags,
        ],
        canonical=True,
    )


def decode_result(data: bytes) -> RoundResult:
    if type(data) is not bytes or len(data) > MAX_RESULT_BYTES:
        raise RemoteProtocolError("result must be bytes of bounded size")
    try:
        o = cbor2.loads(data, max_depth=5)
        if not fits(o, len(data)):
            raise ValueError("not canonical CBOR (shared references)")
        if type(o) is not list or len(o) not in (11, 12):
            raise ValueError("a result is an 11- or 12-item array")
        flags: tuple[Flag, ...] = ()
        if len(o) == 12:
            if type(o[11]) is not list or not o[11]:
                raise ValueError("flags must be a non-empty list")
            flags = tuple(_flag(f) for f in o[11])
        updates = tuple(_update_ref(u) for u in o[4])
        r = RoundResult(
            job=o[0],
            round=o[1],
            base_key=o[2],
            model_key=o[3],
            updates=updates,
            contributors=tuple(o[5]),
            outliers=tuple(o[6]),
            scores=tuple((n, s) for n, s in o[7]),
            accuracy=o[8],
            loss=o[9],
            proposer=o[10],
            flags=flags,
        )
    except (cbor2.CBORError, ValueError, TypeError, RecursionError) as exc:
        raise RemoteProtocolError(f"bad round result: {exc}") from None
    if encode_result(r) != data:
        raise RemoteProtocolError("round result is not canonical")
    return r


def _update_ref(u: object) -> UpdateRef:
    if type(u) is not list or len(u) != 6:
        raise ValueError("an update is [node, round, key, size, samples, sig]")
    return UpdateRef(node=u[0], round=u[1], key=u[2], size=u[3], samples=u[4], sig=u[5])


def _flag(f: object) -> Flag:
    if type(f) is not list or len(f) != 3:
        raise ValueError("a flag is [node, kind, detail]")
    return Flag(node=f[0], kind=f[1], detail=f[2])


def result_digest(result_bytes: bytes) -> bytes:
    return hashlib.sha256(result_bytes).digest()


def attestation_payload(digest: bytes) -> bytes:
    return cbor2.dumps([_ATTEST_DOMAIN, digest], canonical=True)


def proposal_payload(digest: bytes) -> bytes:
    return cbor2.dumps([_PROPOSE_DOMAIN, digest], canonical=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class Proposal:
    result: bytes
    sig: bytes

    def __post_init__(self) -> None:
        _check_bytes("result", self.result, MAX_RESULT_BYTES)
        _check_bytes("sig", self.sig, MAX_SIG)


@dataclass(frozen=True, slots=True, kw_only=True)
class Attestation:
    job: str
    round: int
    digest: bytes
    validator: bytes
    sig: bytes

    def __post_init__(self) -> None:
        _check_str("job", self.job, MAX_JOB)
        _check_int("round", self.round, 1)
        if type(self.digest) is not bytes or len(self.digest) != 32:
            raise ValueError("digest must be 32 bytes")
        _check_bytes("validator", self.validator, MAX_ID)
        _check_bytes("sig", self.sig, MAX_SIG)


Message = UpdateNotice | Proposal | Attestation | Commitment | CommitClosed


def encode_message(m: Message) -> bytes:
    if isinstance(m, UpdateNotice):
        body: list[Any] = [1, m.job, m.update.as_list()] + ([m.salt] if m.salt else [])
    elif isinstance(m, Proposal):
        body = [2, m.result, m.sig]
    elif isinstance(m, Attestation):
        body = [3, m.job, m.round, m.digest, m.validator, m.sig]
    elif isinstance(m, Commitment):
        body = [4, m.job, m.round, m.node, m.digest, m.sig]
    elif isinstance(m, CommitClosed):
        body = [5, m.job, m.round]
    else:
        raise TypeError(f"not a rounds message: {m!r}")
    return cbor2.dumps(body, canonical=True)


def decode_message(data: bytes) -> Message:
    if len(data) > MAX_MESSAGE_BYTES:
        raise RemoteProtocolError("rounds message too large")
    try:
        o = cbor2.loads(data, max_depth=4)
        if type(o) is not list or not o:
            raise ValueError("a message is [tag, ...]")
        if o[0] == 1 and len(o) in (3, 4):
            salt = o[3] if len(o) == 4 else b""
            if len(o) == 4 and (type(salt) is not bytes or not salt):
                raise ValueError("a notice's salt is non-empty bytes")
            return UpdateNotice(job=o[1], update=_update_ref(o[2]), salt=salt)
        if o[0] == 2 and len(o) == 3:
            return Proposal(result=o[1], sig=o[2])
        if o[0] == 3 and len(o) == 6:
            return Attestation(job=o[1], round=o[2], digest=o[3], validator=o[4], sig=o[5])
        if o[0] == 4 and len(o) == 6:
            return Commitment(job=o[1], round=o[2], node=o[3], digest=o[4], sig=o[5])
        if o[0] == 5 and len(o) == 3:
            return CommitClosed(job=o[1], round=o[2])
        raise ValueError(f"unknown message {o[0]!r}")
    except (cbor2.CBORError, ValueError, TypeError, RecursionError) as exc:
        raise RemoteProtocolError(f"bad rounds message: {exc}") from None
