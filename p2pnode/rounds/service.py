"""The rounds service: the rounds machine bound to the daemon's log, membership, blobs and peers.

- **The log**: every committed entry's ``AppTx(app="rounds")`` bodies are fed to the machine in
  log order (:class:`~p2pnode_protocols.rounds.Committed`); at start-up the whole local log is
  replayed first, so after a restart (even of every daemon) the jobs resume from their last
  committed round. The service reads the log from the store whenever the consensus service says
  it grew. Each entry's ``AppTx(app="trust")`` bodies go with it (the ledger hands them to its
  ``TrustHooks`` first), and so does the committee that ordered it when it changed
  (``committee_at``).
- **Membership**: once a second the machine gets this node's view as selection candidates, and
  the node gossips the models it holds (``job@round``) and the tasks it runs.
- **Peers**: update notices, proposals and attestations travel as datagrams on
  ``/p2pnode/rounds/1.0.0`` to the committee.
- **Work**: training, fetching and aggregation run in :class:`~p2pnode.rounds.work.RoundWork`.
- **Submits**: the machine's transactions go to the consensus service, a few at a time.

Users see the service through ``job.*`` and ``model.get`` (p2pnode/ipc/jobs.py) and the
``rounds`` and ``jobs`` topics of ``subscribe``.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

import trio
import trio.lowlevel
from libp2p.crypto.keys import KeyPair

from p2pnode.consensus.service import ConsensusService, b58
from p2pnode.machine_driver import MachineDriver
from p2pnode.network.datagram import DatagramTransport
from p2pnode.network.signing import Ed25519Signer, Ed25519Verifier
from p2pnode.rounds.compute import node_seed
from p2pnode.rounds.work import RoundWork
from p2pnode_protocols.heartbeat.state import MemberStatus
from p2pnode_protocols.machine import MessageReceived, Notify, RemoteProtocolError
from p2pnode_protocols.pbft import AppTx, decode_tx, encode_tx
from p2pnode_protocols.rounds import (
    APP,
    Aggregate,
    Applied,
    BadProposal,
    Candidate,
    CommitRound,
    Committed,
    JobApplied,
    MembersSeen,
    Prefetch,
    Resumed,
    RoundPhase,
    RoundsConfig,
    RoundsMachine,
    StartRound,
    Submit,
    Train,
    TrustHooks,
    Unsolicited,
    decode_message,
    encode_message,
)
from p2pnode_protocols.rounds import encode_tx as encode_rounds_tx
from p2pnode_protocols.rounds.messages import MAX_MESSAGE_BYTES

log = logging.getLogger(__name__)

__all__ = ["PROTOCOL", "RoundsService"]

PROTOCOL = "/p2pnode/rounds/1.0.0"
MEMBERS_INTERVAL = 1.0
#: log rows read per store query while replaying or following.
LOG_BATCH = 256


class RoundsService:
    def __init__(
        self,
        host: Any,
        key_pair: KeyPair,
        cfg: Any,
        *,
        consensus: ConsensusService,
        blobs: Any,
        membership: Any = None,
        events: Any = None,
        trust: TrustHooks | None = None,
        committee_at: Callable[[int], tuple[bytes, ...]] | None = None,
    ) -> None:
        self.host = host
        self.cfg = cfg
        self.consensus = consensus
        #: the committee that ordered log entry seq (e.g. CommitteeSchedule.committee_at(seq)
        #: .validators); None: the genesis committee for ever.
        self.committee_at = committee_at
        #: told of each unsolicited notice (job, round, node, notice bytes): evidence the trust
        #: service turns into an accusation.
        self.on_unsolicited: Callable[[str, int, bytes, bytes], None] | None = None
        self.blobs = blobs
        self.membership = membership
        self.events = events
        self.signer = Ed25519Signer(key_pair)
        self.me = self.signer.node_id
        t = cfg.training
        self.machine = RoundsMachine(
            signer=self.signer,
            verifier=Ed25519Verifier(),
            committee=consensus.committee.validators,
            config=RoundsConfig(
                start_timeout=t.start_timeout,
                result_timeout=t.result_timeout,
                max_notices_per_minute=t.max_notices_per_minute,
            ),
            trust=trust,
        )
        self.counters: Counter[str] = Counter()
        self.transport = DatagramTransport(
            host,
            PROTOCOL,
            self._on_packet,
            max_packet=MAX_MESSAGE_BYTES,
            queue_size=256,
            write_timeout=cfg.network.request_timeout,
            connect_timeout=cfg.network.connect_timeout,
        )
        self.work = RoundWork(
            blobs=blobs,
            submit=self._submit_event,
            spec_of=self._spec_of,
            seed=node_seed(self.me),  # what a spot-check re-runs with
            slots=t.slots,
            fetch_timeout=t.fetch_timeout,
            model_modules=t.model_modules,
            attack=t.attack,
            attack_scale=t.attack_scale,
            delay=t.delay,
            byzantine_proposer=t.byzantine_proposer,
            censor=t.censor,
            committee=consensus.committee.validators,
            collected=self.machine.collected,
            current=self._is_current,
        )
        self.driver = MachineDriver(
            self.machine,
            name="rounds",
            send=self._send,
            encode=encode_message,
            me=self.me,
            group=lambda: self.machine.committee,
            notify=self._notified,
            effects={
                Submit: self._submit_tx,
                Train: self.work.train,
                Prefetch: self.work.prefetch,
                Aggregate: self.work.aggregate,
            },
            inbox_size=1024,
        )
        self.applied_seq = 0
        self._committee_fed: tuple[bytes, ...] = tuple(consensus.committee.validators)
        self._log_grew = trio.Event()
        self._submits_send, self._submits = trio.open_memory_channel[bytes](256)
        #: (job, round) -> phase -> monotonic time this node saw the phase begin.
        self.phases: dict[tuple[str, int], dict[str, float]] = {}
        #: seq -> what the ledger made of that entry's rounds transactions (the last few).
        self.last_applied: dict[int, list[Applied]] = {}
        #: the last results this node refused, with why (evidence against their proposers).
        self.evidence: deque[dict[str, Any]] = deque(maxlen=64)
        self._applied_changed = trio.Event()

    def _send(self, to: bytes, data: bytes) -> bool:
        sent = self.transport.send(to, data)
        flood = self.cfg.training.flood
        if flood and data[:2] in (b"\x83\x01", b"\x84\x01"):  # an update notice: tests only
            for _ in range(flood):
                self.transport.send(to, data)
        return sent

    @property
    def error(self) -> str | None:
        return self.driver.error

    def _spec_of(self, job: str) -> Any:
        j = self.machine.ledger.jobs.get(job)
        return None if j is None else j.spec

    def _is_current(self, job: str, rnd: int) -> bool:
        j = self.machine.ledger.jobs.get(job)
        return j is not None and j.status == "running" and j.round == rnd

    def _submit_event(self, event: Any) -> bool:
        return self.driver.submit(event)

    # -- lifecycle -------------------------------------------------------------------------------

    async def run(
        self, *, task_status: trio.TaskStatus[RoundsService] = trio.TASK_STATUS_IGNORED
    ) -> None:
        self.consensus.row_listeners.append(self._on_row)
        try:
            async with trio.open_nursery() as nursery:
                self.work.nursery = nursery
                await nursery.start(self.transport.run)
                replayed = self._feed(replay=True)
                log.info(
                    "rounds: replayed %d log entries; %d jobs",
                    replayed,
                    len(self.machine.ledger.jobs),
                )
                await nursery.start(self.driver.run, Resumed())
                nursery.start_soon(self._follow_log)
                nursery.start_soon(self._submitter)
                if self.membership is not None:
                    nursery.start_soon(self._watch_members)
                task_status.started(self)
        finally:
            self.consensus.row_listeners.remove(self._on_row)

    def _on_row(self, _row: Any) -> None:
        self._log_grew.set()

    async def _follow_log(self) -> None:
        while True:
            await self._log_grew.wait()
            self._log_grew = trio.Event()
            self._feed(replay=False)
            await trio.lowlevel.checkpoint()

    def _feed(self, *, replay: bool) -> int:
        """Hand the machine every new contiguous log entry's rounds transactions."""
        fed = 0
        top = self.consensus.log_top
        while self.applied_seq < top:
            rows = self.consensus.db.read_log(self.applied_seq + 1, top, LOG_BATCH)
            if not rows:
                break
            for row in rows:
                if row.seq != self.applied_seq + 1:
                    return fed  # a gap: wait for the log to fill it
                bodies = tuple(_app_bodies(row, APP))
                trust = tuple(_app_bodies(row, "trust"))
                self.applied_seq = row.seq
                committee = self.committee_at(row.seq) if self.committee_at else None
                if committee == self._committee_fed:
                    committee = None
                elif committee is not None:
                    self._committee_fed = committee
                if bodies or trust or committee is not None:
                    ev = Committed(
                        seq=row.seq,
                        bodies=bodies,
                        replay=replay,
                        trust_bodies=trust,
                        committee=committee,
                    )
                    if replay:
                        self.machine.handle(ev, trio.current_time())
                    else:
                        self.driver.submit(ev)
                fed += 1
        return fed

    # -- submits ---------------------------------------------------------------------------------

    def _submit_tx(self, e: Submit) -> None:
        try:
            self._submits_send.send_nowait(encode_tx(AppTx(app=APP, body=e.body)))
        except trio.WouldBlock:
            self.counters["submit_queue_full"] += 1

    async def _submitter(self) -> None:
        async with trio.open_nursery() as nursery:
            limit = trio.Semaphore(4)
            async for op in self._submits:
                await limit.acquire()
                nursery.start_soon(self._submit_one, op, limit)

    async def _submit_one(self, op: bytes, limit: trio.Semaphore) -> None:
        try:
            await self.consensus.submit(op)
            self.counters["submitted"] += 1
        except Exception as exc:  # the machine retries by its own timers
            self.counters["submit_failed"] += 1
            log.info("rounds: a submit failed: %s", exc)
        finally:
            limit.release()

    async def submit_and_wait(self, body: bytes, timeout: float) -> Applied:
        """Commit a rounds transaction from a user (job.create, job.cancel) and return what the
        ledger made of it once this node applied it."""
        op = encode_tx(AppTx(app=APP, body=body))
        with trio.fail_after(timeout):
            res = await self.consensus.submit(op, timeout=timeout)
            seq = int(res["seq"])
            while True:
                for a in self.last_applied.get(seq, []):
                    if a.tx is not None and encode_rounds_tx(a.tx) == body:
                        return a
                if self.applied_seq >= seq and self.machine.ledger.seq >= seq:
                    # applied, but not as ours: an identical earlier body, or undecodable
                    return Applied(seq, None, "rejected", "not applied (a duplicate?)")
                await self._applied_changed.wait()

    # -- peers -----------------------------------------------------------------------------------

    def _on_packet(self, sender: bytes, data: bytes) -> None:
        try:
            msg = decode_message(data)
        except RemoteProtocolError:
            self.counters["refused_malformed"] += 1
            return
        self.driver.submit(MessageReceived(sender=sender, msg=msg))

    # -- membership ------------------------------------------------------------------------------

    async def _watch_members(self) -> None:
        while True:
            cands = []
            for m in self.membership.members():
                s = m.state
                cands.append(
                    Candidate(
                        node=m.node,
                        alive=m.status != MemberStatus.DEAD,
                        cpu_cores=s.cpu_cores,
                        memory_mb=s.memory_mb,
                        gpu=bool(s.gpu),
                        free_slots=self.cfg.training.slots if m.is_self else s.free_slots,
                        models=s.models,
                        reliability=m.reliability,
                    )
                )
            self.driver.submit(MembersSeen(candidates=tuple(cands)))
            self.membership.set_models(tuple(reversed(self.work.held))[:16])
            # Slots are capacity: which of them the open rounds of other jobs hold is read from
            # the ledger by the starter, not from gossip that lags a round behind.
            self.membership.set_load(
                tasks_running=self.work.running, free_slots=self.cfg.training.slots
            )
            await trio.sleep(MEMBERS_INTERVAL)

    # -- news ------------------------------------------------------------------------------------

    def _notified(self, e: Notify) -> None:
        if isinstance(e, RoundPhase):
            now = time.monotonic()
            self.phases.setdefault((e.job, e.round), {}).setdefault(e.phase, now)
            while len(self.phases) > 512:
                del self.phases[next(iter(self.phases))]
            self._publish(
                "rounds",
                {
                    "job": e.job,
                    "round": e.round,
                    "phase": e.phase,
                    "detail": e.detail,
                    "at": time.time(),
                },
            )
            log.debug(
                "rounds: %s round %d: %s%s",
                e.job,
                e.round,
                e.phase,
                f" ({e.detail})" if e.detail else "",
                extra={"job": e.job, "round": e.round},
            )
            if e.phase == "completed":
                self._round_done(e.job, e.round)
        elif isinstance(e, JobApplied):
            a = e.applied
            self.last_applied.setdefault(a.seq, []).append(a)
            while len(self.last_applied) > 256:
                del self.last_applied[next(iter(self.last_applied))]
            self._applied_changed.set()
            self._applied_changed = trio.Event()
            if a.status != "ok":
                log.info("rounds: transaction at %d rejected: %s", a.seq, a.reason)
            elif isinstance(a.tx, CommitRound) and a.job is not None:
                self._record_outcomes(a.job)
            elif (
                isinstance(a.tx, StartRound)
                and self.cfg.training.unsolicited
                and all(t.node != self.me for t in a.tx.tasks)
            ):  # tests only: train and submit uninvited
                self.work.train(
                    Train(job=a.tx.job, round=a.tx.round, shard=0, base_key=a.tx.base_key)
                )
            self._publish(
                "jobs",
                {
                    "job": a.job,
                    "seq": a.seq,
                    "status": a.status,
                    "reason": a.reason,
                    "type": type(a.tx).__name__,
                },
            )
        elif isinstance(e, Unsolicited):
            self.counters["unsolicited_reported"] += 1
            if self.on_unsolicited is not None:
                self.on_unsolicited(e.job, e.round, e.node, e.notice)
        elif isinstance(e, BadProposal):
            self.counters["bad_proposals"] += 1
            self.evidence.append(
                {
                    "job": e.job,
                    "round": e.round,
                    "proposer": b58(e.proposer),
                    "reason": e.reason,
                    "at": time.time(),
                }
            )
            log.warning(
                "rounds: refused %s's result for %s round %d: %s",
                b58(e.proposer),
                e.job,
                e.round,
                e.reason,
                extra={"job": e.job, "round": e.round},
            )
            self._publish(
                "rounds",
                {
                    "job": e.job,
                    "round": e.round,
                    "phase": "refused",
                    "detail": f"{b58(e.proposer)}: {e.reason}",
                    "at": time.time(),
                },
            )

    def _record_outcomes(self, job_id: str) -> None:
        """A committed round is a task outcome for each assigned node: membership's
        reliability score (shown by ``members``) learns who delivered and who did not."""
        job = self.machine.ledger.jobs[job_id]
        done = job.history[-1]
        good = set(done.contributors) - set(done.outliers)
        if self.membership is not None:
            for node in sorted(job.assigned.get(done.round, ())):
                self.membership.record_task(node, node in good)

    def _round_done(self, job: str, rnd: int) -> None:
        j = self.machine.ledger.jobs.get(job)
        if j is None:
            return
        if 1 <= rnd <= len(j.history):
            done = j.history[rnd - 1]
            log.info(
                "rounds: %s round %d committed at %d: accuracy %.4f, loss %.4f, %d updates",
                job,
                rnd,
                done.seq,
                done.accuracy,
                done.loss,
                done.updates,
                extra={"job": job, "round": rnd},
            )
        if j.status != "running":
            self.work.forget(job)
        # Storage stays bounded: the job's last models (the committed one and the initial one
        # always) and the updates a stale round may still use are kept, the rest goes.
        try:
            self.blobs.retire(job, rnd - j.spec.staleness, keep=(j.model_key, j.init_key))
        except Exception as exc:  # retention is housekeeping: never stop the rounds for it
            log.warning("rounds: retiring blobs of %s failed: %s", job, exc)

    def _publish(self, topic: str, event: dict[str, Any]) -> None:
        if self.events is not None:
            self.events.publish(topic, event)

    # -- status ----------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {
            "jobs": len(self.machine.ledger.jobs),
            "running": sum(1 for _ in self.machine.ledger.running()),
            "applied_seq": self.applied_seq,
            "training": self.work.running,
            "counters": dict(self.counters) | self.machine.counters,
            "driver": dict(self.driver.counters),  # events dropped or refused on the way in
            "stale_aggregations_skipped": self.work.stale_skipped,
            "evidence": list(self.evidence),
            "pid": os.getpid(),
            "open_rounds": self.machine.open_rounds(trio.current_time()),
            "aggregations": self.work.aggregations(),
        }


def _app_bodies(row: Any, app: str) -> list[bytes]:
    out = []
    for req in row.entry.entry.batch:
        try:
            tx = decode_tx(req.op)
        except RemoteProtocolError:
            continue
        if isinstance(tx, AppTx) and tx.app == app:
            out.append(tx.body)
    return out
