"""The consensus service: the PBFT replica of ``p2pnode_protocols.pbft`` bound to libp2p and SQLite.

Roles. ``consensus.validators`` is the genesis committee. The committee in force follows the
committed log (a :class:`~p2pnode_protocols.pbft.CommitteeSchedule` folds it): a node that is a
member of the committee in force runs a ``Replica`` of that epoch and votes; every other node is
a *follower*: it pulls certified entries and checks each certificate against the committee that
ordered the entry before it appends it. Both serve the committed log to others.

Committee switches. When the log reaches the last entry of an epoch (a committed ``SetCommittee``
quorum made the change pending; the old primary fills the gap with null batches), the service
starts a replica of the new epoch if this node is in the new committee (from the state after that
entry, view 0), and stops its old replica ``RETIRE_GRACE`` seconds later (until then it only
answers laggards: a retired replica never votes again). ``committee_listeners`` hear of each
switch; ``evidence_listeners`` of each equivocation; ``vote_committee`` submits this validator's
signed vote. Requests pending at the old committee are resent to the committee in force.

Transport. Validators exchange PBFT messages as one-way datagrams (``/p2pnode/pbft/1.0.0``,
:class:`~p2pnode.network.datagram.DatagramTransport`): one reused outbound stream per peer, a
bounded queue and one shielded writer per peer. The committed log is served, pulled and kept
whole by :class:`~p2pnode.consensus.log_sync.LogSync` (``/p2pnode/pbft-log/1.0.0``).

The machine. The replica runs on the daemon's :class:`~p2pnode.machine_driver.MachineDriver`:
it takes every event queued (up to ``DRAIN``), hands each to ``Replica.handle``, fires due
timers, then carries out the effects of the whole step. The driver's persist hook writes every
``Persist`` of the step (the last one supersedes the earlier ones: each is the whole durable
state) and every ``Commit``'s log row in **one SQLite transaction before any other effect of
the step is carried out**: a message is never sent, nor a client told, before what it depends
on is on disk (a group commit, as in databases' WAL writers). The service talks to its replica
only through events; it reads the replica's view and log position for ``status``.

Clients. ``submit`` signs a transaction with one of ``client_lanes`` lane keys derived from the
node key (PBFT keeps one outstanding request per client id, so a lane is one client with at
most one transaction in flight); request ids are ``(boot << 32) + n``, the boot counter being
durable, so ids only grow across restarts. A validator hands the request to its own replica
(which broadcasts it); a follower sends it to every validator; both resend to every validator
each ``retry_interval`` until the commit shows up in the local log.

Cancellation: cancelling :meth:`run` stops the loop, the transport writers and the log server;
SQLite writes are synchronous and atomic, so a cancel or ``kill -9`` leaves the previous state
or the new one.

Errors: a peer's malformed, forged or non-member message is refused (``RemoteProtocolError``)
and counted; it changes nothing. A bug in the replica, or a log write that fails, stops this
service only (the driver's error policy); ``status`` reports it and the rest of the daemon keeps
running. A fetched entry whose certificate does not check is dropped (see ``log_sync``).

Resources: the inbox holds ``INBOX`` events (more are dropped: PBFT retransmits); each peer's
outbound queue holds ``consensus.queue_size`` packets; one writer task per peer;
``client_lanes`` bounds transactions in flight per node.

Size. This module (about 700 lines) holds one concern, the binding of the replicas to the node,
and its three parts share the per-epoch replica table and the waiters: the epochs (starting and
retiring a replica per committee), the machine loop, and the clients (lanes, submit, votes).
The log's transport already lives apart (``log_sync``, ``store``). Splitting the epochs out is
the next step once a second user of the replica table appears; it was not done in the session
that added committee switches, to keep the switch's change reviewable.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import trio
from libp2p.abc import IHost
from libp2p.crypto.keys import KeyPair
from libp2p.peer.id import ID

from p2pnode.consensus.log_sync import LOG_PROTOCOL, LogSync
from p2pnode.consensus.store import ConsensusStore, LogRow
from p2pnode.machine_driver import MachineDriver
from p2pnode.network.datagram import DatagramTransport
from p2pnode.network.signing import Ed25519Signer, Ed25519Verifier
from p2pnode.store import Store
from p2pnode_protocols.pbft import (
    CertifiedEntry,
    ClientRequest,
    Commit,
    Committee,
    CommitteeSchedule,
    Effect,
    Evidence,
    LedgerState,
    MessageReceived,
    NewView,
    PbftConfig,
    Persist,
    PrePrepare,
    PrimarySuspected,
    RemoteProtocolError,
    Replica,
    Request,
    Restarted,
    StateInstalled,
    ViewEntered,
    decode,
    encode,
    encode_tx,
    sign,
    sign_committee_vote,
)
from p2pnode_protocols.pbft.codec import MAX_MESSAGE_BYTES, batch_digest

log = logging.getLogger(__name__)

PROTOCOL = "/p2pnode/pbft/1.0.0"
#: Events queued for the machine; more are dropped (validators retransmit every status tick).
INBOX = 8192
#: Events handled per step before the step's effects are carried out (one SQLite transaction).
DRAIN = 512
_LANE_DOMAIN = b"p2pnode/pbft/lane\x00"
#: Seconds a retired replica keeps answering laggards of its epoch before it is stopped.
RETIRE_GRACE = 10.0
#: A validator whose log has not grown for this long pulls it like a follower: its committee
#: may have handed over to a later one while it was down (nobody of its epoch answers then).
STALL_PULL = 3.0


class ConsensusError(Exception):
    """A submit could not be carried out (timeout, consensus stopped by a bug)."""


class _Waiter:
    __slots__ = ("event", "result")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.result: dict[str, Any] | None = None


def committee_from_config(validators: tuple[str, ...]) -> Committee:
    return Committee(epoch=0, validators=tuple(ID.from_base58(v).to_bytes() for v in validators))


def pbft_config(c: Any) -> PbftConfig:
    """The replica's knobs from the ``consensus.*`` config section."""
    return PbftConfig(
        checkpoint_interval=c.checkpoint_interval,
        window=c.window,
        max_batch=c.max_batch,
        max_inflight=c.max_inflight,
        request_timeout=c.request_timeout,
        view_change_timeout=c.view_change_timeout,
        max_view_change_timeout=max(30.0, c.view_change_timeout, c.request_timeout),
        status_interval=c.status_interval,
    )


