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
from dataclasses import dataclass, field, replace

from p2pnode_protocols.machine import (
    Broadcast,
    Effect,
    Event,
    LocalProtocolError,
    MessageReceived,
    Send,
    SetTimer,
    TimerFired,
)
from p2pnode_protocols.signing import Signer, Verifier

from .events import (
    Aggregate,
    BadProposal,
    Committed,
    Computed,
    Fetched,
    JobApplied,
    MembersSeen,
    Prefetch,
    Resumed,
    RoundPhase,
    Submit,
    Train,
    TrainingDone,
)
from .ledger import JobState, TrainingLedger, TrustHooks
from .messages import (
    UPDATE_FLAGS,
    Attestation,
    CommitClosed,
    Commitment,
    Flag,
    Proposal,
    RoundResult,
    UpdateNotice,
    UpdateRef,
    attestation_payload,
    commitment_digest,
    decode_result,
    encode_result,
    proposal_payload,
    result_digest,
    sign_commitment,
    sign_notice,
)
from .selector import Candidate, Selector, select_tasks
from .spec import MAX_PARTICIPANTS, JobSpec
from .transactions import CommitRound, CreateJob, StartRound, encode_tx
from .verify import RateLimit, salt_for, spot_checked

__all__ = ["METRIC_TOLERANCE", "RoundsConfig", "RoundsMachine"]

#: how far a proposal's accuracy and loss may differ from a validator's own (they go through
#: BLAS, whose last bits may differ between machines); the model key must match exactly.
METRIC_TOLERANCE = 1e-3


@dataclass(frozen=True, slots=True, kw_only=True)
class RoundsConfig:
    #: seconds a starter has to get a round's tasks committed before the next one tries.
    start_timeout: float = 3.0
    #: seconds a proposer has, after collection closed, before the next validator proposes.
    result_timeout: float = 5.0
    #: update notices and commitments a validator takes from one peer per minute (0: no limit);
    #: the excess is dropped and counted.
    max_notices_per_minute: int = 600
    #: a proposal that leaves out an update this validator held before its own close and at
    #: least this long before the proposal arrived is censorship: refused, and flagged by this
    #: validator's next proposal.
    censor_grace: float = 0.05
    #: a trainer that hears no CommitClosed reveals this long after the commit window's end.
    reveal_grace: float = 0.2


@dataclass(slots=True)
class _Round:
    """A validator's collection for one job's open round."""

    round: int
    opened: float
    deadline: float
    updates: dict[tuple[bytes, int], UpdateRef] = field(default_factory=dict)
    closed_at: float | None = None
    attempt: int = 0
    aggregating: bool = False
    proposal: bytes | None = None
    attestations: dict[bytes, bytes] = field(default_factory=dict)
    submitted: bool = False
    checked: set[bytes] = field(default_factory=set)
    extended: int = 0
    #: (node, round) -> when this validator got the update (for the censorship check).
    held: dict[tuple[bytes, int], float] = field(default_factory=dict)
    #: (node, round) -> the validators known to hold the update (this one, and those that
    #: relayed it): censorship is leaving out an update f+1 validators hold.
    holders: dict[tuple[bytes, int], set[bytes]] = field(default_factory=dict)
    #: update blobs this validator fetched (only those can be evidence of censorship).
    fetched: set[str] = field(default_factory=set)


