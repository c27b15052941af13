"""``World(seed)``: replicas, clients, a simulated network and clocks, faults and a checker.

One ``random.Random(seed)`` draws the ``SimConfig`` and a sub-seed per component (network,
clocks, each Byzantine replica, clients, fault schedule), so a seed replays exactly. The run has
two phases, as in TigerBeetle's VOPR:

1. *safety*, for ``safety_time`` virtual seconds: loss, duplication, reordering (random delays),
   partitions that come and go, crashes of correct replicas (some torn: only a prefix of a
   handle's effects is carried out, after its ``Persist``) with restart from durable state,
   and up to f Byzantine replicas;
2. *liveness*: partitions heal, loss stops, crashed replicas restart. Byzantine replicas stay
   Byzantine. Within ``liveness_budget`` every submitted request must commit at every correct
   replica.

Committee switches: at drawn times the honest members of the committee in force submit signed
``SetCommittee`` votes for a drawn next committee (overlapping or disjoint, from a pool of 2n
nodes). The world folds the committed log with a ``CommitteeSchedule`` (as a daemon's log does):
when the fold reaches the old committee's last entry, the old replicas stop and every member of
the new committee starts a replica for the new epoch from that state (after a short random
delay, as a follower's log lags). Equivocation evidence seen by a correct replica is submitted
as an ``AppTx`` (opaque to PBFT); the checker verifies it when it commits.

The world drives the same ``Replica.handle`` the daemon will; only this effect interpreter and the
clock differ.
"""

from __future__ import annotations

import heapq
import logging
import random
from dataclasses import dataclass, field

import cbor2

from p2pnode_protocols.pbft import (
    AppTx,
    Broadcast,
    CancelTimer,
    Checkpoint,
    ClientRequest,
    Commit,
    Committee,
    CommitteeSchedule,
    DurableState,
    Effect,
    Entry,
    Event,
    Evidence,
    KeyedHashVerifier,
    KvPut,
    LedgerState,
    LocalProtocolError,
    Message,
    MessageReceived,
    Noop,
    PbftConfig,
    Persist,
    RemoteProtocolError,
    Replica,
    Request,
    Restarted,
    Send,
    SetTimer,
    Signer,
    StateInstalled,
    TimerFired,
    Verifier,
    ViewEntered,
    check_evidence,
    decode,
    encode,
    encode_tx,
    genesis,
    sign,
    sign_committee_vote,
)

from .checker import PbftChecker, SafetyViolation
from .config import SimConfig, draw_config
from .faults import Adversary
from .signing import Ed25519Signer, Ed25519Verifier

__all__ = ["RunResult", "World"]

log = logging.getLogger(__name__)

# Event kinds in the queue (ints: cheap to compare, never compared in practice thanks to `n`).
_DELIVER, _TIMER, _CLIENT, _CRASH, _RESTART, _PART_ON, _PART_OFF, _HEAL, _CHECK = range(9)
_SWITCH, _JOIN = 9, 10
#: Safety valve on events per run: a livelock shows up as a failure, not a hang.
_MAX_EVENTS = 3_000_000


@dataclass
class RunResult:
    seed: int
    ok: bool
    #: "ok", "safety", "liveness" or "crash" (an exception inside a correct replica: a bug).
    kind: str
    message: str
    config: SimConfig
    stats: dict[str, int] = field(default_factory=dict)
    end_time: float = 0.0


class _Client:
    def __init__(self, index: int, signer: Signer, total: int) -> None:
        self.index = index
        self.signer = signer
        self.total = total
        self.next_id = 1
        self.current: Request | None = None
        #: Fixed ops to submit (committee votes, evidence) before any drawn one.
        self.ops: list[bytes] = []
        #: Only the newest scheduled step of a client runs: one chain of retries per client.
        self.token = 0

    @property
    def done(self) -> bool:
        return self.current is None and self.next_id > self.total