def b58(node: bytes) -> str:
    try:
        return ID(node).to_base58()
    except Exception:
        return node.hex()


@dataclass(eq=False)
class _Running:
    """One epoch's replica on its driver, and the scope that stops it."""

    epoch: int
    committee: Committee
    replica: Replica
    driver: MachineDriver
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)


class ConsensusService:
    def __init__(
        self,
        host: IHost,
        key_pair: KeyPair,
        store: Store,
        cfg: Any,
        events: Any = None,
        *,
        members: trio.MemoryReceiveChannel[dict[str, Any]] | None = None,
    ) -> None:
        """``members`` carries membership changes as the event bus publishes them (``{"event":
        "dead" | "recovered" | ..., "peer_id"}``): a validator hands a death of its primary to
        the replica, which starts a view change at once."""
        c = cfg.consensus
        self._members = members
        #: Committee members the failure detector holds dead (shown in ``status``).
        self.dead: set[bytes] = set()
        self.host = host
        self.cfg = c
        self.events = events
        self.genesis = committee_from_config(c.validators)
        #: The committee in force (orders the entry after the local log's top).
        self.committee = self.genesis
        self.signer = Ed25519Signer(key_pair)
        self.me = self.signer.node_id
        self.verifier = Ed25519Verifier()
        self.pbft = pbft_config(c)
        self.schedule = CommitteeSchedule(self.genesis, verifier=self.verifier, config=self.pbft)
        #: The replica (and driver) of the newest epoch this node runs; None on a follower.
        self.replica: Replica | None = None
        self.driver: MachineDriver | None = None
        self._running: dict[int, _Running] = {}
        #: The epoch whose replica owns the durable state (a retired one persists no more).
        self._durable_epoch: int | None = None
        self._nursery: trio.Nursery | None = None
        self._last_row_at = 0.0
        #: told (committee, activate_seq) when a committee switch takes effect in the log.
        self.committee_listeners: list[Callable[[Committee, int], None]] = []
        #: told every equivocation a replica of this node observed (both signed messages).
        self.evidence_listeners: list[Callable[[Evidence], None]] = []
        self._on_notify: dict[type, Any] = {
            Commit: self._replica_commit,
            StateInstalled: self._state_installed,
            ViewEntered: self._view_entered,
            Evidence: self._evidence,
        }
        self.db = ConsensusStore(store)
        self._lane_seed = key_pair.private_key.to_bytes()
        self.transport = DatagramTransport(
            host,
            PROTOCOL,
            self._on_packet,
            max_packet=MAX_MESSAGE_BYTES,
            queue_size=c.queue_size,
            write_timeout=cfg.network.request_timeout,
            connect_timeout=cfg.network.connect_timeout,
        )
        self.counters: Counter[str] = Counter()
        #: seconds from submit to commit of each transaction this node submitted (metrics)
        self.observe_commit: Callable[[float], None] | None = None
        self.log_sync = LogSync(
            host,
            self.db,
            committee_at=self._committee_at,
            peers=self._log_peers,
            should_pull=self._should_pull,
            me=self.me,
            verifier=self.verifier,
            request_timeout=cfg.network.request_timeout,
            write_timeout=cfg.network.request_timeout,
            counters=self.counters,
            on_row=self._on_row,
        )
        self._waiters: dict[tuple[bytes, int], _Waiter] = {}
        #: told of every row new in the local log (the rounds service follows the log so).
        self.row_listeners: list[Callable[[LogRow], None]] = []
        self._lane_signers: dict[int, Ed25519Signer] = {}
        self._lane_count: dict[int, int] = {}
        self._free_lanes = list(range(c.client_lanes - 1, -1, -1))
        self._lane_slots = trio.Semaphore(c.client_lanes)
        self.boot = 0
        self.last_view_entered_at: float | None = None

    @property
    def is_validator(self) -> bool:
        """This node runs a replica of the committee in force."""
        r = self._running.get(self.committee.epoch)
        return r is not None and not r.replica.retired

    @property
    def log_top(self) -> int:
        """Every entry 1..log_top is in the local log."""
        return self.log_sync.top

    @property
    def error(self) -> str | None:
        """Why a replica stopped (a bug, a failed log write), or None while they run."""
        for r in self._running.values():
            if r.driver.error is not None:
                return r.driver.error
        return None

    # -- lifecycle -----------------------------------------------------------------------------

    async def run(
        self, *, task_status: trio.TaskStatus[ConsensusService] = trio.TASK_STATUS_IGNORED
    ) -> None:
        self.boot = self.db.next_boot()
        self._last_row_at = trio.current_time()
        self.log_sync.load()
        # Fold the local log: which committee is in force after it (no listeners yet: this is
        # the past, replayed).
        self._advance_schedule(replay=True)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self.transport.run)
            await nursery.start(self.log_sync.run)
            current = self.committee
            if current.is_member(self.me):
                stored = self.db.durable_epoch()
                durable = self.db.load() if stored == current.epoch else None
                log.info(
                    "PBFT validator %d of %d (epoch %d), %s; log at %d",
                    current.validators.index(self.me) + 1,
                    current.n,
                    current.epoch,
                    "first boot" if durable is None else f"restarted in view {durable.view}",
                    self.log_sync.top,
                )
                await self._start_replica(current, durable)
            else:
                log.info(
                    "PBFT follower of %d validators (epoch %d); log at %d",
                    current.n,
                    current.epoch,
                    self.log_sync.top,
                )
            nursery.start_soon(self.log_sync.fill_gaps)
            nursery.start_soon(self.log_sync.follow)
            if self._members is not None:
                nursery.start_soon(self._watch_members, self._members)
            task_status.started(self)

    # -- replicas and committee switches ---------------------------------------------------------

    async def _start_replica(self, committee: Committee, durable: Any) -> None:
        """Run a replica of ``committee``'s epoch from its base state (or ``durable``)."""
        assert self._nursery is not None
        epoch = committee.epoch
        if epoch != self.committee.epoch or epoch in self._running:
            return  # a later switch came first (a log pulled fast): that epoch is over
        if durable is None:
            # A fresh epoch: its replica owns the durable state from now on (one transaction,
            # so a crash leaves either the old epoch's state or this empty one).
            self.db.reset_durable(epoch)
        self._durable_epoch = epoch
        base: LedgerState = self.schedule.base_of(epoch)
        replica = Replica(
            committee=committee,
            config=self.pbft,
            signer=self.signer,
            verifier=self.verifier,
            base=base,
        )
        driver = MachineDriver(
            replica,
            name=f"consensus/{epoch}",
            send=self._equivocating_send if self.cfg.fault == "equivocate" else self.transport.send,
            encode=encode,
            me=self.me,
            group=lambda: committee.validators,
            notify=self._notified,
            persist=lambda effects: self._persist(epoch, effects),
            inbox_size=INBOX,
            drain=DRAIN,
        )
        running = _Running(epoch=epoch, committee=committee, replica=replica, driver=driver)
        self._running[epoch] = running
        self.replica, self.driver = replica, driver
        await self._nursery.start(self._run_replica, running, Restarted(durable=durable))

    async def _run_replica(
        self,
        running: _Running,
        first: Restarted,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        with running.scope:
            await running.driver.run(first, task_status=task_status)
        if not running.scope.cancelled_caught:
            return  # stopped by a bug: kept, so status and submit report it
        if self._running.get(running.epoch) is running:
            del self._running[running.epoch]
        if self.replica is running.replica:
            self.replica, self.driver = None, None

    async def _retire(self, running: _Running) -> None:
        """The old replica answers laggards of its epoch for a while, then stops."""
        await trio.sleep(RETIRE_GRACE)
        log.info("PBFT replica of epoch %d stopped", running.epoch)
        running.scope.cancel()

    def _equivocating_send(self, to: bytes, data: bytes) -> bool:
        """Tests only (``consensus.fault = "equivocate"``): each pre-prepare this node sends is
        followed by a conflicting one for the same slot (an empty batch), signed with its key,
        so backups hold two signed messages that cannot both be honest."""
        sent = self.transport.send(to, data)
        try:
            msg = decode(data)
        except RemoteProtocolError:
            return sent
        if isinstance(msg, PrePrepare) and msg.sender == self.me and msg.batch:
            other = replace(msg, batch=(), digest=batch_digest(()), signature=b"")
            self.transport.send(to, encode(sign(other, self.signer)))
        return sent

    def _committee_at(self, seq: int) -> Committee:
        return self.schedule.committee_at(seq)

    def _log_peers(self) -> tuple[bytes, ...]:
        """Who to pull log entries from: the committee in force, then the previous ones."""
        out: list[bytes] = []
        for _, committee in reversed(self.schedule.epochs):
            out += [v for v in committee.validators if v != self.me and v not in out]
        return tuple(out)

    def _should_pull(self) -> bool:
        """Pull the log unless our own replica of the committee in force drives it (and has
        committed something new lately)."""
        r = self._running.get(self.committee.epoch)
        if r is None or r.replica.retired:
            return True
        if r.driver.error is not None:
            return False  # stopped by a bug (a failing disk): it stays as it is
        return trio.current_time() - self._last_row_at > STALL_PULL

    def _advance_schedule(self, *, replay: bool = False) -> None:
        """Fold the local log's new contiguous entries; act on each committee switch."""
        while self.schedule.last < self.log_sync.top:
            first = self.schedule.last + 1
            for row in self.db.read_log(first, self.log_sync.top, 256):
                if row.seq != self.schedule.last + 1:
                    break
                new = self.schedule.observe(row.seq, row.entry.entry.batch)
                if new is not None:
                    self.committee = new
                    if not replay:
                        self._switched(new, row.seq + 1)
            if self.schedule.last < first:
                break  # the rows are not readable yet (cannot happen: they are on disk)

    def _switched(self, new: Committee, activate: int) -> None:
        log.info(
            "PBFT committee of epoch %d (%d validators) takes over at %d",
            new.epoch,
            new.n,
            activate,
        )
        self.counters["committee_switches"] += 1
        for running in list(self._running.values()):
            # Retired, or lagging behind its epoch's end (our log came from peers): either way
            # it can never vote at or past the activation; it helps laggards, then stops.
            if running.epoch < new.epoch:
                assert self._nursery is not None
                self._nursery.start_soon(self._retire, running)
        if new.is_member(self.me) and new.epoch not in self._running:
            assert self._nursery is not None
            self._nursery.start_soon(self._start_replica, new, None)
        elif not new.is_member(self.me):
            self._durable_epoch = None
        self._publish(
            {
                "event": "committee",
                "epoch": new.epoch,
                "activate_seq": activate,
                "validators": [b58(v) for v in new.validators],
            }
        )
        for listener in list(self.committee_listeners):
            listener(new, activate)

    # -- the machine loop ------------------------------------------------------------------------

    def _on_packet(self, sender: bytes, data: bytes) -> None:
        try:
            msg = decode(data)
        except RemoteProtocolError as exc:
            self.counters["refused_malformed"] += 1
            log.debug("malformed PBFT packet from %s: %s", b58(sender), exc)
            return
        # Everything is signed and checked by the machine; a validator's own message must also
        # come from that validator (requests and forwarded new views may be relayed).
        if type(msg) not in (Request, NewView) and msg.sender != sender:  # type: ignore[attr-defined]
            self.counters["refused_relayed"] += 1
            return
        # A message goes to the replica of its epoch; a client request to the newest one.
        epoch = getattr(msg, "epoch", None)
        running = self._running.get(epoch) if epoch is not None else None
        if epoch is None and self.driver is not None:
            self.driver.submit(MessageReceived(sender=sender, msg=msg))
        elif running is not None:
            running.driver.submit(MessageReceived(sender=sender, msg=msg))
        else:
            self.counters["other_epoch"] += 1

    async def _watch_members(self, members: trio.MemoryReceiveChannel[dict[str, Any]]) -> None:
        """Membership's verdicts on committee members: a death goes to the replica (which acts
        only if it is its primary's), a return clears the suspicion."""
        async with members:
            async for change in members:
                try:
                    node = ID.from_base58(change["peer_id"]).to_bytes()
                except Exception:
                    continue
                if not self.committee.is_member(node) or node == self.me:
                    continue
                if change.get("event") == "dead":
                    self.dead.add(node)
                    for running in self._running.values():  # a follower only shows it in status
                        running.driver.submit(PrimarySuspected(node=node))
                elif change.get("event") in ("join", "recovered"):
                    self.dead.discard(node)

    def _persist(self, epoch: int, effects: Sequence[Effect]) -> None:
        """Durable first: the step's last ``Persist`` (it is the whole state) and its log rows,
        in one transaction, before any message leaves or any client hears of a commit. A
        retired replica's state is no longer kept (the next epoch's replica owns it)."""
        persist = None
        rows: list[LogRow] = []
        for e in effects:
            t = type(e)
            if t is Persist:
                persist = e.state  # type: ignore[attr-defined]
            elif t is Commit:
                rows.append(_log_row(e))  # type: ignore[arg-type]
        if epoch != self._durable_epoch:
            persist = None
        self.db.save(persist, rows)  # type: ignore[arg-type]

    def _send(self, to: bytes, data: bytes) -> None:
        if not self.transport.send(to, data):
            self.counters["send_dropped"] += 1

    def _notified(self, e: Any) -> None:
        self._on_notify[type(e)](e)

    def _replica_commit(self, e: Commit) -> None:
        if e.seq > self.log_sync.top:
            self._last_row_at = trio.current_time()
        self.log_sync.committed(_log_row(e))

    def _state_installed(self, e: StateInstalled) -> None:
        log.info("PBFT state installed at checkpoint %d", e.seq)
        self.log_sync.installed(e.seq)

    def _evidence(self, e: Evidence) -> None:
        self.counters["evidence"] += 1
        log.warning("PBFT evidence against %s: %r vs %r", b58(e.offender), e.first, e.second)
        for listener in list(self.evidence_listeners):
            listener(e)

    def _view_entered(self, e: ViewEntered) -> None:
        self.last_view_entered_at = trio.current_time()
        log.info("PBFT view %d, primary %s", e.view, b58(e.primary))
        self._publish({"event": "view", "view": e.view, "primary": b58(e.primary)})

    # -- the log --------------------------------------------------------------------------------

    def _on_row(self, row: LogRow) -> None:
        """A row is new in the local log (on disk already): tell waiters and subscribers."""
        results = {(r[0], r[1]): r[2] for r in row.results or ()}
        cert = row.entry.certificate
        for req in row.entry.entry.batch:
            w = self._waiters.get((req.client, req.request_id))
            if w is not None and w.result is None:
                w.result = {
                    "seq": row.seq,
                    "digest": row.digest.hex(),
                    "status": results.get((req.client, req.request_id), "committed"),
                    "certificate": certificate_dict(cert),
                }
                w.event.set()
        self.counters["entries_committed"] += 1
        self._advance_schedule()
        for listener in list(self.row_listeners):
            listener(row)
        self._publish(
            {
                "event": "commit",
                "seq": row.seq,
                "digest": row.digest.hex(),
                "view": cert.votes[0].view if cert.votes else None,
                "size": len(row.entry.entry.batch),
            }
        )

    def _publish(self, event: dict[str, Any]) -> None:
        if self.events is not None:
            self.events.publish("commits", event)

    # -- clients ---------------------------------------------------------------------------------

    def _lane(self, lane: int) -> Ed25519Signer:
        signer = self._lane_signers.get(lane)
        if signer is None:
            seed = hashlib.sha256(_LANE_DOMAIN + self._lane_seed + lane.to_bytes(4, "big"))
            signer = self._lane_signers[lane] = Ed25519Signer.from_seed(seed.digest())
        return signer

    async def vote_committee(
        self, epoch: int, validators: tuple[bytes, ...], timeout: float | None = None
    ) -> dict[str, Any]:
        """Submit this validator's signed vote for ``validators`` as ``epoch``; the change is
        made once 2f+1 members of the committee in force voted the same."""
        vote = sign_committee_vote(self.signer, epoch, tuple(validators))
        return await self.submit(encode_tx(vote), timeout)

    async def submit(self, op: bytes, timeout: float | None = None) -> dict[str, Any]:
        """Sign ``op`` as a lane of this node, get it committed, return where (and the proof)."""
        if self.error is not None:
            raise ConsensusError(f"consensus stopped: {self.error}")
        timeout = self.cfg.submit_timeout if timeout is None else timeout
        started = trio.current_time()
        with trio.move_on_after(timeout) as scope:
            async with self._lane_slots:
                lane = self._free_lanes.pop()
                try:
                    result = await self._submit_on(lane, op)
                finally:
                    self._free_lanes.append(lane)
                if self.observe_commit is not None:
                    self.observe_commit(trio.current_time() - started)
                return result
        assert scope.cancelled_caught
        self.counters["submit_timeouts"] += 1
        raise ConsensusError(f"not committed within {timeout:g} s (it may still commit)")

    async def _submit_on(self, lane: int, op: bytes) -> dict[str, Any]:
        signer = self._lane(lane)
        n = self._lane_count.get(lane, 0) + 1
        self._lane_count[lane] = n
        req = sign(Request(client=signer.node_id, request_id=(self.boot << 32) + n, op=op), signer)
        key = (req.client, req.request_id)
        waiter = self._waiters[key] = _Waiter()
        try:
            data = encode(req)
            first = True
            while waiter.result is None:
                if self.error is not None:
                    raise ConsensusError(f"consensus stopped: {self.error}")
                self._dispatch(req, data, first)
                first = False
                with trio.move_on_after(self.cfg.retry_interval):
                    await waiter.event.wait()
            self.counters["submitted"] += 1
            return {"client": b58(req.client), "request_id": req.request_id, **waiter.result}
        finally:
            self._waiters.pop(key, None)

    def _dispatch(self, req: Request, data: bytes, first: bool) -> None:
        # Our replica (of the committee in force) validates it, keeps it pending and broadcasts
        # it to the others; a resend also goes to every validator of the committee in force, so
        # a request pending at a committee that retired reaches the one that took over.
        mine = self.driver if self.is_validator else None
        if mine is not None and mine.submit(ClientRequest(request=req)) and first:
            return
        if not first:
            self.counters["submit_resends"] += 1
        for v in self.committee.validators:
            if v != self.me:
                self._send(v, data)

    # -- read-only views -------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        r = self.replica
        if r is not None and (r.retired or r.committee.epoch != self.committee.epoch):
            r = None
        pending = self.schedule.pending
        out: dict[str, Any] = {
            "role": "validator" if r is not None else "follower",
            "epoch": self.committee.epoch,
            "committee": [b58(v) for v in self.committee.validators],
            "pending_committee": None
            if pending is None
            else {
                "epoch": pending[0].epoch,
                "activate_seq": pending[1],
                "validators": [b58(v) for v in pending[0].validators],
            },
            "replicas": sorted(self._running),
            "f": self.committee.f,
            "log_last": self.log_sync.top,
            "error": self.error,
            "dead_members": [b58(v) for v in self.committee.validators if v in self.dead],
            "counters": {
                **sum((x.driver.counters for x in self._running.values()), self.counters.copy()),
                **self.transport.counters,
            },
        }
        if r is not None:
            out.update(
                view=r.view,
                primary=b58(r.primary),
                in_view_change=r.status.name == "VIEW_CHANGE",
                primary_suspected=r.primary in self.dead,
                last_committed=r.executed_seq,
                stable_checkpoint=r.stable.seq,
            )
        else:
            out.update(
                view=None,
                primary=None,
                in_view_change=None,
                primary_suspected=None,
                last_committed=self.log_sync.top,
                stable_checkpoint=None,
            )
        return out


def _log_row(e: Commit) -> LogRow:
    return LogRow(
        e.seq,
        e.entry.digest,
        CertifiedEntry(entry=e.entry, certificate=e.certificate),
        [[r.client, r.request_id, r.status, r.detail] for r in e.results],
    )


def certificate_dict(cert: Any) -> dict[str, Any]:
    votes = cert.votes
    return {
        "view": votes[0].view if votes else None,
        "votes": [{"signer": b58(v.sender), "signature": v.signature} for v in votes],
    }


__all__ = [
    "LOG_PROTOCOL",
    "PROTOCOL",
    "ConsensusError",
    "ConsensusService",
    "certificate_dict",
    "committee_from_config",
    "pbft_config",
]