class RoundsMachine:
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
        self._rounds: dict[str, _Round] = {}
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
        for d in (self._commits, self._commit_started, self._refused, self._reveals, self._told):
            for k in [k for k in d if k[0] == job.id and k[1] < lo]:
                del d[k]
        self._commit_closed = {k for k in self._commit_closed if k[0] != job.id or k[1] >= lo}
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
            self._commit_closed.discard(key)
            self._commit_started[key] = now
            if self.is_validator:
                window = job.spec.commit_window * job.spec.round_deadline
                out.append(self._set_timer("commit", job.id, tx.round, now + window))
                out += self._maybe_close_commit(job, tx.round, now)
        for t in tx.tasks:
            if t.node == self.me and (job.id, tx.round) not in self.training:
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
            rs = self._rounds[job.id] = _Round(round=tx.round, opened=now, deadline=deadline)
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

    def _carry_over(self, job: JobState, rs: _Round | None, used: set[tuple[bytes, int]]) -> None:
        """Under bounded staleness, updates that missed the committed round may join the next."""
        if rs is None or not job.spec.staleness or job.status != "running":
            return
        early = self._early.setdefault((job.id, job.round), {})
        for k, u in rs.updates.items():
            if k not in used and u.round >= job.round - job.spec.staleness:
                early.setdefault(k, u)

    def _remember_tasks(self, job: str, tx: StartRound) -> None:
        self._prev_tasks[job] = {t.node: t.shard for t in tx.tasks}

    # -- trainers --------------------------------------------------------------------------------

    def _trained(self, e: TrainingDone, now: float) -> list[Effect]:
        if not e.key:
            self._count("training_failed")
            return [RoundPhase(job=e.job, round=e.round, phase="training", detail=e.error)]
        job = self.ledger.jobs.get(e.job)
        if job is None or not job.spec.commit_reveal:
            notice = sign_notice(self.signer, e.job, e.round, e.key, e.size, e.samples)
            self._told[(e.job, e.round)] = [notice]
            out: list[Effect] = [Broadcast(msg=notice)]
            if self.is_validator:
                out += self._notice(notice, now, local=True)
            return out
        # Commit now, reveal once the commit phase closed (CommitClosed from a validator, or
        # our own clock a little after the window).
        salt = salt_for(self.signer, e.job, e.round, e.key)
        notice = sign_notice(self.signer, e.job, e.round, e.key, e.size, e.samples, salt)
        digest = commitment_digest(e.job, e.round, self.me, e.key, salt)
        c = sign_commitment(self.signer, e.job, e.round, digest)
        key = (e.job, e.round)
        self._reveals[key] = notice
        self._told[key] = [c]
        out = [Broadcast(msg=c)]
        if self.is_validator:
            out += self._commitment(c, now, local=True)
        if e.round < job.round:
            # The round committed without us: its commit phase is over everywhere, so reveal
            # now (validators refuse a late reveal of a key revealed before).
            return out + self._reveal(e.job, e.round, now)
        window = job.spec.commit_window * job.spec.round_deadline
        at = max(now, self._commit_started.get(key, now) + window) + self.config.reveal_grace
        if key in self._reveals:  # not revealed by our own close just now
            out.append(self._set_timer("reveal", e.job, e.round, at))
        return out

    def _reveal(self, job: str, rnd: int, now: float) -> list[Effect]:
        notice = self._reveals.pop((job, rnd), None)
        if notice is None:
            return []
        self._told.setdefault((job, rnd), []).append(notice)
        out: list[Effect] = [Broadcast(msg=notice)]
        if self.is_validator:
            out += self._notice(notice, now, local=True)
        return out

    # -- validators: the commit phase ------------------------------------------------------------

    def _commitment(
        self, c: Commitment, now: float, local: bool = False, relay: bool = False
    ) -> list[Effect]:
        job = self.ledger.jobs.get(c.job)
        if job is None or job.status != "running" or not job.spec.commit_reveal:
            self._count("commitment_unexpected")
            return []
        key = (c.job, c.round)
        if not job.round - job.spec.staleness <= c.round <= job.round + 1:
            self._count("commitment_out_of_window")
            return []
        if c.node in self._commits.get(key, {}):
            return []  # the first commitment binds (and a relayed copy is no news)
        late = key in self._commit_closed or c.round < job.round
        if late and not job.spec.staleness:
            self._count("commitment_late")
            return []
        if self.ledger.admits(c.node, "trainer"):
            self._count("notice_not_admitted")
            return []
        if not local and not c.verify(self.verifier):
            self._count("commitment_bad_signature")
            return []
        commits = self._commits.setdefault(key, {})
        if c.node in commits or len(commits) >= 4 * MAX_PARTICIPANTS:
            return []  # the first commitment binds
        commits[c.node] = c.digest
        out: list[Effect] = [Broadcast(msg=c)] if relay else []
        if late:
            # Bounded staleness: a slow trainer may still commit, but its reveal must not be
            # an update revealed before (see _notice).
            self._count("commitment_late_stale")
            self._late.add((c.job, c.round, c.node))
        return out + self._maybe_close_commit(job, c.round, now)

    def _maybe_close_commit(self, job: JobState, rnd: int, now: float) -> list[Effect]:
        assigned = job.assigned.get(rnd, frozenset())
        if rnd != job.round or job.assignment is None or job.assignment.round != rnd:
            return []
        if assigned and assigned <= self._commits.get((job.id, rnd), {}).keys():
            return self._close_commit(job, rnd, now)
        return []

    def _close_commit(self, job: JobState, rnd: int, now: float) -> list[Effect]:
        key = (job.id, rnd)
        if key in self._commit_closed or not self.is_validator:
            return []
        self._commit_closed.add(key)
        out: list[Effect] = []
        for node in sorted(self._commits.get(key, {})):
            if node == self.me:
                out += self._reveal(job.id, rnd, now)
            elif node in job.assigned.get(rnd, ()):
                out.append(Send(to=node, msg=CommitClosed(job=job.id, round=rnd)))
        rs = self._rounds.get(job.id)
        if rs is not None and rs.round == rnd:
            out += self._maybe_close(job, rs, now)  # those who did not commit never deliver
        return out

    # -- validators: collection ------------------------------------------------------------------

    def _message(self, e: MessageReceived, now: float) -> list[Effect]:
        msg = e.msg
        if isinstance(msg, CommitClosed):
            return self._reveal(msg.job, msg.round, now) if e.sender in self.committee else []
        if isinstance(msg, (UpdateNotice, Commitment)):
            node = msg.update.node if isinstance(msg, UpdateNotice) else msg.node
            relayed = node != e.sender
            if relayed and e.sender not in self.committee:
                self._count("refused_relayed")
                return []
            if not self.is_validator:
                return []
            # Validators relay what they got (signed by the trainer): not rate-limited.
            if not relayed and not self._rate.allow(e.sender, now):
                self._count("rate_limited")
                return []
            if isinstance(msg, Commitment):
                return self._commitment(msg, now, relay=not relayed)
            return self._notice(msg, now, relay=not relayed, via=e.sender)
        if not self.is_validator:
            return []
        if isinstance(msg, Proposal):
            return self._proposal(msg, e.sender, now)
        if isinstance(msg, Attestation):
            return self._attestation(msg, now)
        return []

    def _notice(
        self,
        n: UpdateNotice,
        now: float,
        local: bool = False,
        relay: bool = False,
        via: bytes | None = None,
    ) -> list[Effect]:
        job = self.ledger.jobs.get(n.job)
        u = n.update
        if job is None or job.status != "running":
            self._count("notice_unknown_job")
            return []
        if not local and not u.verify(n.job, self.verifier):
            self._count("notice_bad_signature")
            return []
        if u.round > job.round + 1 or u.round < job.round - job.spec.staleness:
            self._count("notice_out_of_window")
            return []
        if self.ledger.admits(u.node, "trainer"):
            self._count("notice_not_admitted")
            return []
        if job.spec.commit_reveal:
            # A reveal counts only with the matching commitment, received before the commit
            # phase closed (later commitments were refused), so nobody copies a revealed key.
            digest = commitment_digest(n.job, u.round, u.node, u.key, n.salt)
            if self._commits.get((job.id, u.round), {}).get(u.node) != digest:
                self._count("reveal_without_commitment")
                return []
            revealed = self._revealed.setdefault(job.id, {})
            if (job.id, u.round, u.node) in self._late and revealed.get(u.key, u.node) != u.node:
                self._count("reveal_copies_a_revealed_key")
                return []
            revealed.setdefault(u.key, u.node)
            while len(revealed) > 8 * MAX_PARTICIPANTS:
                del revealed[next(iter(revealed))]
        rs = self._rounds.get(job.id)
        if u.round > job.round or rs is None or rs.round != job.round:
            # The round this update can join is not open here yet (our StartRound commit may
            # come after a fast trainer's notice): keep it until it is, for the round it joins.
            joins = max(u.round, job.round)
            early = self._early.setdefault((job.id, joins), {})
            if len(early) < 4 * MAX_PARTICIPANTS:  # signed, but not yet checked as assigned
                early[(u.node, u.round)] = u
            return []
        if u.node not in job.assigned.get(u.round, ()):
            self._count("notice_unassigned")
            return []
        if (u.node, u.round) in job.used:
            self._count("notice_already_committed")
            return []
        k = (u.node, u.round)
        holders = rs.holders.setdefault(k, {self.me})
        if via is not None and via in self.committee:
            holders.add(via)  # a validator relayed it: it holds it too
        if k in rs.updates:
            return []
        rs.updates[k] = u
        rs.held[k] = now
        out: list[Effect] = [Prefetch(job=job.id, round=u.round, key=u.key, providers=(u.node,))]
        if len(rs.updates) == 1:
            out.append(RoundPhase(job=job.id, round=rs.round, phase="collection"))
        if relay:
            # So that an honest proposer holds every update some validator holds (a trainer
            # that told only some validators cannot make the others look like censors).
            out.append(Broadcast(msg=n))
        return out + self._maybe_close(job, rs, now)

    def _fetched(self, e: Fetched, now: float) -> list[Effect]:
        rs = self._rounds.get(e.job)
        if rs is not None and len(rs.fetched) < 4 * MAX_PARTICIPANTS:
            rs.fetched.add(e.key)
        return []

    def _maybe_close(self, job: JobState, rs: _Round, now: float) -> list[Effect]:
        if rs.closed_at is not None:
            return []
        fresh = {node for node, r in rs.updates if r == rs.round}
        expected = job.assigned.get(rs.round, frozenset())
        key = (job.id, rs.round)
        if job.spec.commit_reveal and key in self._commit_closed:
            expected = expected & self._commits.get(key, {}).keys()
        everyone = fresh >= expected
        enough = len(rs.updates) >= job.spec.min_updates
        if enough and (everyone or now >= rs.deadline):
            rs.closed_at = now
            return [
                RoundPhase(
                    job=job.id,
                    round=rs.round,
                    phase="aggregation",
                    detail=f"{len(rs.updates)} updates",
                ),
                self._set_timer("close", job.id, rs.round, now + self.config.result_timeout),
                *self._propose_if_turn(job, rs),
            ]
        return []

    def _close_tick(self, job: JobState, now: float) -> list[Effect]:
        rs = self._rounds.get(job.id)
        if rs is None or rs.round != job.round:
            return []
        if rs.closed_at is None:
            if job.spec.stragglers == "wait" and rs.extended == 0:
                rs.extended += 1
                rs.deadline = now + job.spec.round_deadline
                return [self._set_timer("close", job.id, rs.round, rs.deadline)]
            out = self._maybe_close(job, rs, now)
            if rs.closed_at is None:
                # Too few updates: wait another deadline, and from the second on let the
                # validator whose turn it is reassign the round to the nodes alive now.
                rs.extended += 1
                rs.deadline = now + job.spec.round_deadline
                out.append(self._set_timer("close", job.id, rs.round, rs.deadline))
                if rs.extended >= 2:
                    self._count("round_reassigned")
                    out += self._try_start(job, rs.extended, now, reassign=True)
            return out
        # No result committed in time: the next validator's turn.
        rs.attempt += 1
        rs.aggregating = False
        self._count("proposer_rotated")
        return [
            self._set_timer("close", job.id, rs.round, now + self.config.result_timeout),
            *self._propose_if_turn(job, rs),
        ]

    def _propose_if_turn(self, job: JobState, rs: _Round) -> list[Effect]:
        if self.leader(job.id, rs.round, rs.attempt) != self.me or rs.aggregating:
            return []
        rs.aggregating = True
        updates = tuple(rs.updates[k] for k in sorted(rs.updates))
        return [self._aggregate_effect(job, rs.round, updates)]

    def _aggregate_effect(
        self,
        job: JobState,
        rnd: int,
        updates: tuple[UpdateRef, ...],
        check: RoundResult | None = None,
        check_bytes: bytes | None = None,
    ) -> Aggregate:
        """An Aggregate with what verified work needs: every fresh update's shard and the
        spot-checked nodes (from the update set itself, so proposer and checkers agree)."""
        shards = tuple(
            (u.node, job.shard_of[(u.node, u.round)])
            for u in updates
            if u.round == rnd and (u.node, u.round) in job.shard_of
        )
        spot = spot_checked(job.id, rnd, job.model_key, updates, job.spec.spot_check)
        return Aggregate(
            job=job.id,
            round=rnd,
            base_key=job.model_key,
            updates=updates,
            check=check,
            check_bytes=check_bytes,
            shards=shards,
            spot=spot,
        )

    # -- validators: proposals and attestations --------------------------------------------------

    def _computed(self, e: Computed, now: float) -> list[Effect]:
        job = self.ledger.jobs.get(e.job)
        rs = self._rounds.get(e.job)
        if job is None or rs is None or rs.round != e.round or job.round != e.round:
            return []
        if e.check is not None:
            return self._checked(job, rs, e)
        rs.aggregating = False
        if e.result is None:
            self._count("aggregate_failed")
            return [RoundPhase(job=job.id, round=e.round, phase="aggregation", detail=e.error)]
        # Our own checks of the round's other proposals join the content flags of the compute.
        mine = {(f.node, f.kind): f for f in e.result.flags if f.kind in UPDATE_FLAGS}
        for node, fl in self._refused.get((job.id, e.round), {}).items():
            if node != self.me:
                mine[(node, fl.kind)] = fl
        flags = tuple(mine[k] for k in sorted(mine))
        result = replace(e.result, proposer=self.me, flags=flags)
        body = encode_result(result)
        digest = result_digest(body)
        rs.proposal = body
        rs.attestations = {self.me: self.signer.sign(attestation_payload(digest))}
        rs.submitted = False
        proposal = Proposal(result=body, sig=self.signer.sign(proposal_payload(digest)))
        out: list[Effect] = [
            RoundPhase(job=job.id, round=e.round, phase="validation", detail=result.model_key),
            Broadcast(msg=proposal),
        ]
        return out + self._maybe_submit(rs)

    def _proposal(self, p: Proposal, sender: bytes, now: float) -> list[Effect]:
        result = decode_result(p.result)
        digest = result_digest(p.result)
        if sender not in self.committee or result.proposer != sender:
            self._count("proposal_not_from_validator")
            return []
        if not self.verifier.verify(sender, proposal_payload(digest), p.sig):
            self._count("proposal_bad_signature")
            return []
        job = self.ledger.jobs.get(result.job)
        rs = self._rounds.get(result.job)
        if job is None or rs is None or rs.round != result.round or job.round != result.round:
            self._count("proposal_not_current")
            return []
        if digest in rs.checked:
            return []
        rs.checked.add(digest)
        reason = self.ledger.check_result(job, result) or self._censored(
            job, rs, result, digest, now
        )
        if reason:
            return [
                BadProposal(
                    job=job.id,
                    round=result.round,
                    proposer=sender,
                    reason=reason,
                    proposal=p.result,
                    sig=p.sig,
                )
            ]
        self._sigs[digest] = p.sig
        return [
            RoundPhase(job=job.id, round=result.round, phase="validation", detail=result.model_key),
            self._aggregate_effect(job, result.round, result.updates, result, p.result),
        ]

    def _censored(
        self, job: JobState, rs: _Round, result: RoundResult, digest: bytes, now: float
    ) -> str:
        """The refusal's reason if the proposal leaves out updates that f+1 validators hold (as
        far as this one knows: itself and those that relayed them) and that this validator held
        (notice and blob) before its own close and ``censor_grace`` before the proposal came
        (recorded, to be flagged); "" if it leaves out none. An update only this validator
        holds, or whose blob it could not fetch, is no evidence: refusing for it could stall
        the round for good."""
        if rs.closed_at is None:
            return ""
        included = {(u.node, u.round) for u in result.updates}
        cutoff = min(rs.closed_at, now - self.config.censor_grace)
        f = (len(self.committee) - 1) // 3
        left_out = [
            k
            for k, t in rs.held.items()
            if k in rs.updates
            and k not in included
            and k not in job.used
            and t <= cutoff
            and rs.updates[k].key in rs.fetched
            and len(rs.holders.get(k, ())) >= f + 1
        ]
        if not left_out:
            return ""
        self._count("proposal_censoring")
        self._refused.setdefault((job.id, rs.round), {})[result.proposer] = Flag(
            node=result.proposer, kind="censorship", detail=digest.hex()
        )
        return f"censorship: {len(left_out)} updates held since before the close left out"

    def _checked(self, job: JobState, rs: _Round, e: Computed) -> list[Effect]:
        assert e.check is not None
        theirs = decode_result(e.check)
        digest = result_digest(e.check)
        psig = self._sigs.pop(digest, b"")
        mine = e.result
        if mine is None:
            # We could not recompute (an update not fetched in time): no verdict, no evidence;
            # a later copy of the proposal may be checked again.
            rs.checked.discard(digest)
            self._count("recompute_failed")
            return []
        reason = _difference(mine, theirs) or self._disagrees(job, theirs)
        if reason:
            self._count("proposal_refused")
            if theirs.proposer != self.me and not reason.startswith("flag"):
                self._refused.setdefault((job.id, e.round), {})[theirs.proposer] = Flag(
                    node=theirs.proposer, kind="wrong_aggregate", detail=digest.hex()
                )
            return [
                BadProposal(
                    job=job.id,
                    round=e.round,
                    proposer=theirs.proposer,
                    reason=reason,
                    proposal=e.check,
                    sig=psig,
                )
            ]
        sig = self.signer.sign(attestation_payload(digest))
        att = Attestation(job=job.id, round=e.round, digest=digest, validator=self.me, sig=sig)
        self._count("attested")
        return [Send(to=theirs.proposer, msg=att)]

    def _disagrees(self, job: JobState, theirs: RoundResult) -> str:
        """A proposal's flags about validators must be ones this validator found itself."""
        found = self._refused.get((job.id, theirs.round), {})
        for fl in theirs.flags:
            if fl.kind not in UPDATE_FLAGS and found.get(fl.node) != fl:
                return f"flag {fl.kind} of a validator this node has no finding against"
        return ""

    def _attestation(self, a: Attestation, now: float) -> list[Effect]:
        rs = self._rounds.get(a.job)
        if rs is None or rs.round != a.round or rs.proposal is None:
            return []
        if result_digest(rs.proposal) != a.digest or a.validator not in self.committee:
            return []
        if not self.verifier.verify(a.validator, attestation_payload(a.digest), a.sig):
            self._count("attestation_bad_signature")
            return []
        rs.attestations[a.validator] = a.sig
        return self._maybe_submit(rs)

    def _maybe_submit(self, rs: _Round) -> list[Effect]:
        if rs.submitted or rs.proposal is None or len(rs.attestations) < self.ledger.quorum:
            return []
        rs.submitted = True
        atts = tuple(sorted(rs.attestations.items()))
        return [Submit(body=encode_tx(CommitRound(result=rs.proposal, attestations=atts)))]

    # -- membership ------------------------------------------------------------------------------

    def _members(self, e: MembersSeen, now: float) -> list[Effect]:
        records = self.ledger
        self.candidates = tuple(
            replace(c, reliability=(c.reliability + records.record(c.node).reliability) / 2)
            for c in e.candidates
        )
        return []


def _difference(mine: RoundResult, theirs: RoundResult) -> str:
    if mine.model_key != theirs.model_key:
        return "the model key does not recompute"
    if mine.contributors != theirs.contributors or mine.outliers != theirs.outliers:
        return "contributors or outliers differ"
    # "not <=" so that a NaN (which compares false with everything) is a difference too.
    if not abs(mine.accuracy - theirs.accuracy) <= METRIC_TOLERANCE:
        return "accuracy differs beyond tolerance"
    if not abs(mine.loss - theirs.loss) <= METRIC_TOLERANCE:
        return "loss differs beyond tolerance"
    if [f for f in mine.flags if f.kind in UPDATE_FLAGS] != [
        f for f in theirs.flags if f.kind in UPDATE_FLAGS
    ]:
        return "spot-check or copy flags differ"
    mine_scores, their_scores = dict(mine.scores), dict(theirs.scores)
    if mine_scores.keys() != their_scores.keys():
        return "scores differ"
    for k, v in mine_scores.items():
        if not abs(v - their_scores[k]) <= METRIC_TOLERANCE:
            return "scores differ beyond tolerance"
    return ""