class World:
    def __init__(self, seed: int, *, n: int | None = None, config: SimConfig | None = None):
        self.cfg = config if config is not None else draw_config(seed, n=n)
        cfg = self.cfg
        root = random.Random(cfg.seed * 7919 + 17)
        # Sub-seeds per component: changing how one draws leaves the others' streams alone.
        self._net_rng = random.Random(root.getrandbits(64))
        self._fault_rng = random.Random(root.getrandbits(64))
        self._client_rng = random.Random(root.getrandbits(64))
        clock_rng = random.Random(root.getrandbits(64))
        key_seed = root.getrandbits(256).to_bytes(32, "big")
        byz_seeds = [root.getrandbits(64) for _ in range(cfg.n)]
        pool = cfg.pool
        byz_seeds += [root.getrandbits(64) for _ in range(pool - cfg.n)]

        self.verifier: Verifier
        signers: list[Signer] = []
        client_signers: list[Signer] = []
        if cfg.signer == "ed25519":
            self.verifier = Ed25519Verifier()
            for i in range(cfg.n + cfg.clients):
                s = Ed25519Signer.from_seed(_seed32(key_seed, i))
                (signers if i < cfg.n else client_signers).append(s)
            for i in range(cfg.n, pool):
                signers.append(Ed25519Signer.from_seed(_seed32(key_seed, 10_000 + i)))
            evidence_signer: Signer = Ed25519Signer.from_seed(_seed32(key_seed, 20_000))
        else:
            kv = KeyedHashVerifier(key_seed)
            self.verifier = kv
            signers = [kv.signer_for(b"replica-%02d" % i) for i in range(pool)]
            client_signers = [kv.signer_for(b"client-%02d" % i) for i in range(cfg.clients)]
            evidence_signer = kv.signer_for(b"evidence")
        self.ids = [s.node_id for s in signers]
        self._signers = dict(zip(self.ids, signers, strict=True))
        self.committee = Committee(epoch=0, validators=tuple(self.ids[: cfg.n]))
        self.pbft = PbftConfig(
            checkpoint_interval=cfg.checkpoint_interval,
            window=cfg.window,
            max_batch=cfg.max_batch,
            max_inflight=cfg.max_inflight,
            request_timeout=cfg.request_timeout,
            view_change_timeout=cfg.view_change_timeout,
            max_view_change_timeout=8.0,
            status_interval=cfg.status_interval,
        )
        byz = dict(cfg.byzantine) | dict(cfg.extra_byzantine)
        self.adversaries: dict[bytes, Adversary] = {}
        for i, node in enumerate(self.ids):
            if i in byz:
                self.adversaries[node] = Adversary(
                    byz[i], random.Random(byz_seeds[i]), node, self.ids, signers[i]
                )
        self.honest = [x for x in self.ids if x not in self.adversaries]
        self.checker = PbftChecker(
            self.committee,
            self.verifier,
            [x for x in self.committee.validators if x in self.honest],
        )
        self.checker.byzantine = set(self.adversaries)
        #: Committees by epoch, the state each epoch starts from, the epoch each node runs a
        #: replica of (None: not a validator now), and the log fold that decides switches.
        self.committees: dict[int, Committee] = {0: self.committee}
        self._bases: dict[int, LedgerState] = {0: genesis(self.committee)}
        self._epoch_of: dict[bytes, int | None] = {
            x: (0 if self.committee.is_member(x) else None) for x in self.ids
        }
        self.schedule = CommitteeSchedule(self.committee, verifier=self.verifier, config=self.pbft)
        self._entries: dict[int, Entry] = {}
        self._down: set[bytes] = set()
        # Per-node clock: local = global * rate + offset (drift and skew between replicas).
        self._rate = {
            x: 1.0 + clock_rng.uniform(-cfg.clock_drift, cfg.clock_drift) for x in self.ids
        }
        self._offset = {x: clock_rng.uniform(0.0, 1000.0) for x in self.ids}
        self.clients = [
            _Client(i, s, cfg.requests_per_client) for i, s in enumerate(client_signers)
        ]
        self._client_of = {s.node_id: c for s, c in zip(client_signers, self.clients, strict=True)}
        # Validators vote on committee changes as clients of their own (their node key).
        self._voters = {x: _Client(100 + i, self._signers[x], 0) for i, x in enumerate(self.ids)}
        self._client_of.update({x: c for x, c in self._voters.items()})
        self._evidence_client = _Client(99, evidence_signer, 0)
        self._client_of[evidence_signer.node_id] = self._evidence_client
        self._evidence_sent: set[tuple[bytes, bytes]] = set()

        self.replicas: dict[bytes, Replica | None] = dict.fromkeys(self.ids)
        self.durable: dict[bytes, DurableState | None] = dict.fromkeys(self.ids)
        self._incarnation = dict.fromkeys(self.ids, 0)
        self._torn: set[bytes] = set()
        self._groups: dict[bytes, int] | None = None
        self.healed = False
        self.now = 0.0
        self._queue: list[tuple[float, int, int, object]] = []
        self._n = 0
        self.stats = {
            "events": 0,
            "delivered": 0,
            "dropped": 0,
            "rejected": 0,
            "evidence": 0,
            "crashes": 0,
            "views": 0,
            "installs": 0,
            "switches": 0,
            "evidence_txs": 0,
        }

    # -- queue and clocks -------------------------------------------------------------------------

    def _push(self, at: float, kind: int, data: object) -> None:
        self._n += 1
        heapq.heappush(self._queue, (at, self._n, kind, data))

    def _local(self, node: bytes, t: float) -> float:
        return t * self._rate[node] + self._offset[node]

    def _global(self, node: bytes, local: float) -> float:
        return (local - self._offset[node]) / self._rate[node]

    # -- scenario ---------------------------------------------------------------------------------

    def _schedule(self) -> None:
        cfg, rng = self.cfg, self._fault_rng
        for node in self.committee.validators:
            self._handle(node, Restarted(durable=None))
        for at, members in cfg.switches:
            self._push(at, _SWITCH, tuple(self.ids[i] for i in members))
        for c in self.clients:
            self._wake(c, self._client_rng.uniform(0.0, 1.0))
        for _ in range(cfg.partitions):
            start = rng.uniform(0.0, cfg.safety_time)
            side = {x: rng.randrange(2) for x in self.ids}
            self._push(start, _PART_ON, side)
            self._push(min(start + rng.uniform(0.5, 4.0), cfg.safety_time), _PART_OFF, None)
        for _ in range(cfg.crashes):
            if not self.honest:
                break
            node = rng.choice(self.honest[: cfg.pool])
            at = rng.uniform(0.0, cfg.safety_time)
            self._push(at, _CRASH, (node, rng.random() < 0.5))
            self._push(min(at + rng.uniform(0.05, 3.0), cfg.safety_time), _RESTART, node)
        self._push(cfg.safety_time, _HEAL, None)

    def run(self) -> RunResult:
        cfg = self.cfg
        log.info("seed %d: %s", cfg.seed, cfg.describe())
        deadline = cfg.safety_time + cfg.liveness_budget
        try:
            self._schedule()
            events = 0
            while self._queue:
                at, _, kind, data = heapq.heappop(self._queue)
                if at > deadline:
                    break
                self.now = at
                events += 1
                if events > _MAX_EVENTS:
                    return self._result(False, "liveness", "event budget exhausted (livelock?)")
                if kind == _DELIVER:
                    self._deliver(*data)  # type: ignore[misc]
                elif kind == _TIMER:
                    self._timer(*data)  # type: ignore[misc]
                elif kind == _CLIENT:
                    client, token = data  # type: ignore[misc]
                    if token == client.token:
                        self._client_step(client)
                elif kind == _CRASH:
                    self._crash(*data)  # type: ignore[misc]
                elif kind == _RESTART:
                    self._restart(data)  # type: ignore[arg-type]
                elif kind == _PART_ON:
                    if not self.healed:
                        self._groups = data  # type: ignore[assignment]
                elif kind == _PART_OFF:
                    self._groups = None
                elif kind == _HEAL:
                    self._heal()
                elif kind == _SWITCH:
                    self._vote_switch(data)  # type: ignore[arg-type]
                elif kind == _JOIN:
                    self._join(*data)  # type: ignore[misc]
                elif kind == _CHECK:
                    if self._converged():
                        self.stats["events"] = events
                        return self._result(True, "ok", "converged")
                    self._push(self.now + 0.5, _CHECK, None)
            self.stats["events"] = events
            pending = self.checker.pending()
            waiting = [
                f"client {c.index} at {c.next_id}" for c in self._all_clients() if not c.done
            ]
            if self.schedule.pending is not None:
                waiting.append(f"committee change pending: {self.schedule.pending[1]}")
            detail = "; ".join((pending + waiting)[:6])
            return self._result(
                False,
                "liveness",
                f"not converged by t={deadline:.1f}: {detail}\n  replicas: {self.describe()}",
            )
        except SafetyViolation as exc:
            return self._result(False, "safety", str(exc))
        except LocalProtocolError as exc:
            return self._result(False, "crash", f"{exc!r} (cause: {exc.__cause__!r})")

    def _result(self, ok: bool, kind: str, message: str) -> RunResult:
        return RunResult(
            seed=self.cfg.seed,
            ok=ok,
            kind=kind,
            message=message,
            config=self.cfg,
            stats=dict(self.stats),
            end_time=self.now,
        )

    def describe(self) -> str:
        """One line per replica, for a failure report (diagnostics only, never checked)."""
        parts = []
        for i, node in enumerate(self.ids):
            rep = self.replicas[node]
            tag = self.adversaries[node].kind if node in self.adversaries else "ok"
            if rep is None:
                if self._epoch_of[node] is not None:
                    parts.append(f"r{i}({tag}): down")
                continue
            parts.append(
                f"r{i}({tag}) e{rep.committee.epoch}: {rep.status.value} v={rep.view} "
                f"exec={rep.executed_seq} "
                f"stable={rep.stable.seq} pending={len(rep._pending)}"
            )
        return " | ".join(parts)

    def _all_clients(self) -> list[_Client]:
        return [*self.clients, *self._voters.values(), self._evidence_client]

    def _converged(self) -> bool:
        return (
            all(c.done for c in self._all_clients())
            and self.schedule.pending is None
            and not self.checker.pending()
            and all(self.replicas[x] is not None for x in self.schedule.current.validators)
        )

    def _heal(self) -> None:
        self.healed = True
        self._groups = None
        self._torn.clear()
        for node in self.honest:
            if node in self._down:
                self._restart(node)
        self._push(self.now, _CHECK, None)

    # -- replicas ---------------------------------------------------------------------------------

    def _crash(self, node: bytes, torn: bool) -> None:
        if self.healed or self.replicas[node] is None:
            return
        if torn:
            # Die during the next handle: after its Persist, partway through its effects.
            self._torn.add(node)
        else:
            self._kill(node)

    def _kill(self, node: bytes) -> None:
        self.replicas[node] = None
        self._incarnation[node] += 1
        self._torn.discard(node)
        self._down.add(node)
        self.stats["crashes"] += 1

    def _restart(self, node: bytes) -> None:
        self._down.discard(node)
        epoch = self._epoch_of[node]
        if self.replicas[node] is not None or epoch is None:
            return
        d = self.durable[node]
        self.checker.on_restart(node, epoch, 0 if d is None else d.view)
        self._handle(node, Restarted(durable=d))

    # -- committee switches -----------------------------------------------------------------------

    def _vote_switch(self, members: tuple[bytes, ...]) -> None:
        """The correct members of the committee in force vote for ``members``, the Byzantine
        ones for another committee (one switch at a time: while one is pending, or votes of
        the last are still in flight, try again a second later)."""
        if self.schedule.pending is not None or any(c.ops for c in self._voters.values()):
            self._push(self.now + 1.0, _SWITCH, members)
            return
        current = self.schedule.current
        epoch = current.epoch + 1
        for x in current.validators:
            # A Byzantine member votes for a committee of its own (validly signed): at most f
            # such votes never make a quorum, and never count toward the honest one.
            want = tuple(reversed(members)) if x in self.adversaries else members
            c = self._voters[x]
            c.ops.append(encode_tx(sign_committee_vote(self._signers[x], epoch, want)))
            c.total += 1
            self._wake(c, self._client_rng.uniform(0.0, 0.2))

    def _fold(self, e: Commit) -> None:
        """The committed log, folded in order (a daemon's log does the same): a switch takes
        effect when the old committee's last entry is folded."""
        self._entries.setdefault(e.seq, e.entry)
        while (entry := self._entries.get(self.schedule.last + 1)) is not None:
            new = self.schedule.observe(entry.seq, entry.batch)
            if new is not None:
                self._switch(new, entry.seq)

    def _switch(self, new: Committee, last: int) -> None:
        self.stats["switches"] += 1
        epoch = new.epoch
        self.committees[epoch] = new
        self._bases[epoch] = self.schedule.state
        self.checker.epoch_started(new, last + 1)
        for node in self.ids:
            if self._epoch_of[node] == epoch - 1:
                # The old replica stops: it votes no more (its window never reached last + 1).
                self.replicas[node] = None
                self._incarnation[node] += 1
                self._torn.discard(node)
                self.durable[node] = None
                self._epoch_of[node] = None
                self.checker.left(node)
        for node in new.validators:
            self._epoch_of[node] = epoch
            self.durable[node] = None
            self._push(self.now + self._fault_rng.uniform(0.0, 0.5), _JOIN, (node, epoch))

    def _join(self, node: bytes, epoch: int) -> None:
        if self._epoch_of[node] != epoch or self.replicas[node] is not None:
            return
        if node not in self._down:
            self._handle(node, Restarted(durable=None))

    def _handle(self, node: bytes, event: Event) -> None:
        rep = self.replicas[node]
        if rep is None:
            if not isinstance(event, Restarted):
                return
            epoch = self._epoch_of[node]
            if epoch is None:
                return
            # Known to the checker from its first replica on (a node down at its switch starts
            # at its restart, which may come before its join).
            self.checker.joined(node, self._bases[epoch].seq)
            rep = Replica(
                committee=self.committees[epoch],
                config=self.pbft,
                signer=self._signers[node],
                verifier=self.verifier,
                base=self._bases[epoch],
            )
            self.replicas[node] = rep
        try:
            effects = rep.handle(event, self._local(node, self.now))
        except RemoteProtocolError:
            self.stats["rejected"] += 1
            return
        if node in self._torn:
            keep = 1 + self._fault_rng.randrange(len(effects) + 1)
            effects = effects[:keep] if effects and isinstance(effects[0], Persist) else []
            self._apply(node, effects)
            self._kill(node)
            return
        self._apply(node, effects)

    def _apply(self, node: bytes, effects: list[Effect]) -> None:
        adversary = self.adversaries.get(node)
        for e in effects:
            t = type(e)
            if t is Broadcast:
                msg = e.msg  # type: ignore[attr-defined]
                if isinstance(msg, Checkpoint):
                    self.checker.on_checkpoint_vote(node, msg)
                self.checker.on_sent(node, msg)
                group = self.replicas[node].committee.validators  # type: ignore[union-attr]
                self._send(node, [x for x in group if x != node], msg, adversary)
            elif t is Send:
                self.checker.on_sent(node, e.msg)  # type: ignore[attr-defined]
                self._send(node, [e.to], e.msg, adversary)  # type: ignore[attr-defined]
            elif t is SetTimer:
                at = self._global(node, e.at)  # type: ignore[attr-defined]
                inc = self._incarnation[node]
                self._push(max(at, self.now), _TIMER, (node, inc, e.key, e.generation))  # type: ignore[attr-defined]
            elif t is CancelTimer:
                pass  # generations make the stale TimerFired a no-op inside the replica
            elif t is Persist:
                self.durable[node] = e.state  # type: ignore[attr-defined]
            elif t is Commit:
                self.checker.on_commit(node, e)  # type: ignore[arg-type]
                if adversary is None:
                    self._note_commit(e)  # type: ignore[arg-type]
                    self._fold(e)  # type: ignore[arg-type]
                    if self.replicas[node] is None:
                        return  # the switch stopped this replica: the rest is not carried out
            elif t is StateInstalled:
                self.stats["installs"] += 1
                self.checker.on_install(node, e)  # type: ignore[arg-type]
            elif t is ViewEntered:
                self.stats["views"] += 1
                self.checker.on_view(node, self._epoch_of[node], e)  # type: ignore[arg-type]
            elif t is Evidence:
                self.stats["evidence"] += 1
                if node in self.adversaries:
                    continue
                # Evidence from a correct replica must convict a Byzantine one, never a correct one.
                committee = self.committees[e.first.epoch]  # type: ignore[attr-defined]
                offender = check_evidence(committee, self.verifier, e.first, e.second)  # type: ignore[attr-defined]
                if offender not in self.adversaries:
                    raise SafetyViolation(f"evidence against correct replica {offender[-4:].hex()}")
                self._submit_evidence(e)  # type: ignore[arg-type]

    def _submit_evidence(self, e: Evidence) -> None:
        """An application (the trust ledger) would turn evidence into a slashing transaction:
        here an ``AppTx`` whose body carries both encoded messages, opaque to PBFT."""
        key = (e.offender, encode(e.first))
        c = self._evidence_client
        if key in self._evidence_sent or c.total >= self.cfg.evidence_txs:
            return
        self._evidence_sent.add(key)
        body = cbor2.dumps([encode(e.first), encode(e.second)], canonical=True)
        c.ops.append(encode_tx(AppTx(app="evidence", body=body)))
        c.total += 1
        self.stats["evidence_txs"] += 1
        self._wake(c, self._client_rng.uniform(0.0, 0.2))

    def _timer(self, node: bytes, inc: int, key: object, gen: int) -> None:
        if self.replicas[node] is None or inc != self._incarnation[node]:
            return
        self._handle(node, TimerFired(key=key, generation=gen))  # type: ignore[arg-type]

    # -- network ----------------------------------------------------------------------------------

    def _send(self, src: bytes, dests: list[bytes], msg: Message, adv: Adversary | None) -> None:
        out = adv.rewrite(msg, dests) if adv is not None else [(d, msg) for d in dests]
        wire = self.cfg.wire
        encoded: dict[int, bytes] = {}
        for dst, payload in out:
            if wire and not isinstance(payload, bytes):
                key = id(payload)
                if key not in encoded:
                    encoded[key] = encode(payload)
                payload = encoded[key]
            self._transmit(src, dst, payload)

    def _transmit(self, src: bytes, dst: bytes, payload: object) -> None:
        cfg, rng = self.cfg, self._net_rng
        if not self.healed:
            groups = self._groups
            if (
                groups is not None
                and src in groups
                and dst in groups
                and groups[src] != groups[dst]
            ):
                self.stats["dropped"] += 1
                return
            if rng.random() < cfg.drop_p:
                self.stats["dropped"] += 1
                return
        copies = 2 if rng.random() < cfg.dup_p else 1
        for _ in range(copies):
            delay = cfg.delay_min + rng.expovariate(1.0 / cfg.delay_mean)
            self._push(self.now + delay, _DELIVER, (dst, src, payload))

    def _deliver(self, dst: bytes, src: bytes, payload: object) -> None:
        if dst not in self.replicas or self.replicas[dst] is None:
            return
        if isinstance(payload, bytes):
            try:
                msg = decode(payload)
            except RemoteProtocolError:
                self.stats["rejected"] += 1
                return
        else:
            msg = payload  # type: ignore[assignment]
        self.stats["delivered"] += 1
        adv = self.adversaries.get(dst)
        if adv is not None:
            adv.observe(msg)
        self._handle(dst, MessageReceived(sender=src, msg=msg))

    # -- clients ----------------------------------------------------------------------------------

    def _new_request(self, c: _Client) -> Request:
        rng = self._client_rng
        roll = rng.random()
        if c.ops:
            op = c.ops.pop(0)
        elif roll < 0.8:
            op = encode_tx(KvPut(key=f"c{c.index}/{c.next_id}", value=rng.randbytes(8)))
        elif roll < 0.9:
            op = encode_tx(Noop())
        else:
            op = b"\xff not a transaction"  # committed and rejected, deterministically
        req = Request(client=c.signer.node_id, request_id=c.next_id, op=op)
        c.next_id += 1
        return sign(req, c.signer)

    def _client_step(self, c: _Client) -> None:
        rng = self._client_rng
        if (
            c.current is not None
            and (c.current.client, c.current.request_id) in self.checker.committed_at
        ):
            c.current = None
        if c.current is None:
            if c.next_id > c.total:
                return
            c.current = self._new_request(c)
            self.checker.submitted(c.current)
            # First try: hand it to one replica's daemon, which broadcasts it (maybe Byzantine).
            node = rng.choice(self.schedule.current.validators)
            self._handle(node, ClientRequest(request=c.current))
        else:
            # Retry: send it to every replica ourselves, over the (lossy) network.
            for node in self.ids:
                self._transmit(c.signer.node_id, node, c.current)
        self._wake(c, self.cfg.client_retry)

    def _wake(self, c: _Client, delay: float) -> None:
        c.token += 1
        self._push(self.now + delay, _CLIENT, (c, c.token))

    def _note_commit(self, e: Commit) -> None:
        for req in e.entry.batch:
            c = self._client_of.get(req.client)
            if c is not None and c.current is not None and c.current.request_id == req.request_id:
                c.current = None
                self._wake(c, self._client_rng.uniform(0.0, 0.3))


def _seed32(key_seed: bytes, i: int) -> bytes:
    import hashlib

    return hashlib.sha256(key_seed + i.to_bytes(4, "big")).digest()
