"""The rounds machine: one node's part in training jobs round by round, sans I/O.

Every node runs one. It folds the committed log into a :class:`~.ledger.TrainingLedger` and
acts on what the ledger says; its roles follow from the committee and the committed tasks:

- **starter** (a validator): after a job is created or a round commits, the validator whose turn
  it is (:meth:`RoundsMachine.leader`) proposes the next round's tasks from its membership view
  (``StartRound``). If nothing is committed within ``start_timeout``, the next validator's turn
  comes; the ledger commits one StartRound per round, so two starters do no harm.
- **trainer** (any node with a task): trains when the round's tasks commit (phase *training*)
  and tells the validators its update's blob key, signed (:class:`~.messages.UpdateNotice`).
- **validator**: collects notices (*collection*) until every assigned node delivered or the
  deadline passes with ``min_updates`` (the job's sync policy: drop or wait for stragglers;
  bounded staleness also admits updates trained on a model up to ``staleness`` rounds older).
  The validator whose turn it is aggregates (*aggregation*) and broadcasts its signed result
  (*validation*); every other validator fetches any update it lacks, recomputes, and attests only
  a bit-identical model key (metrics within ``METRIC_TOLERANCE``). A quorum of attestations makes
  a ``CommitRound``; a result that does not recompute is refused and reported as
  :class:`~.events.BadProposal`. If no result commits within ``result_timeout`` of the close,
  the next validator's turn comes.

**Verified work** (see docs/jobs.md): under commit then reveal a trainer first sends a signed
:class:`~.messages.Commitment`; a validator closes the round's commit phase once every assigned
trainer committed or at ``commit_window`` of the deadline, tells the trainers
(:class:`~.messages.CommitClosed`), and accepts a reveal only if it matches a commitment it got
before that. The aggregation re-runs the spot-checked trainers' tasks and looks for copies (the
daemon's learning code, asked through :class:`~.events.Aggregate`); the findings are
:class:`~.messages.Flag` s in the result, and a validator attests only a result whose flags it
agrees with. A validator refuses a proposal that leaves out updates f+1 validators hold (itself
and those that relayed them) since before its own close (censorship), and remembers a proposal
that did not recompute: its own next proposal flags those proposers. Notices and commitments
are rate-limited per peer; nodes the trust hooks do not admit are neither selected nor heard.

Safety does not rest on this machine: the ledger rejects a second commit of a round, updates from
unassigned nodes or with bad signatures, and results without a quorum of valid attestations. An
honest validator attests only what it recomputed itself, so a committed model key is one that
2f+1 validators, hence at least f+1 honest ones, computed from the named updates.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import replace

from p2pnode_protocols.machine import (
    Broadcast,
    Effect,
    Event,
    LocalProtocolError,
    MessageReceived,
    SetTimer,
    TimerFired,
)
from p2pnode_protocols.signing import Signer, Verifier

from .collection import Collection
from .commit_phase import CommitPhase
from .events import (
    Committed,
    Computed,
    Fetched,
    JobApplied,
    MembersSeen,
    Resumed,
    RoundPhase,
    Submit,
    Train,
    TrainingDone,
)
from .ledger import JobState, TrainingLedger, TrustHooks
from .messages import (
    Commitment,
    Flag,
    UpdateNotice,
    UpdateRef,
)
from .selector import Candidate, Selector, select_tasks
from .spec import JobSpec
from .state import METRIC_TOLERANCE, OpenRound, RoundsConfig
from .transactions import CommitRound, CreateJob, StartRound, encode_tx
from .verify import RateLimit

__all__ = ["METRIC_TOLERANCE", "RoundsConfig", "RoundsMachine"]


class RoundsMachine(CommitPhase, Collection):
    def __init__(
        self,
        *,
        signer: Signer,
        verifier: Verifier,
        committee: tuple[bytes, ...],
        config: RoundsConfig | None = None,
        selector: Selector = select_tasks,
        trust: TrustHooks | None = None,
    ) -> None:
        self.signer = signer
        self.verifier = verifier
        self.me = signer.node_id
        self.config = config or RoundsConfig()
        self.selector = selector
        self.ledger = TrainingLedger(committee, verifier, trust)
        self.candidates: tuple[Candidate, ...] = ()
        self._rounds: dict[str, OpenRound] = {}
        #: (job, round) -> attempt of the starter rotation, while a round waits for its tasks.
        self._starting: dict[tuple[str, int], int] = {}
        #: notices for rounds not open yet (they may arrive before our StartRound commit).
        self._early: dict[tuple[str, int], dict[tuple[bytes, int], UpdateRef]] = {}
        #: (job, round) this node took a task of (kept while the round is open, so a
        #: reassignment of the round does not train it twice).
        self.training: set[tuple[str, int]] = set()
        #: job -> the shards of its last committed tasks (a node keeps its shard).
        self._prev_tasks: dict[str, dict[bytes, int]] = {}
        #: proposals being recomputed: digest -> the proposer's signature (for evidence).
        self._sigs: dict[bytes, bytes] = {}
        self._gen = 0
        #: the live generation of each timer key (older firings are ignored).
        self._timer_gen: dict[tuple[str, str, int], int] = {}
        self.counters: dict[str, int] = {}
        self._rate = RateLimit(self.config.max_notices_per_minute)
        #: (time, node) of committed tasks seen live, for max_tasks_per_node_per_hour.
        self._task_log: deque[tuple[float, bytes]] = deque()
        #: (job, round) -> node -> the digest it committed to (commit then reveal).
        self._commits: dict[tuple[str, int], dict[bytes, bytes]] = {}
        #: (job, round) whose commit phase closed here (later commitments are refused).
        self._commit_closed: set[tuple[str, int]] = set()
        #: (job, round) whose commit phase a reassignment reopened after it had closed: keys
        #: were revealed by then, so a commitment taken now must not reveal one of them.
        self._reopened: set[tuple[str, int]] = set()
        #: (job, round) for which this validator took a reveal: keys are out, whatever its
        #: own commit phase says (its clock, or its log, may lag another validator's).
        self._reveal_seen: set[tuple[str, int]] = set()
        #: (job, round) -> when its tasks committed here (the commit window starts).
        self._commit_started: dict[tuple[str, int], float] = {}
        #: this trainer's reveals waiting for the commit phase to close.
        self._reveals: dict[tuple[str, int], UpdateNotice] = {}
        #: what this trainer told the committee of each open round (commitment, notice), so it
        #: tells a committee that takes over mid-round again.
        self._told: dict[tuple[str, int], list[Commitment | UpdateNotice]] = {}
        #: (job, round, node) of commitments taken after the commit phase (bounded staleness).
        self._late: set[tuple[str, int, bytes]] = set()
        #: job -> update keys revealed to this validator lately -> who revealed them first.
        self._revealed: dict[str, dict[str, bytes]] = {}
        #: (job, round) -> proposer -> the flag this validator's checks found against it.
        self._refused: dict[tuple[str, int], dict[bytes, Flag]] = {}
        #: (job, round) -> how many times this trainer retried its failed task.
        self._retrains: dict[tuple[str, int], int] = {}
        #: (job, round, node) of unsolicited notices reported as evidence.
        self._accused: set[tuple[str, int, bytes]] = set()
        self._on: dict[type, Callable[[object, float], list[Effect]]] = {
            Committed: self._committed,  # type: ignore[dict-item]
            Resumed: self._resumed,  # type: ignore[dict-item]
            MembersSeen: self._members,  # type: ignore[dict-item]
            MessageReceived: self._message,  # type: ignore[dict-item]
            TrainingDone: self._trained,  # type: ignore[dict-item]
            Computed: self._computed,  # type: ignore[dict-item]
            Fetched: self._fetched,  # type: ignore[dict-item]
            TimerFired: self._timer,  # type: ignore[dict-item]
        }

    # -- the machine interface -------------------------------------------------------------------

    @property
    def committee(self) -> tuple[bytes, ...]:
        """The committee in force (it follows committed reconfigurations)."""
        return self.ledger.committee

    @property
    def is_validator(self) -> bool:
        return self.me in self.ledger.committee

    def collected(self, job: str) -> tuple[UpdateRef, ...]:
        """The updates this validator holds for the job's open round (read-only view)."""
        rs = self._rounds.get(job)
        return () if rs is None else tuple(rs.updates[k] for k in sorted(rs.updates))

    def open_rounds(self, now: float) -> list[dict[str, object]]:
        """What this validator's collection of each open round looks like (for status and
        for diagnosing a round that does not commit): the attempt and whose turn it is, whether
        it is aggregating or has a proposal out, and each update held with its holders."""
        out: list[dict[str, object]] = []
        for job_id, rs in sorted(self._rounds.items()):
            job = self.ledger.jobs.get(job_id)
            out.append(
                {
                    "job": job_id,
                    "round": rs.round,
                    "log_round": None if job is None else job.round,
                    "age": round(now - rs.opened, 3),
                    "closed": None if rs.closed_at is None else round(now - rs.closed_at, 3),
                    "attempt": rs.attempt,
                    "extended": rs.extended,
                    "turn": self.leader(job_id, rs.round, rs.attempt).hex(),
                    "aggregating": rs.aggregating,
                    "proposal": rs.proposal is not None,
                    "attestations": len(rs.attestations),
                    "submitted": rs.submitted,
                    "checked": len(rs.checked),
                    "updates": [
                        {
                            "node": node.hex(),
                            "round": r,
                            "fetched": rs.updates[(node, r)].key in rs.fetched,
                            "holders": len(rs.holders.get((node, r), ())),
                        }
                        for node, r in sorted(rs.updates)
                    ],
                    "refused": sorted(p.hex() for p in self._refused.get((job_id, rs.round), {})),
                    "alive_validators": [v.hex() for v in self.alive_validators()],
                }
            )
        return out

    def handle(self, event: Event, now: float) -> list[Effect]:
        on = self._on.get(type(event))
        if on is None:
            raise LocalProtocolError(f"rounds: unknown event {event!r}")
        return on(event, now)

    def _count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    def _timer(self, e: TimerFired, now: float) -> list[Effect]:
        if self._timer_gen.get(e.key) != e.generation:
            return []  # superseded: a later SetTimer with the same key replaced it
        del self._timer_gen[e.key]
        kind, job_id, rnd = e.key  # type: ignore[misc]
        if kind == "reveal":  # a stale update's reveal may come after its round committed
            return self._reveal(job_id, rnd, now)
        job = self.ledger.jobs.get(job_id)
        if job is None or job.status != "running" or job.round != rnd:
            return []
        if kind == "start":
            return self._start_tick(job, now)
        if kind == "close":
            return self._close_tick(job, now)
        if kind == "commit":
            return self._close_commit(job, rnd, now)
        if kind == "retrain":
            return self._retrain(job, rnd)
        return []

    def _set_timer(self, kind: str, job: str, rnd: int, at: float) -> SetTimer:
        self._gen += 1
        key = (kind, job, rnd)
        self._timer_gen[key] = self._gen
        for old in [
            k for k in self._timer_gen if k[1] == job and k[2] < rnd - 1 and k[0] != "reveal"
        ]:
            del self._timer_gen[old]  # timers of rounds long committed never matter again
        return SetTimer(key=key, at=at, generation=self._gen)

    # -- turns -----------------------------------------------------------------------------------

    def alive_validators(self) -> list[bytes]:
        dead = {c.node for c in self.candidates if not c.alive}
        return [v for v in self.committee if v not in dead]

    def leader(self, job: str, rnd: int, attempt: int) -> bytes:
        """Whose turn it is to start or propose ``rnd`` of ``job`` at ``attempt``: the
        committee rotated by job, round and attempt, skipping validators this node holds dead."""
        n = len(self.committee)
        base = int(job[:8], 16) + rnd + attempt
        alive = set(self.alive_validators())
        for i in range(n):
            v = self.committee[(base + i) % n]
            if v in alive:
                return v
        return self.committee[base % n]

    # -- the committed log -----------------------------------------------------------------------

    def _committed(self, e: Committed, now: float) -> list[Effect]:
        out: list[Effect] = []
        if e.committee is not None and e.committee != self.ledger.committee:
            was_validator = self.is_validator
            self.ledger.set_committee(e.committee)
            self._count("committee_switched")
            if not e.replay:
                out += self._switched(was_validator, now)
        for body in e.trust_bodies:
            self.ledger.apply_trust(e.seq, body)
        for body in e.bodies:
            applied = self.ledger.apply(e.seq, body)
            if e.replay:
                if applied.status == "ok" and isinstance(applied.tx, StartRound):
                    self._remember_tasks(applied.tx.job, applied.tx)
                continue
            out.append(JobApplied(applied=applied))
            if applied.status != "ok" or applied.job is None:
                continue
            job = self.ledger.jobs[applied.job]
            tx = applied.tx
            if isinstance(tx, CreateJob):
                out += self._round_due(job, now)
            elif isinstance(tx, StartRound):
                out += self._started(job, tx, now)
            elif isinstance(tx, CommitRound):
                done = job.history[-1]
                self.training = {k for k in self.training if k[0] != job.id or k[1] > done.round}
                self._carry_over(job, self._rounds.pop(job.id, None), set(done.sources))
                self._forget_rounds(job)
                out.append(
                    RoundPhase(
                        job=job.id, round=done.round, phase="completed", detail=done.model_key
                    )
                )
                if job.status == "running":
                    out += self._round_due(job, now)
            else:  # cancelled
                self._rounds.pop(job.id, None)
        return out

    def _switched(self, was_validator: bool, now: float) -> list[Effect]:
        """A new committee took over (from this entry on). It heard nothing of the open rounds:
        a trainer tells it again what it told the old one (commitment, then reveal); a node
        that just became a validator opens its collection of every open round, as after a
        restart. A node that left the committee stops collecting (its results could no longer
        commit: attestations are checked against the committee in force)."""
        out: list[Effect] = []
        for key in sorted(self._told):
            job = self.ledger.jobs.get(key[0])
            if job is not None and job.status == "running":
                out += [Broadcast(msg=m) for m in self._told[key]]
        if not self.is_validator:
            self._rounds.clear()
        elif not was_validator:
            out += self._resumed(Resumed(), now)
        return out

    def _forget_rounds(self, job: JobState) -> None:
        """Commit-phase and refusal records of rounds no update can come from any more."""
        lo = job.round - job.spec.staleness
        for d in (
            self._commits,
            self._commit_started,
            self._refused,
            self._reveals,
            self._told,
            self._retrains,
        ):
            for k in [k for k in d if k[0] == job.id and k[1] < lo]:
                del d[k]
        self._commit_closed = {k for k in self._commit_closed if k[0] != job.id or k[1] >= lo}
        self._reopened = {k for k in self._reopened if k[0] != job.id or k[1] >= lo}
        self._reveal_seen = {k for k in self._reveal_seen if k[0] != job.id or k[1] >= lo}
        self._late = {k for k in self._late if k[0] != job.id or k[1] >= lo}
        if job.status != "running":
            self._revealed.pop(job.id, None)

    def _resumed(self, e: Resumed, now: float) -> list[Effect]:
        out: list[Effect] = []
        for job in self.ledger.running():
            if job.assignment is None:
                out += self._round_due(job, now)
            else:
                out += self._started(job, job.assignment, now)
        return out

    def _round_due(self, job: JobState, now: float) -> list[Effect]:
        """A round has no tasks yet: the starter proposes them; everyone keeps the time."""
        self._starting[(job.id, job.round)] = 0
        out: list[Effect] = [RoundPhase(job=job.id, round=job.round, phase="distribution")]
        if self.is_validator:
            out.append(self._set_timer("start", job.id, job.round, now + self.config.start_timeout))
            out += self._try_start(job, 0, now)
        return out

    def _start_tick(self, job: JobState, now: float) -> list[Effect]:
        key = (job.id, job.round)
        if key not in self._starting or job.assignment is not None:
            return []
        self._starting[key] += 1
        out: list[Effect] = [
            self._set_timer("start", job.id, job.round, now + self.config.start_timeout)
        ]
        return out + self._try_start(job, self._starting[key], now)

    def _selectable(self, now: float) -> tuple[Candidate, ...]:
        """Candidates the trust hooks admit as trainers and that are under the governance
        limit ``max_tasks_per_node_per_hour`` (tasks counted by this validator's clock)."""
        while self._task_log and self._task_log[0][0] < now - 3600.0:
            self._task_log.popleft()
        limit = self.ledger.param("max_tasks_per_node_per_hour") or None  # 0: no limit
        counts: dict[bytes, int] = {}
        if limit is not None:
            for _, node in self._task_log:
                counts[node] = counts.get(node, 0) + 1
        out = []
        for c in self.candidates:
            if self.ledger.admits(c.node, "trainer"):
                continue
            if limit is not None and counts.get(c.node, 0) >= limit:
                self._count("selector_over_task_limit")
                continue
            out.append(c)
        return tuple(out)

    def _effective_spec(self, job: JobState) -> JobSpec | None:
        """The job's spec with governance's ``min_participants`` applied (None: unsatisfiable)."""
        need = self.ledger.min_participants(job.spec)
        if need == job.spec.min_participants:
            return job.spec
        try:
            return replace(job.spec, min_participants=need)
        except ValueError:
            return None

    def _try_start(
        self, job: JobState, attempt: int, now: float, reassign: bool = False
    ) -> list[Effect]:
        if self.leader(job.id, job.round, attempt) != self.me:
            return []
        spec = self._effective_spec(job)
        if spec is None:
            self._count("start_min_participants_unmet")
            return []
        taken: dict[bytes, int] = {}
        for other in self.ledger.running():
            if other.id == job.id:
                break  # jobs of higher priority took their slots first
            if other.assignment is not None:
                for t in other.assignment.tasks:
                    taken[t.node] = taken.get(t.node, 0) + 1
        previous = self._prev_tasks.get(job.id, {})
        # Members gossip the models they hold as "job@round": those holding this round's base
        # model need no download, so the selector prefers them.
        tag = f"{job.id}@{job.round - 1}"
        tasks = self.selector(spec, job.round, tag, self._selectable(now), taken, previous)
        if not tasks:
            self._count("start_no_candidates")
            return []
        tx = StartRound(
            job=job.id, round=job.round, base_key=job.model_key, tasks=tasks, reassign=reassign
        )
        return [Submit(body=encode_tx(tx))]

    def _started(self, job: JobState, tx: StartRound, now: float) -> list[Effect]:
        self._starting.pop((job.id, tx.round), None)
        self._remember_tasks(job.id, tx)
        for t in tx.tasks:
            self._task_log.append((now, t.node))
        key = (job.id, tx.round)
        out: list[Effect] = [RoundPhase(job=job.id, round=tx.round, phase="training")]
        if job.spec.commit_reveal:
            # A reassignment reopens the commit phase for the new trainers.
            if key in self._commit_closed:
                self._commit_closed.discard(key)
                self._reopened.add(key)
            self._commit_started[key] = now
            if self.is_validator:
                window = job.spec.commit_window * job.spec.round_deadline
                out.append(self._set_timer("commit", job.id, tx.round, now + window))
                out += self._maybe_close_commit(job, tx.round, now)
        for t in tx.tasks:
            if t.node != self.me:
                continue
            if tx.reassign and (job.id, tx.round) in self._told:
                out += self._tell_again(job, tx.round, now)
            elif (job.id, tx.round) not in self.training:
                self.training.add((job.id, tx.round))
                out.append(Train(job=job.id, round=tx.round, shard=t.shard, base_key=tx.base_key))
        if self.is_validator:
            deadline = now + job.spec.round_deadline
            rs = self._rounds.get(job.id)
            if rs is not None and rs.round == tx.round:
                # The open round was reassigned: what was collected stays, the clock restarts.
                rs.deadline = deadline
                out.append(self._set_timer("close", job.id, tx.round, deadline))
                return out + self._maybe_close(job, rs, now)
            kept = rs.updates if rs is not None else {}
            rs = self._rounds[job.id] = OpenRound(round=tx.round, opened=now, deadline=deadline)
            # Stale updates still within the bound stay; early ones for this round join.
            lo = tx.round - job.spec.staleness
            rs.updates = {
                k: u for k, u in kept.items() if lo <= u.round < tx.round and k not in job.used
            }
            for k, ref in self._early.pop((job.id, tx.round), {}).items():
                assigned = ref.node in job.assigned.get(ref.round, ())
                if lo <= ref.round and assigned and k not in job.used:
                    rs.updates[k] = ref
            rs.held = {k: now for k in rs.updates}
            for old in [k for k in self._early if k[0] == job.id and k[1] < tx.round]:
                del self._early[old]
            out.append(self._set_timer("close", job.id, tx.round, deadline))
            out += self._maybe_close(job, rs, now)
        return out

    def _carry_over(
        self, job: JobState, rs: OpenRound | None, used: set[tuple[bytes, int]]
    ) -> None:
        """Under bounded staleness, updates that missed the committed round may join the next."""
        if rs is None or not job.spec.staleness or job.status != "running":
            return
        early = self._early.setdefault((job.id, job.round), {})
        for k, u in rs.updates.items():
            if k not in used and u.round >= job.round - job.spec.staleness:
                early.setdefault(k, u)

    def _remember_tasks(self, job: str, tx: StartRound) -> None:
        self._prev_tasks[job] = {t.node: t.shard for t in tx.tasks}

    # -- membership ------------------------------------------------------------------------------

    def _members(self, e: MembersSeen, now: float) -> list[Effect]:
        records = self.ledger
        self.candidates = tuple(
            replace(c, reliability=(c.reliability + records.record(c.node).reliability) / 2)
            for c in e.candidates
        )
        return []
