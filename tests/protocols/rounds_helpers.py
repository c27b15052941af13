"""Builders shared by the rounds tests: keyed-hash identities, jobs, tasks, signed updates,
results and attested commits, and the fake but deterministic aggregate the tests stand in for
the learning code (the machine and the ledger treat model keys as opaque)."""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass

from p2pnode_protocols.machine import (
    Broadcast,
    Effect,
    Event,
    MessageReceived,
    Send,
    SetTimer,
    TimerFired,
)
from p2pnode_protocols.rounds import (
    Aggregate,
    BadProposal,
    Candidate,
    CommitRound,
    Committed,
    Computed,
    CreateJob,
    Fetched,
    JobSpec,
    JobState,
    MembersSeen,
    Prefetch,
    Resumed,
    RoundResult,
    RoundsConfig,
    RoundsMachine,
    StartRound,
    Submit,
    Task,
    Train,
    TrainingDone,
    TrainingLedger,
    TrustHooks,
    UpdateNotice,
    UpdateRef,
    decode_message,
    decode_result,
    encode_message,
    encode_result,
    encode_tx,
    job_id_of,
)
from p2pnode_protocols.rounds.messages import attestation_payload, result_digest, sign_notice
from p2pnode_protocols.signing import KeyedHashSigner, KeyedHashVerifier

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


def start(
    job: str, rnd: int, base: str, nodes: Sequence[bytes], *, reassign: bool = False
) -> bytes:
    tasks = tuple(Task(node=n, shard=i) for i, n in enumerate(nodes))
    return encode_tx(StartRound(job=job, round=rnd, base_key=base, tasks=tasks, reassign=reassign))


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


class Hooks:
    """Small trust hooks for the tests: a deny list, fixed parameters, and a record of the
    rounds committed (with their attesters) and trust bodies applied."""

    def __init__(
        self, denied: Iterable[bytes] = (), params: dict[str, int | float] | None = None
    ) -> None:
        self.denied = frozenset(denied)
        self.params = dict(params or {})
        self.rounds: list[tuple[int, str, int, tuple[bytes, ...]]] = []
        self.bodies: list[tuple[int, bytes]] = []

    def admits(self, node: bytes, role: str) -> str:
        return "denied" if node in self.denied else ""

    def param(self, name: str) -> int | float | None:
        return self.params.get(name)

    def round_committed(
        self, seq: int, job: JobState, result: RoundResult, attesters: tuple[bytes, ...]
    ) -> None:
        self.rounds.append((seq, job.id, result.round, attesters))

    def apply(self, seq: int, body: bytes) -> str:
        self.bodies.append((seq, body))
        return "" if body.startswith(b"ok") else "bad trust body"

    def advance(self, seq: int) -> None:
        return None

    def set_committee(self, committee: tuple[bytes, ...]) -> None:
        return None


# -- a world of rounds machines sharing one log ----------------------------------------------


@dataclass
class InFlight:
    src: bytes
    dst: bytes
    msg: object

    def __repr__(self) -> str:
        return f"{self.src!r}->{self.dst!r} {type(self.msg).__name__}"


