"""The rounds protocol's committed transactions (the body of a PBFT ``AppTx(app="rounds")``).

- :class:`CreateJob`: a spec and the initial model's blob key. The job id is derived from the
  transaction's bytes, so it is known before the commit and the same on every node.
- :class:`CancelJob`: stops a running job.
- :class:`StartRound`: the round's tasks (node, shard) and the model it trains from.
- :class:`CommitRound`: a round's result with the attestations of a quorum of validators.

Canonical CBOR ``[tag, ...]``; :func:`decode_tx` raises ``RemoteProtocolError`` on anything else.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import cbor2

from p2pnode_protocols.cbor_tree import fits
from p2pnode_protocols.machine import RemoteProtocolError

from .messages import MAX_KEY, MAX_SIG, decode_result
from .spec import MAX_PARTICIPANTS, JobSpec, decode_spec, encode_spec

__all__ = [
    "APP",
    "CancelJob",
    "CommitRound",
    "CreateJob",
    "RoundsTx",
    "StartRound",
    "Task",
    "decode_tx",
    "encode_tx",
    "job_id_of",
]

APP = "rounds"
MAX_ID = 64


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateJob:
    spec: JobSpec
    init_key: str
    #: makes two identical specs two jobs (the creator's choice; random in practice).
    nonce: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelJob:
    job: str
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Task:
    node: bytes
    shard: int


@dataclass(frozen=True, slots=True, kw_only=True)
class StartRound:
    job: str
    round: int
    base_key: str
    tasks: tuple[Task, ...]
    #: False: the round's first tasks; True: other tasks for the open round, whose trainers
    #: died or missed the deadlines (only a round that has started can be reassigned).
    reassign: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class CommitRound:
    result: bytes
    attestations: tuple[tuple[bytes, bytes], ...]


RoundsTx = CreateJob | CancelJob | StartRound | CommitRound


def encode_tx(tx: RoundsTx) -> bytes:
    if isinstance(tx, CreateJob):
        body: list[Any] = [1, encode_spec(tx.spec), tx.init_key, tx.nonce]
    elif isinstance(tx, CancelJob):
        body = [2, tx.job, tx.reason]
    elif isinstance(tx, StartRound):
        body = [
            3,
            tx.job,
            tx.round,
            tx.base_key,
            [[t.node, t.shard] for t in tx.tasks],
            tx.reassign,
        ]
    elif isinstance(tx, CommitRound):
        body = [4, tx.result, [[v, s] for v, s in tx.attestations]]
    else:
        raise TypeError(f"not a rounds transaction: {tx!r}")
    return cbor2.dumps(body, canonical=True)


def job_id_of(create_body: bytes) -> str:
    """A job's id: the first 8 bytes of the hash of its CreateJob body, in hex."""
    return hashlib.sha256(create_body).hexdigest()[:16]


def _str(v: object, hi: int, name: str) -> str:
    if type(v) is not str or not 0 < len(v) <= hi:
        raise ValueError(f"{name} must be a str of 1..{hi} characters")
    return v


def decode_tx(data: bytes) -> RoundsTx:
    try:
        o = cbor2.loads(data, max_depth=4)
        if not fits(o, len(data)) or cbor2.dumps(o, canonical=True) != data:
            raise ValueError("not canonical CBOR")
        if type(o) is not list or not o:
            raise ValueError("a transaction is [tag, ...]")
        tag = o[0]
        if tag == 1 and len(o) == 4:
            if type(o[1]) is not bytes or type(o[3]) is not bytes or not 0 < len(o[3]) <= 32:
                raise ValueError("CreateJob is [1, spec, init_key, nonce]")
            return CreateJob(
                spec=decode_spec(o[1]), init_key=_str(o[2], MAX_KEY, "init_key"), nonce=o[3]
            )
        if tag == 2 and len(o) == 3:
            if type(o[2]) is not str or len(o[2]) > 200:
                raise ValueError("reason must be a short str")
            return CancelJob(job=_str(o[1], 32, "job"), reason=o[2])
        if tag == 3 and len(o) == 6:
            if type(o[4]) is not list or not 0 < len(o[4]) <= MAX_PARTICIPANTS:
                raise ValueError("tasks must be a non-empty list")
            tasks = []
            for t in o[4]:
                if (
                    type(t) is not list
                    or len(t) != 2
                    or type(t[0]) is not bytes
                    or not 0 < len(t[0]) <= MAX_ID
                    or type(t[1]) is not int
                ):
                    raise ValueError("a task is [node, shard]")
                tasks.append(Task(node=t[0], shard=t[1]))
            if type(o[2]) is not int or o[2] < 1:
                raise ValueError("round must be an int >= 1")
            if type(o[5]) is not bool:
                raise ValueError("reassign must be true or false")
            return StartRound(
                job=_str(o[1], 32, "job"),
                round=o[2],
                base_key=_str(o[3], MAX_KEY, "base_key"),
                tasks=tuple(tasks),
                reassign=o[5],
            )
        if tag == 4 and len(o) == 3:
            decode_result(o[1])  # checks it now; the ledger decodes again where it applies it
            if type(o[2]) is not list or len(o[2]) > MAX_PARTICIPANTS:
                raise ValueError("attestations must be a bounded list")
            att = []
            for a in o[2]:
                if (
                    type(a) is not list
                    or len(a) != 2
                    or type(a[0]) is not bytes
                    or type(a[1]) is not bytes
                    or len(a[1]) > MAX_SIG
                ):
                    raise ValueError("an attestation is [validator, sig]")
                att.append((a[0], a[1]))
            return CommitRound(result=o[1], attestations=tuple(att))
        raise ValueError(f"unknown rounds transaction {tag!r}")
    except RemoteProtocolError:
        raise
    except (cbor2.CBORError, ValueError, TypeError, RecursionError) as exc:
        raise RemoteProtocolError(f"bad rounds transaction: {exc}") from None
