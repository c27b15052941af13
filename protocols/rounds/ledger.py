"""The training state every node folds from the committed log, deterministically.

PBFT orders the rounds protocol's transactions (``AppTx(app="rounds")``) without reading them;
:class:`TrainingLedger` applies them in log order. Validators, followers and a node replaying its
log after a restart all reach the same jobs, rounds and node records, because :meth:`apply`
reads nothing but the transaction, the ledger and the committee (no clock, no randomness,
sorted iteration only). A transaction that breaks a rule is *rejected* with a reason, the same
on every node, and changes nothing: a second commit of a round, an update from a node that was
not assigned, a result without a quorum of valid attestations.

**Trust hooks.** A :class:`TrustHooks` (the trust ledger, or None) tells the ledger which nodes
are admitted as trainers and the swarm parameters governance set, applies the entry's trust
transactions, and hears every committed round (in log order, so rewards and penalties are the
same on every node). With ``trust=None`` every node is admitted and there are no parameters.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

from p2pnode_protocols.machine import RemoteProtocolError
from p2pnode_protocols.signing import Verifier

from .messages import Flag, RoundResult, attestation_payload, decode_result, result_digest
from .spec import JobSpec
from .transactions import (
    CancelJob,
    CommitRound,
    CreateJob,
    RoundsTx,
    StartRound,
    decode_tx,
    job_id_of,
)

__all__ = [
    "Applied",
    "JobState",
    "NodeRecord",
    "RoundSummary",
    "TrainingLedger",
    "TrustHooks",
    "quorum_of",
]


class TrustHooks(Protocol):
    """What the rounds ledger asks of the trust ledger (every answer deterministic, from the
    committed log only)."""

    def admits(self, node: bytes, role: str) -> str:
        """Empty if ``node`` may act in ``role`` ("trainer"), else the reason it may not."""
        ...

    def param(self, name: str) -> int | float | None:
        """A swarm parameter set by governance (None: not set)."""
        ...

    def round_committed(
        self, seq: int, job: JobState, result: RoundResult, attesters: tuple[bytes, ...]
    ) -> None:
        """A round committed at ``seq`` (called after its history entry is appended)."""
        ...

    def apply(self, seq: int, body: bytes) -> str:
        """Apply one trust transaction body: "" or the reason it was rejected."""
        ...

    def advance(self, seq: int) -> None:
        """Entry ``seq`` is next: whatever falls due at it (a parameter taking effect at an
        epoch boundary) must hold for the answers given while it applies."""
        ...

    def set_committee(self, committee: tuple[bytes, ...]) -> None:
        """The committee in force changed (a PBFT switch took effect)."""
        ...


def quorum_of(n: int) -> int:
    """2f+1 of n = 3f+1 (n = 1: 1)."""
    return 2 * ((n - 1) // 3) + 1


@dataclass(frozen=True, slots=True)
class RoundSummary:
    round: int
    model_key: str
    accuracy: float
    loss: float
    updates: int
    contributors: tuple[bytes, ...]
    outliers: tuple[bytes, ...]
    seq: int
    #: (node, round trained on) of every update, so a stale one shows as an older round.
    sources: tuple[tuple[bytes, int], ...] = ()
    proposer: bytes = b""
    #: bytes of all the round's updates as their trainers stored them (compression shows here).
    update_bytes: int = 0
    #: the committed result's findings (see messages.FLAG_KINDS).
    flags: tuple[Flag, ...] = ()
    #: the committed contribution score of each update's node, by node.
    scores: tuple[tuple[bytes, float], ...] = ()


@dataclass(slots=True)
class JobState:
    id: str
    spec: JobSpec
    init_key: str
    created_seq: int
    status: str = "running"  # running | completed | cancelled
    #: the round being trained (1-based); ``spec.rounds + 1`` once completed.
    round: int = 1
    #: the model the current round trains from (the last committed one).
    model_key: str = ""
    #: the current round's StartRound once committed.
    assignment: StartRound | None = None
    #: round -> nodes assigned, for the rounds a stale update may still come from.
    assigned: dict[int, frozenset[bytes]] = field(default_factory=dict)
    history: list[RoundSummary] = field(default_factory=list)
    reason: str = ""
    #: (node, round trained on) of updates committed in the rounds a stale one could still join:
    #: an update enters the model once.
    used: set[tuple[bytes, int]] = field(default_factory=set)
    #: (node, round) -> the shard it was given (what a spot-check re-runs), for the rounds in
    #: ``assigned``.
    shard_of: dict[tuple[bytes, int], int] = field(default_factory=dict)

    def model_of(self, round: int) -> str | None:
        """The model committed by ``round`` (0: the initial model)."""
        if round == 0:
            return self.init_key
        if 1 <= round <= len(self.history):
            return self.history[round - 1].model_key
        return None


@dataclass(slots=True)
class NodeRecord:
    """What the committed rounds say of one node (its reliability comes from this)."""

    assigned: int = 0
    contributed: int = 0
    missed: int = 0
    outliers: int = 0
    score_sum: float = 0.0
    #: updates flagged by a committed result (failed spot-check, copy).
    flagged: int = 0

    @property
    def reliability(self) -> float:
        """In [0, 1], 0.5 for a node not seen yet: the share of its tasks that delivered an
        update that was not an outlier (a Laplace estimate), nudged by up to 0.1 by its summed
        contribution score (what its updates did to the validation loss, compute.py)."""
        good = self.contributed - self.outliers
        base = (good + 1) / (self.assigned + 2)
        return max(0.0, min(1.0, base + 0.1 * math.tanh(self.score_sum)))


@dataclass(frozen=True, slots=True)
class Applied:
    """What one transaction did: ``status`` ok or rejected (with ``reason``)."""

    seq: int
    tx: RoundsTx | None
    status: str
    reason: str = ""
    job: str | None = None


class TrainingLedger:
    def __init__(
        self,
        committee: tuple[bytes, ...],
        verifier: Verifier,
        trust: TrustHooks | None = None,
    ) -> None:
        self.committee = committee
        self.quorum = quorum_of(len(committee))
        self.verifier = verifier
        self.trust = trust
        if trust is not None and hasattr(trust, "bind_rounds"):
            trust.bind_rounds(self)  # the trust ledger checks unsolicited notices against jobs
        self.jobs: dict[str, JobState] = {}
        self.nodes: dict[bytes, NodeRecord] = {}
        self.seq = 0

    def running(self) -> Iterator[JobState]:
        """Running jobs, highest priority first, then oldest."""
        jobs = [j for j in self.jobs.values() if j.status == "running"]
        jobs.sort(key=lambda j: (-j.spec.priority, j.created_seq, j.id))
        return iter(jobs)

    def record(self, node: bytes) -> NodeRecord:
        return self.nodes.get(node) or NodeRecord()

    def set_committee(self, committee: tuple[bytes, ...]) -> None:
        """The committee in force from the next entry applied (a committed reconfiguration):
        attestations are checked against it."""
        self.committee = committee
        self.quorum = quorum_of(len(committee))
        if self.trust is not None:
            self.trust.set_committee(committee)

    def admits(self, node: bytes, role: str = "trainer") -> str:
        return "" if self.trust is None else self.trust.admits(node, role)

    def param(self, name: str) -> int | float | None:
        return None if self.trust is None else self.trust.param(name)

    def min_participants(self, spec: JobSpec) -> int:
        """The job's minimum, raised by governance's ``min_participants`` if set."""
        p = self.param("min_participants")
        return max(spec.min_participants, int(p) if p is not None else 0)

    def apply_trust(self, seq: int, body: bytes) -> str:
        """A trust transaction of entry ``seq`` (applied before its rounds transactions)."""
        self.seq = max(self.seq, seq)
        if self.trust is None:
            return "no trust ledger"
        return self.trust.apply(seq, body)

    def apply(self, seq: int, body: bytes) -> Applied:
        """Apply the rounds transaction ``body`` committed at ``seq`` (in log order)."""
        self.seq = max(self.seq, seq)
        if self.trust is not None:
            self.trust.advance(seq)
        try:
            tx = decode_tx(body)
        except RemoteProtocolError as exc:
            return Applied(seq, None, "rejected", str(exc))
        if isinstance(tx, CreateJob):
            job_id = job_id_of(body)
            if job_id in self.jobs:
                return Applied(seq, tx, "rejected", "job exists", job_id)
            self.jobs[job_id] = JobState(
                id=job_id,
                spec=tx.spec,
                init_key=tx.init_key,
                created_seq=seq,
                model_key=tx.init_key,
            )
            return Applied(seq, tx, "ok", job=job_id)
        job = self.jobs.get(tx.job if not isinstance(tx, CommitRound) else _job_of(tx))
        if job is None:
            return Applied(seq, tx, "rejected", "no such job")
        if job.status != "running":
            return Applied(seq, tx, "rejected", f"job is {job.status}", job.id)
        if isinstance(tx, CancelJob):
            job.status = "cancelled"
            job.reason = tx.reason or "cancelled"
            job.assignment = None
            return Applied(seq, tx, "ok", job=job.id)
        if isinstance(tx, StartRound):
            reason = self._check_start(job, tx)
            if reason:
                return Applied(seq, tx, "rejected", reason, job.id)
            job.assignment = tx
            job.assigned[tx.round] = job.assigned.get(tx.round, frozenset()) | frozenset(
                t.node for t in tx.tasks
            )
            for t in tx.tasks:
                job.shard_of[(t.node, tx.round)] = t.shard
            for old in [r for r in job.assigned if r < tx.round - job.spec.staleness]:
                del job.assigned[old]
            for k in [k for k in job.shard_of if k[1] < tx.round - job.spec.staleness]:
                del job.shard_of[k]
            return Applied(seq, tx, "ok", job=job.id)
        result = decode_result(tx.result)
        reason = self._check_commit(job, tx, result)
        if reason:
            return Applied(seq, tx, "rejected", reason, job.id)
        self._commit(job, tx, result, seq)
        return Applied(seq, tx, "ok", job=job.id)

    # -- checks ----------------------------------------------------------------------------------

    def _check_start(self, job: JobState, tx: StartRound) -> str:
        spec = job.spec
        if tx.round != job.round:
            return f"round {tx.round} is not the job's current round {job.round}"
        # A round starts once; two starters whose turns overlapped cannot both start it. A
        # reassignment (its trainers died or missed the deadlines) is explicit, of a round that
        # has started; updates of the first assignment still count. It may name the same
        # nodes: the round is then tried again (a trainer whose task failed trains it again,
        # one whose commitment came after the commit phase commits again). Refusing that left
        # a round whose every trainer failed with nothing to gather, for good.
        open_round = job.assignment is not None and job.assignment.round == tx.round
        if open_round and not tx.reassign:
            return f"round {tx.round} has started already"
        if tx.reassign and not open_round:
            return f"round {tx.round} has not started: nothing to reassign"
        if tx.base_key != job.model_key:
            return "base_key is not the job's current model"
        shards = [t.shard for t in tx.tasks]
        if len(set(shards)) != len(shards) or not all(0 <= s < spec.shards for s in shards):
            return "tasks must name distinct shards of the job"
        nodes = {t.node for t in tx.tasks}
        if len(nodes) != len(tx.tasks):
            return "a node takes at most one task of a round"
        if not self.min_participants(spec) <= len(nodes) <= spec.max_participants:
            return "participants outside the job's min..max"
        for node in sorted(nodes):
            why = self.admits(node, "trainer")
            if why:
                return f"a task names a node not admitted as a trainer: {why}"
        if len(nodes) < spec.min_updates:
            return "fewer participants than the job's min_updates"
        return ""

    def check_result(self, job: JobState, r: RoundResult) -> str:
        """What a result must be, attestations aside: for the job's open round, on its current
        model, with enough updates, each signed by an assigned node, fresh enough and not
        committed before. "" when it is; validators check a proposal with this before they
        recompute it, and the ledger again when it commits."""
        if job.assignment is None or job.assignment.round != r.round or r.round != job.round:
            return f"round {r.round} is not the job's open round"
        if r.base_key != job.model_key:
            return "result is not based on the job's current model"
        if len(r.updates) < job.spec.min_updates:
            return "fewer updates than the job's min_updates"
        for u in r.updates:
            if not r.round - job.spec.staleness <= u.round <= r.round:
                return "an update is staler than the job allows"
            if u.node not in job.assigned.get(u.round, ()):
                return "an update comes from a node that was not assigned"
            if (u.node, u.round) in job.used:
                return "an update was committed in an earlier round"
            if not u.verify(job.id, self.verifier):
                return "an update's signature does not verify"
            if self.admits(u.node, "trainer"):
                return "an update comes from a node not admitted as a trainer"
        for fl in r.flags:
            if fl.kind in ("wrong_aggregate", "censorship") and fl.node not in self.committee:
                return "a validator flag names a node that is not a validator"
        return ""

    def _check_commit(self, job: JobState, tx: CommitRound, r: RoundResult) -> str:
        reason = self.check_result(job, r)
        if reason:
            return reason
        if r.proposer not in self.committee:
            return "the proposer is not a validator"
        payload = attestation_payload(result_digest(tx.result))
        signers = set()
        for validator, sig in tx.attestations:
            if validator not in self.committee or validator in signers:
                return "attestations must come from distinct validators"
            if not self.verifier.verify(validator, payload, sig):
                return "an attestation does not verify"
            signers.add(validator)
        if len(signers) < self.quorum:
            return f"{len(signers)} attestations, {self.quorum} needed"
        return ""

    def _commit(self, job: JobState, tx: CommitRound, r: RoundResult, seq: int) -> None:
        assert job.assignment is not None
        delivered = {u.node for u in r.updates if u.round == r.round}
        scores = dict(r.scores)
        for node in sorted(job.assigned.get(r.round, ())):
            rec = self.nodes.setdefault(node, NodeRecord())
            rec.assigned += 1
            if node not in delivered:
                rec.missed += 1
        for node in r.contributors:
            self.nodes.setdefault(node, NodeRecord()).contributed += 1
        # Every scored update counts, kept or not: an update a screen left out of the
        # aggregate still says what its node tried to do to the model.
        for node in sorted(scores):
            self.nodes.setdefault(node, NodeRecord()).score_sum += scores[node]
        for node in r.outliers:
            self.nodes.setdefault(node, NodeRecord()).outliers += 1
        for node in sorted(r.flagged("spot_check", "copy")):
            self.nodes.setdefault(node, NodeRecord()).flagged += 1
        job.history.append(
            RoundSummary(
                round=r.round,
                model_key=r.model_key,
                accuracy=r.accuracy,
                loss=r.loss,
                updates=len(r.updates),
                contributors=r.contributors,
                outliers=r.outliers,
                seq=seq,
                sources=tuple((u.node, u.round) for u in r.updates),
                proposer=r.proposer,
                update_bytes=sum(u.size for u in r.updates),
                flags=r.flags,
                scores=r.scores,
            )
        )
        job.used |= {(u.node, u.round) for u in r.updates}
        job.used = {k for k in job.used if k[1] >= r.round + 1 - job.spec.staleness}
        job.model_key = r.model_key
        job.assignment = None
        job.round = r.round + 1
        if r.round >= job.spec.rounds:
            job.status = "completed"
        if self.trust is not None:
            attesters = tuple(sorted(v for v, _ in tx.attestations))
            self.trust.round_committed(seq, job, r, attesters)


def _job_of(tx: CommitRound) -> str:
    return decode_result(tx.result).job