class World:
    """Rounds machines of the committee and a few trainers, a network of messages in flight
    (delivered in whatever order the test picks), and one shared log every live machine folds
    in order. Training and aggregation are answered by the test (:meth:`train`,
    :meth:`compute`) with the fake aggregate, so a committed model key can be recomputed."""

    def __init__(
        self,
        trainers: Sequence[bytes] = TRAINERS[:3],
        others: Sequence[bytes] = (OUTSIDER,),
        config: RoundsConfig | None = None,
        trust: TrustHooks | None = None,
    ) -> None:
        self.trust = trust
        self.config = config or RoundsConfig(start_timeout=1.0, result_timeout=2.0)
        self.trainers = tuple(trainers)
        self.nodes = (*VALIDATORS, *self.trainers, *others)
        self.now = 0.0
        self.machines = {n: self._machine(n) for n in self.nodes}
        self.crashed: set[bytes] = set()
        self.net: list[InFlight] = []
        self.pending: list[bytes] = []
        self.log: list[bytes] = []
        self.ref = TrainingLedger(VALIDATORS, VERIFIER, trust)
        self.timers: dict[tuple[bytes, Hashable], tuple[float, int]] = {}
        self.trainings: list[tuple[bytes, Train]] = []
        self.aggregates: list[tuple[bytes, Aggregate]] = []
        self.evidence: list[tuple[bytes, BadProposal]] = []
        #: (job, round) -> the nodes of its committed StartRound.
        self.assigned: dict[tuple[str, int], frozenset[bytes]] = {}
        self.committed: list[RoundResult] = []
        self.notices: list[UpdateRef] = []
        for n in self.nodes:
            self._run(n, self.machines[n].handle(MembersSeen(candidates=self.candidates()), 0.0))

    def _machine(self, node: bytes) -> RoundsMachine:
        return RoundsMachine(
            signer=signer(node),
            verifier=VERIFIER,
            committee=VALIDATORS,
            config=self.config,
            trust=self.trust,
        )

    def candidates(self) -> tuple[Candidate, ...]:
        return tuple(
            Candidate(node=n, alive=n not in self.crashed, free_slots=1) for n in self.trainers
        )

    # -- effects -----------------------------------------------------------------------------

    def _run(self, node: bytes, effects: list[Effect]) -> None:
        for e in effects:
            if isinstance(e, Submit):
                self.pending.append(e.body)
            elif isinstance(e, Broadcast):
                if isinstance(e.msg, UpdateNotice):
                    self.notices.append(e.msg.update)
                for dst in VALIDATORS:
                    if dst != node:
                        self.net.append(InFlight(node, dst, e.msg))
            elif isinstance(e, Send):
                self.net.append(InFlight(node, e.to, e.msg))
            elif isinstance(e, SetTimer):
                self.timers[(node, e.key)] = (e.at, e.generation)
            elif isinstance(e, Train):
                self.trainings.append((node, e))
            elif isinstance(e, Aggregate):
                self.aggregates.append((node, e))
            elif isinstance(e, Prefetch):  # every blob is fetched at once in this world
                self.handle(node, Fetched(job=e.job, round=e.round, key=e.key))
            elif isinstance(e, BadProposal):
                self.evidence.append((node, e))

    def handle(self, node: bytes, event: Event) -> None:
        self._run(node, self.machines[node].handle(event, self.now))

    # -- the log ----------------------------------------------------------------------------

    def fold(self, body: bytes) -> None:
        """Commit ``body`` as the next log entry: the reference ledger and every live machine
        fold it."""
        self.log.append(body)
        seq = len(self.log)
        applied = self.ref.apply(seq, body)
        if applied.status == "ok" and isinstance(applied.tx, StartRound):
            tx = applied.tx
            # A reassignment of the open round adds nodes: updates of both sets count.
            key = (tx.job, tx.round)
            self.assigned[key] = self.assigned.get(key, frozenset()) | {t.node for t in tx.tasks}
        if applied.status == "ok" and isinstance(applied.tx, CommitRound):
            self.committed.append(decode_result(applied.tx.result))
        for n in self.nodes:
            if n not in self.crashed:
                self.handle(n, Committed(seq=seq, bodies=(body,)))

    def commit_pending(self, index: int = 0) -> None:
        self.fold(self.pending.pop(index))

    # -- crashes ----------------------------------------------------------------------------

    def crash(self, node: bytes) -> None:
        self.crashed.add(node)
        self.timers = {k: v for k, v in self.timers.items() if k[0] != node}
        self.trainings = [t for t in self.trainings if t[0] != node]
        self.aggregates = [a for a in self.aggregates if a[0] != node]

    def restart(self, node: bytes) -> None:
        """A fresh machine replays the whole log, then resumes."""
        self.crashed.discard(node)
        m = self.machines[node] = self._machine(node)
        for seq, body in enumerate(self.log, 1):
            m.handle(Committed(seq=seq, bodies=(body,), replay=True), self.now)
        self.handle(node, MembersSeen(candidates=self.candidates()))
        self.handle(node, Resumed())
        for n in self.nodes:
            if n not in self.crashed:
                self.handle(n, MembersSeen(candidates=self.candidates()))

    # -- the network, timers, work --------------------------------------------------------

    def deliver(self, index: int = 0, keep: bool = False) -> None:
        m = self.net[index] if keep else self.net.pop(index)
        if m.dst in self.crashed:
            return
        # Through the wire codec, as the service would.
        msg = decode_message(encode_message(m.msg))  # type: ignore[arg-type]
        self.handle(m.dst, MessageReceived(sender=m.src, msg=msg))

    def fire(self, key: tuple[bytes, Hashable]) -> None:
        at, gen = self.timers.pop(key)
        self.now = max(self.now, at)
        self.handle(key[0], TimerFired(key=key[1], generation=gen))

    def train(self, index: int = 0, fail: bool = False) -> None:
        node, t = self.trainings.pop(index)
        if fail:
            self.handle(node, TrainingDone(job=t.job, round=t.round, error="boom"))
            return
        key = f"u-{node.decode()}-{t.job}-{t.round}"
        self.handle(node, TrainingDone(job=t.job, round=t.round, key=key, size=10, samples=5))

    def compute(self, index: int = 0, fail: bool = False) -> None:
        node, a = self.aggregates.pop(index)
        check = a.check_bytes
        if fail or not a.updates:
            self.handle(
                node, Computed(job=a.job, round=a.round, result=None, check=check, error="x")
            )
            return
        r = result(a.job, a.round, a.base_key, a.updates, proposer=node)
        self.handle(node, Computed(job=a.job, round=a.round, result=r, check=check))

    def settle(self, steps: int = 2000, timers: bool = False) -> None:
        """Run honestly, in order, until nothing is left to do (or ``steps`` ran out); with
        ``timers``, fire the earliest timer when nothing else is left."""
        for _ in range(steps):
            if self.pending:
                self.commit_pending()
            elif self.trainings:
                self.train()
            elif self.aggregates:
                self.compute()
            elif self.net:
                self.deliver()
            elif timers and self.timers:
                self.fire(min(self.timers, key=lambda k: self.timers[k][0]))
            else:
                return
