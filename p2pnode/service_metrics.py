"""Metrics of every service: read from the services at scrape time, or fed by the event bus.

Two sources, so that no hot path pays for a metric it already counts:

- :class:`ServiceCollector` is a prometheus-client collector: at each scrape it reads the
  figures the services keep anyway (membership's member table and counters, the consensus
  status, the blob store's stats, the rounds ledger, this node's trust account) and yields
  them as metric families. Nothing is computed between scrapes.
- :class:`MetricsFeed` is one task that drains the event bus (``members``, ``commits``,
  ``rounds``, ``trust``) into counters and histograms: what only exists as a moment (a phase
  entered, a view changed, a reward paid). The bus drops events for a subscriber that falls
  behind rather than block; ``p2pnode_metrics_events_dropped_total`` would show it (the feed
  only counts, so it keeps up).

Every name here is in ``docs/metrics.md`` and ``tests/unit/test_metrics_doc.py`` holds the
two to each other.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import trio
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from p2pnode.blobs.service import BlobService
    from p2pnode.consensus.service import ConsensusService
    from p2pnode.events import EventBus
    from p2pnode.membership.service import MembershipService
    from p2pnode.rounds.service import RoundsService
    from p2pnode.trust.service import TrustService

__all__ = ["JOB_SERIES", "PHASES", "MetricsFeed", "ServiceCollector"]

#: Jobs exported with a ``job`` label: the running ones, then the most recent others, up to
#: this many (a swarm that ran thousands of jobs must not grow every scrape without bound).
JOB_SERIES = 16
#: A round's phases in order (protocols/rounds: RoundPhase), "completed" last.
PHASES = ("distribution", "training", "collection", "aggregation", "validation", "completed")
_MEMBER_STATES = ("alive", "suspect", "dead")
_MEMBER_CHANGES = ("join", "suspect", "dead", "recovered")
_ROUND_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300)
_PARTICIPANT_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 128)


class ServiceCollector(Collector):
    """Figures the services keep, read at each scrape (see the module docstring)."""

    def __init__(
        self,
        *,
        membership: MembershipService,
        blobs: BlobService,
        consensus: ConsensusService | None,
        rounds: RoundsService | None,
        trust: TrustService | None,
        version: str,
        peer_id: str,
        started: float,
    ) -> None:
        self.membership = membership
        self.blobs = blobs
        self.consensus = consensus
        self.rounds = rounds
        self.trust = trust
        self.version = version
        self.peer_id = peer_id
        self.started = started

    def describe(self) -> list[Metric]:
        return []  # collected on demand only: registering must not read the services

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            "p2pnode_info", "Always 1; the labels name this node", labels=["version", "peer_id"]
        )
        info.add_metric([self.version, self.peer_id], 1)
        yield info
        yield GaugeMetricFamily(
            "p2pnode_start_time_seconds", "Unix time the daemon started", value=self.started
        )
        yield from self._membership()
        yield from self._blobs()
        if self.consensus is not None:
            yield from self._consensus(self.consensus)
        if self.rounds is not None:
            yield from self._rounds(self.rounds)
        if self.trust is not None:
            yield from self._trust(self.trust)

    def _membership(self) -> Iterator[Metric]:
        by_state = dict.fromkeys(_MEMBER_STATES, 0)
        for v in self.membership.members():
            by_state[v.status.name.lower()] = by_state.get(v.status.name.lower(), 0) + 1
        g = GaugeMetricFamily(
            "p2pnode_membership_members", "Members this node knows, by state", labels=["state"]
        )
        for state, n in by_state.items():
            g.add_metric([state], n)
        yield g
        c = self.membership.counters()
        for name, key, doc in (
            ("probes", "probes", "Direct probes (PINGs) this node started"),
            ("probes_failed", "probes_failed", "Probes that got no ACK, even indirectly"),
            ("refutes", "refutes", "Suspicions of this node it refuted"),
            ("packets_sent", "packets_sent", "Heartbeat packets sent"),
            ("sent_bytes", "bytes_sent", "Heartbeat bytes sent"),
        ):
            yield CounterMetricFamily(f"p2pnode_membership_{name}", doc, value=c.get(key, 0))

    def _blobs(self) -> Iterator[Metric]:
        b = self.blobs
        stats = b.stats()
        g = GaugeMetricFamily(
            "p2pnode_blob_stored_bytes", "Bytes of blobs stored here, by kind", labels=["kind"]
        )
        for kind, n in sorted(stats["bytes_by_kind"].items()):
            g.add_metric([kind], n)
        yield g
        yield GaugeMetricFamily(
            "p2pnode_blob_store_capacity_bytes",
            "blobs.max_store_bytes: the most the store may hold",
            value=stats["max_store_bytes"],
        )
        yield GaugeMetricFamily(
            "p2pnode_blobs_provided",
            "Complete blobs held here, each announced in the DHT with this node as a provider",
            value=len(b.store.complete_keys()),
        )
        yield GaugeMetricFamily(
            "p2pnode_blob_uploads_live", "Blob uploads in progress", value=stats["live_uploads"]
        )
        for name, value, doc in (
            ("chunks_served", b.served_chunks, "Chunks this node served to peers"),
            ("chunks_fetched", b.fetched_chunks, "Chunks this node fetched from peers"),
            ("bad_chunks", b.bad_chunks, "Fetched chunks whose hash did not match (dropped)"),
            ("streams_opened", b.streams_opened, "Blob streams opened to providers"),
            ("provider_lookups", b.provider_lookups, "DHT provider lookups made by fetches"),
        ):
            yield CounterMetricFamily(f"p2pnode_blob_{name}", doc, value=value)

    def _consensus(self, cons: ConsensusService) -> Iterator[Metric]:
        st = cons.status()
        counters = st["counters"]
        for name, value, doc in (
            ("view", st["view"], "PBFT view of this validator's replica (-1 on a follower)"),
            ("epoch", st["epoch"], "Committee epoch in force"),
            ("committee_size", len(st["committee"]), "Validators in the committee in force"),
            ("validator", 1 if st["role"] == "validator" else 0, "1 on a validator"),
            ("in_view_change", 1 if st["in_view_change"] else 0, "1 during a view change"),
            ("log_height", st["last_committed"] or 0, "Highest committed log sequence here"),
            ("committee_dead", len(st["dead_members"]), "Validators membership holds dead"),
        ):
            yield GaugeMetricFamily(
                f"p2pnode_consensus_{name}", doc, value=-1 if value is None else value
            )
        for name, key, doc in (
            ("entries_committed", "entries_committed", "Log entries committed on this node"),
            ("evidence", "evidence", "PBFT equivocation evidence this node found"),
            ("submit_timeouts", "submit_timeouts", "Submissions not committed in time"),
        ):
            yield CounterMetricFamily(f"p2pnode_consensus_{name}", doc, value=counters.get(key, 0))

    def _rounds(self, rounds: RoundsService) -> Iterator[Metric]:
        ledger = rounds.machine.ledger
        by_status = dict.fromkeys(("running", "completed", "cancelled"), 0)
        jobs = list(ledger.jobs.values())
        for j in jobs:
            by_status[j.status] = by_status.get(j.status, 0) + 1
        g = GaugeMetricFamily(
            "p2pnode_jobs", "Training jobs in the log, by status", labels=["status"]
        )
        for status, n in by_status.items():
            g.add_metric([status], n)
        yield g
        shown = [j for j in jobs if j.status == "running"]
        shown += [j for j in reversed(jobs) if j.status != "running"]
        shown = shown[:JOB_SERIES]
        rnd = GaugeMetricFamily(
            "p2pnode_job_round", "Round a job trains (rounds + 1 once completed)", labels=["job"]
        )
        acc = GaugeMetricFamily(
            "p2pnode_job_accuracy",
            "Validation accuracy of a job's last committed model",
            labels=["job"],
        )
        loss = GaugeMetricFamily(
            "p2pnode_job_loss", "Validation loss of a job's last committed model", labels=["job"]
        )
        for j in shown:
            rnd.add_metric([j.id], j.round)
            if j.history:
                acc.add_metric([j.id], j.history[-1].accuracy)
                loss.add_metric([j.id], j.history[-1].loss)
        yield rnd
        yield acc
        yield loss
        yield GaugeMetricFamily(
            "p2pnode_training_tasks_running",
            "Training tasks this node runs now",
            value=rounds.work.running,
        )
        yield CounterMetricFamily(
            "p2pnode_rounds_refused_proposals",
            "Round results this validator refused (a wrong aggregate, censorship...)",
            value=rounds.counters.get("bad_proposals", 0),
        )

    def _trust(self, trust: TrustService) -> Iterator[Metric]:
        acct = trust.ledger.peek(trust.me)
        yield GaugeMetricFamily(
            "p2pnode_trust_balance_units", "This node's balance (token units)", value=acct.balance
        )
        yield GaugeMetricFamily(
            "p2pnode_trust_stake_units", "This node's stake (token units)", value=acct.stake
        )


class MetricsFeed:
    """Counters and histograms fed from the event bus (see the module docstring)."""

    def __init__(
        self,
        registry: CollectorRegistry,
        events: EventBus,
        *,
        summary_of: Callable[[str, int], Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.events = events
        self.summary_of = summary_of
        self.clock = clock
        r = registry
        self.member_changes = Counter(
            "p2pnode_membership_changes",
            "Membership changes seen: join, suspect (a suspicion), dead, recovered (a suspicion"
            " refuted: a false alarm)",
            ["change"],
            registry=r,
        )
        for change in _MEMBER_CHANGES:
            self.member_changes.labels(change)
        self.view_changes = Counter(
            "p2pnode_consensus_view_changes", "PBFT views entered after the first", registry=r
        )
        self.phase_seconds = Histogram(
            "p2pnode_round_phase_seconds",
            "Time a round spent in a phase on this node, from entering it to entering the next",
            ["phase"],
            buckets=_ROUND_BUCKETS,
            registry=r,
        )
        for phase in PHASES[:-1]:
            self.phase_seconds.labels(phase)
        self.round_seconds = Histogram(
            "p2pnode_round_seconds",
            "Time from a round's first phase seen on this node to its commit",
            buckets=_ROUND_BUCKETS,
            registry=r,
        )
        self.rounds_committed = Counter(
            "p2pnode_rounds_committed", "Training rounds committed", registry=r
        )
        self.participants = Histogram(
            "p2pnode_round_participants",
            "Trainers whose update a committed round used",
            buckets=_PARTICIPANT_BUCKETS,
            registry=r,
        )
        self.dropped = Counter(
            "p2pnode_round_updates_dropped",
            "Assigned trainers whose update a committed round did not use (late, missing, refused)",
            registry=r,
        )
        self.outliers = Counter(
            "p2pnode_round_outliers", "Updates a committed round's robust rule left out", registry=r
        )
        self.update_bytes = Counter(
            "p2pnode_round_update_bytes",
            "Bytes of the updates committed rounds used, as their trainers stored them",
            registry=r,
        )
        self.rewards = Counter("p2pnode_trust_rewards", "Rewards paid (ledger entries)", registry=r)
        self.reward_units = Counter(
            "p2pnode_trust_reward_units", "Token units paid as rewards", registry=r
        )
        self.penalties = Counter(
            "p2pnode_trust_penalties",
            "Penalties applied, by evidence kind",
            ["kind"],
            registry=r,
        )
        self.penalty_units = Counter(
            "p2pnode_trust_penalty_units", "Token units taken by penalties", registry=r
        )
        self._phases: dict[tuple[str, int], tuple[str, float, float]] = {}

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        topics = ("members", "commits", "rounds", "trust")
        subs = [(t, self.events.subscribe(t)) for t in topics]
        try:
            async with trio.open_nursery() as nursery:
                for _, receive in subs:
                    nursery.start_soon(self._drain, receive)
                task_status.started()
        finally:
            for topic, receive in subs:
                self.events.unsubscribe(topic, receive)

    async def _drain(self, receive: trio.MemoryReceiveChannel[dict[str, Any]]) -> None:
        async for event in receive:
            self.handle(event)

    def handle(self, event: dict[str, Any]) -> None:
        """Count one bus event (its ``topic`` says which)."""
        topic = event.get("topic")
        if topic == "members":
            if event.get("event") in _MEMBER_CHANGES:
                self.member_changes.labels(event["event"]).inc()
        elif topic == "commits":
            if event.get("event") == "view" and event.get("view", 0) > 0:
                self.view_changes.inc()
        elif topic == "rounds":
            self._phase(event)
        elif topic == "trust":
            if event.get("event") == "reward":
                self.rewards.inc()
                self.reward_units.inc(max(0, event.get("balance", 0)))
            elif event.get("event") == "evidence":
                self.penalties.labels(str(event.get("kind", ""))).inc()
                self.penalty_units.inc(max(0, event.get("penalty", 0)))

    def _phase(self, event: dict[str, Any]) -> None:
        phase, job, rnd = event.get("phase"), event.get("job"), event.get("round")
        if phase not in PHASES or not isinstance(job, str) or not isinstance(rnd, int):
            return
        now = self.clock()
        seen = self._phases.get((job, rnd))
        if seen is not None:
            last, since, _ = seen
            if PHASES.index(phase) <= PHASES.index(last):
                return  # a phase seen again (a retry, another validator's turn): not new
            self.phase_seconds.labels(last).observe(now - since)
        if phase != "completed":
            self._phases[(job, rnd)] = (phase, now, now if seen is None else seen[2])
            while len(self._phases) > 256:
                del self._phases[next(iter(self._phases))]
            return
        # A node that joined mid-round (or a follower) may see only the commit: the round
        # counts, its time does not.
        if seen is not None:
            del self._phases[(job, rnd)]
            self.round_seconds.observe(now - seen[2])
        self.rounds_committed.inc()
        summary = self.summary_of(job, rnd) if self.summary_of is not None else None
        if summary is not None:
            used, assigned, outliers, size = summary
            self.participants.observe(used)
            self.dropped.inc(max(0, assigned - used))
            self.outliers.inc(outliers)
            self.update_bytes.inc(size)
