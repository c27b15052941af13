"""Builders shared by the rounds tests: keyed-hash identities, jobs, tasks, signed updates,
results and attested commits, and the fake but deterministic aggregate the tests stand in for
the learning code (the machine and the ledger treat model keys as opaque)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from protocols.rounds import (
    CommitRound,
    CreateJob,
    JobSpec,
    RoundResult,
    StartRound,
    Task,
    UpdateRef,
    encode_result,
    encode_tx,
    job_id_of,
)
from protocols.rounds.messages import attestation_payload, result_digest, sign_notice
from protocols.signing import KeyedHashSigner, KeyedHashVerifier

VERIFIER = KeyedHashVerifier(b"rounds-tests-seed" * 4)
VALIDATORS = tuple(f"validator-{i}".encode() for i in range(4))
TRAINERS = tuple(f"trainer-{i}".encode() for i in range(4))
OUTSIDER = b"outsider"
INIT_KEY = "init-model"


def signer(node: bytes) -> KeyedHashSigner:
    return VERIFIER.signer_for(node)


def create(spec: JobSpec, nonce: bytes = b"n1") -> tuple[str, bytes]:
    """The CreateJob body and the job id it gets."""
    body = encode_tx(CreateJob(spec=spec, init_key=INIT_KEY, nonce=nonce))
    return job_id_of(body), body


def start(job: str, rnd: int, base: str, nodes: Sequence[bytes]) -> bytes:
    tasks = tuple(Task(node=n, shard=i) for i, n in enumerate(nodes))
    return encode_tx(StartRound(job=job, round=rnd, base_key=base, tasks=tasks))


def update(node: bytes, job: str, rnd: int, key: str | None = None) -> UpdateRef:
    """``node``'s honestly signed update of ``rnd``."""
    key = key or f"u-{node.decode()}-{rnd}"
    return sign_notice(signer(node), job, rnd, key, 100, 10).update


def fake_model_key(base: str, updates: Iterable[UpdateRef]) -> str:
    """The stand-in aggregate: a hash of the base and the sorted update keys."""
    h = hashlib.sha256(base.encode())
    for key in sorted(u.key for u in updates):
        h.update(b"\0" + key.encode())
    return "m-" + h.hexdigest()[:32]


def result(
    job: str,
    rnd: int,
    base: str,
    updates: Sequence[UpdateRef],
    *,
    proposer: bytes = VALIDATORS[0],
    model_key: str | None = None,
    accuracy: float = 0.5,
) -> RoundResult:
    ups = tuple(sorted(updates, key=lambda u: (u.node, u.round)))
    nodes = tuple(sorted({u.node for u in ups}))
    return RoundResult(
        job=job,
        round=rnd,
        base_key=base,
        model_key=model_key or fake_model_key(base, ups),
        updates=ups,
        contributors=nodes,
        outliers=(),
        scores=tuple((n, 1.0) for n in nodes),
        accuracy=accuracy,
        loss=0.25,
        proposer=proposer,
    )


def attest(body: bytes, validators: Iterable[bytes]) -> tuple[tuple[bytes, bytes], ...]:
    payload = attestation_payload(result_digest(body))
    return tuple(sorted((v, signer(v).sign(payload)) for v in validators))


def commit(r: RoundResult, validators: Iterable[bytes] = VALIDATORS[:3]) -> bytes:
    body = encode_result(r)
    return encode_tx(CommitRound(result=body, attestations=attest(body, validators)))
