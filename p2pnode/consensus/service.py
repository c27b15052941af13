"""The consensus service: the PBFT replica of ``p2pnode_protocols.pbft`` bound to libp2p and SQLite.

Roles. A node whose peer id is in ``consensus.validators`` runs a ``Replica`` and votes; every
other node is a *follower*: it pulls certified entries from validators and checks each
certificate before it appends the entry to its log. Both serve the committed log to others.

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
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Callable, Sequence
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
    Effect,
    Evidence,
    MessageReceived,
    NewView,
    PbftConfig,
    Persist,
    PrimarySuspected,
    RemoteProtocolError,
    Replica,
    Request,
    Restarted,
    StateInstalled,
    ViewEntered,
    decode,
    encode,
    sign,
)
from p2pnode_protocols.pbft.codec import MAX_MESSAGE_BYTES

log = logging.getLogger(__name__)

PROTOCOL = "/p2pnode/pbft/1.0.0"
#: Events queued for the machine; more are dropped (validators retransmit every status tick).
INBOX = 8192
#: Events handled per step before the step's effects are carried out (one SQLite transaction).
DRAIN = 512
_LANE_DOMAIN = b"p2pnode/pbft/lane\x00"


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
        self.committee = committee_from_config(c.validators)
        self.signer = Ed25519Signer(key_pair)
        self.me = self.signer.node_id
        self.verifier = Ed25519Verifier()
        self.is_validator = self.committee.is_member(self.me)
        self.replica: Replica | None = None
        self.driver: MachineDriver | None = None
        if self.is_validator:
            self.replica = Replica(
                committee=self.committee,
                config=pbft_config(c),
                signer=self.signer,
                verifier=self.verifier,
            )
        self._on_notify: dict[type, Any] = {
            Commit: lambda e: self.log_sync.committed(_log_row(e)),
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
        self.log_sync = LogSync(
            host,
            self.db,
            committee=self.committee,
            me=self.me,
            verifier=self.verifier,
            request_timeout=cfg.network.request_timeout,
            write_timeout=cfg.network.request_timeout,
            counters=self.counters,
            on_row=self._on_row,
        )
        if self.replica is not None:
            self.driver = MachineDriver(
                self.replica,
                name="consensus",
                send=self.transport.send,
                encode=encode,
                me=self.me,
                group=lambda: self.committee.validators,
                notify=self._notified,
                persist=self._persist,
                inbox_size=INBOX,
                drain=DRAIN,
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
    def log_top(self) -> int:
        """Every entry 1..log_top is in the local log."""
        return self.log_sync.top

    @property
    def error(self) -> str | None:
        """Why the replica stopped (a bug, a failed log write), or None while it runs."""
        return self.driver.error if self.driver is not None else None

    # -- lifecycle -----------------------------------------------------------------------------

    async def run(
        self, *, task_status: trio.TaskStatus[ConsensusService] = trio.TASK_STATUS_IGNORED
    ) -> None:
        self.boot = self.db.next_boot()
        self.log_sync.load()
        async with trio.open_nursery() as nursery:
            await nursery.start(self.transport.run)
            await nursery.start(self.log_sync.run)
            if self.replica is not None:
                durable = self.db.load()
                log.info(
                    "PBFT validator %d of %d, %s; log at %d",
                    self.committee.validators.index(self.me) + 1,
                    self.committee.n,
                    "first boot" if durable is None else f"restarted in view {durable.view}",
                    self.log_sync.top,
                )
                assert self.driver is not None
                await nursery.start(self.driver.run, Restarted(durable=durable))
                nursery.start_soon(self.log_sync.fill_gaps)
            else:
                log.info(
                    "PBFT follower of %d validators; log at %d", self.committee.n, self.log_sync.top
                )
                nursery.start_soon(self.log_sync.follow)
            if self._members is not None:
                nursery.start_soon(self._watch_members, self._members)
            task_status.started(self)

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
        if self.driver is not None:
            self.driver.submit(MessageReceived(sender=sender, msg=msg))

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
                    if self.driver is not None:  # a follower only shows it in status
                        self.driver.submit(PrimarySuspected(node=node))
                elif change.get("event") in ("join", "recovered"):
                    self.dead.discard(node)

    def _persist(self, effects: Sequence[Effect]) -> None:
        """Durable first: the step's last ``Persist`` (it is the whole state) and its log rows,
        in one transaction, before any message leaves or any client hears of a commit."""
        persist = None
        rows: list[LogRow] = []
        for e in effects:
            t = type(e)
            if t is Persist:
                persist = e.state  # type: ignore[attr-defined]
            elif t is Commit:
                rows.append(_log_row(e))  # type: ignore[arg-type]
        self.db.save(persist, rows)  # type: ignore[arg-type]

    def _send(self, to: bytes, data: bytes) -> None:
        if not self.transport.send(to, data):
            self.counters["send_dropped"] += 1

    def _notified(self, e: Any) -> None:
        self._on_notify[type(e)](e)

    def _state_installed(self, e: StateInstalled) -> None:
        log.info("PBFT state installed at checkpoint %d", e.seq)
        self.log_sync.installed(e.seq)

    def _evidence(self, e: Evidence) -> None:
        self.counters["evidence"] += 1
        log.warning("PBFT evidence against %s: %r vs %r", b58(e.offender), e.first, e.second)

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

    async def submit(self, op: bytes, timeout: float | None = None) -> dict[str, Any]:
        """Sign ``op`` as a lane of this node, get it committed, return where (and the proof)."""
        if self.error is not None:
            raise ConsensusError(f"consensus stopped: {self.error}")
        timeout = self.cfg.submit_timeout if timeout is None else timeout
        with trio.move_on_after(timeout) as scope:
            async with self._lane_slots:
                lane = self._free_lanes.pop()
                try:
                    return await self._submit_on(lane, op)
                finally:
                    self._free_lanes.append(lane)
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
        # Our replica validates it, keeps it pending and broadcasts it to the others.
        if first and self.driver is not None and self.driver.submit(ClientRequest(request=req)):
            return
        if not first:
            self.counters["submit_resends"] += 1
        for v in self.committee.validators:
            if v != self.me:
                self._send(v, data)

    # -- read-only views -------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        r = self.replica
        out: dict[str, Any] = {
            "role": "validator" if r is not None else "follower",
            "committee": [b58(v) for v in self.committee.validators],
            "f": self.committee.f,
            "log_last": self.log_sync.top,
            "error": self.error,
            "dead_members": [b58(v) for v in self.committee.validators if v in self.dead],
            "counters": {
                **(self.counters + (self.driver.counters if self.driver else Counter())),
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
