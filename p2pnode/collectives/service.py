"""The collectives service: groups formed through the swarm, and operations run over them.

It binds three things together:

- the **group machine** (:mod:`p2pnode_protocols.collectives.group`) on the shared machine
  driver, its control messages as datagrams on ``/p2pnode/collectives/1.0.0``. Peers asking for
  a group are found through the DHT: each announces itself as a provider of
  ``collective:<name>`` and looks the others up while the group forms. Membership's verdicts
  (a member dead) and the connection's end reach the machine as ``PeerGone``.
- the **data streams** (:mod:`p2pnode.collectives.links`) carrying parts.
- the **engine** (:mod:`p2pnode.collectives.engine`): one :class:`Operation` per call, fed by
  the streams' readers, its outgoing parts written by one sender task per member.

An operation runs in the caller's task (an IPC request). It succeeds only when every part it
expects from every member arrived and every part it owes was written. It fails, with one
:class:`CollectiveError`, when a part is bad (the sender is blamed), a write fails, nothing
moves for ``stall_timeout`` seconds (the members still owing parts are blamed), the deadline
passes, or another member aborts it; the machine then tells the others (``Abort``) and re-forms
the group without the blamed members, and the caller gets :class:`GroupChanged` until it
refreshes. Parts of an operation this member has not started yet wait in their stream (the
reader stops reading: flow control holds the sender) until it starts or ``stall_timeout``.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import trio
from libp2p.abc import IHost
from libp2p.peer.id import ID

from p2pnode.collectives.engine import Operation, OpSpec, Out
from p2pnode.collectives.errors import CollectiveError, GroupChanged
from p2pnode.collectives.links import LinkError, Links
from p2pnode.config import Config
from p2pnode.events import EventBus
from p2pnode.machine_driver import MachineDriver
from p2pnode.network.datagram import DatagramTransport
from p2pnode.network.dht import Dht
from p2pnode_protocols.collectives.control import (
    MAX_CONTROL_BYTES,
    ControlError,
    Ping,
    Pong,
    check_group_name,
    decode_control,
    encode_control,
)
from p2pnode_protocols.collectives.group import (
    CandidatesFound,
    GroupBroken,
    GroupConfig,
    GroupFormed,
    GroupMachine,
    GroupRefused,
    JoinGroup,
    LeaveGroup,
    LinksMeasured,
    OpFailed,
    PeerGone,
)
from p2pnode_protocols.collectives.wire import PartHeader
from p2pnode_protocols.heartbeat.machine import MemberStatus
from p2pnode_protocols.machine import MessageReceived, Notify

log = logging.getLogger(__name__)

CONTROL_PROTOCOL = "/p2pnode/collectives/1.0.0"
LOOKUP_INTERVAL = 0.5  # seconds between DHT lookups of a forming group's peers
PROVIDE_INTERVAL = 60.0
WATCH_INTERVAL = 0.5


def provider_name(group: str) -> str:
    return f"collective:{group}"


@dataclass
class _Running:
    op: Operation
    members: tuple[bytes, ...]
    done: trio.Event = field(default_factory=trio.Event)
    error: CollectiveError | None = None
    outstanding: int = 0  # parts queued and not yet written
    sent: int = 0  # payload bytes
    received: int = 0
    queued: Counter[int] = field(default_factory=Counter)  # parts not yet written, per rank
    leavers: set[bytes] = field(default_factory=set)  # departed after their last part
    progress_at: float = field(default_factory=trio.current_time)
    queues: dict[int, trio.MemorySendChannel[Out]] = field(default_factory=dict)


class Group:
    """This node's view of one group it joined."""

    def __init__(self, name: str, size: int, min_size: int, wait: float) -> None:
        self.name = name
        self.size, self.min_size, self.wait = size, min_size, wait
        self.generation = 0
        self.members: tuple[bytes, ...] = ()
        self.rank = -1
        self.formed = False
        self.refused: str | None = None
        self.broken_reason: str | None = None
        self.seq = 0
        self.running: _Running | None = None
        self.changed = trio.Event()  # pulsed on every formation, break and op start
        self.stats: Counter[str] = Counter()
        self.residuals: dict[int, np.ndarray] = {}  # top-k error feedback by array length
        self.lock = trio.Lock()  # one operation at a time per group and node
        self.cancel_lookup = trio.CancelScope()

    def pulse(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "formed": self.formed,
            "generation": self.generation,
            "rank": self.rank,
            "world_size": len(self.members),
            "members": [ID(m).to_base58() for m in self.members],
            "size": self.size or None,
            "min_size": self.min_size,
            "last_error": self.broken_reason,
            "stats": dict(self.stats),
        }


class CollectivesService:
    def __init__(
        self,
        host: IHost,
        cfg: Config,
        *,
        dht: Dht,
        membership: Any,
        events: EventBus,
        observe: Callable[[str, str, float, int, int], None] | None = None,
    ) -> None:
        self.host = host
        self.cfg = cfg
        self.dht = dht
        self.membership = membership
        self.events = events
        self.observe = observe  # (kind, outcome, seconds, bytes sent, bytes received)
        c = cfg.collectives
        self.stall_timeout = c.stall_timeout
        self.op_timeout = c.op_timeout
        self.fault = c.fault
        self.me = host.get_id().to_bytes()
        self.machine = GroupMachine(self.me, GroupConfig(reform_wait=c.reform_wait))
        self.transport = DatagramTransport(
            host,
            CONTROL_PROTOCOL,
            self._on_packet,
            max_packet=MAX_CONTROL_BYTES,
            queue_size=256,
            write_timeout=cfg.network.request_timeout,
            connect_timeout=cfg.network.connect_timeout,
        )
        self.driver = MachineDriver(
            self.machine,
            name="collectives",
            send=self.transport.send,
            encode=encode_control,
            me=self.me,
            notify=self._notified,
        )
        self.links = Links(
            host,
            on_part=self._on_part,
            on_bad_peer=self._on_bad_peer,
            write_timeout=c.stall_timeout,
            connect_timeout=cfg.network.connect_timeout,
        )
        self.groups: dict[str, Group] = {}
        self.counters: Counter[str] = Counter()
        #: round trips (ms) to peers, measured while groups form; pings awaiting their pong
        self.rtt_ms: dict[bytes, float] = {}
        self._pings: dict[int, tuple[bytes, float]] = {}
        self._nursery: trio.Nursery | None = None

    @property
    def error(self) -> str | None:
        return self.driver.error

    async def run(
        self, *, task_status: trio.TaskStatus[CollectivesService] = trio.TASK_STATUS_IGNORED
    ) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self.transport.run)
            self.links.install()
            await nursery.start(self.driver.run)
            nursery.start_soon(self._watch_members)
            nursery.start_soon(self._watch_connections)
            task_status.started(self)
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None

    # -- joining and leaving ---------------------------------------------------------------------

    async def join(
        self,
        name: str,
        *,
        size: int = 0,
        min_size: int = 0,
        wait: float = 0.0,
        timeout: float = 60.0,
    ) -> Group:
        """Ask for group ``name`` and wait until it is formed with this node in it."""
        check_group_name(name)
        if size < 0 or min_size < 0 or wait < 0 or size > 256:
            raise ValueError("size 0-256, min_size and wait not negative")
        if not size and not min_size:
            raise ValueError("give the group's size, or a min_size (and a wait)")
        min_size = min_size or size
        if size and min_size > size:
            raise ValueError("min_size above size")
        g = self.groups.get(name)
        if g is None:
            if self._nursery is None:
                raise CollectiveError("the collectives service is not running")
            g = self.groups[name] = Group(name, size, min_size, wait)
            self.driver.submit(JoinGroup(name=name, size=size, min_size=min_size, wait=wait))
            self._nursery.start_soon(self._discover, g)
        elif (g.size, g.min_size) != (size, min_size):
            raise ValueError(
                f"this node already joined {name} with size {g.size or None}, min_size {g.min_size}"
            )
        with trio.move_on_after(timeout):
            while not g.formed:
                if g.refused is not None:
                    reason = g.refused
                    await self.leave(name)
                    raise CollectiveError(reason)
                await g.changed.wait()
            return g
        found = len(self.machine.groups[name].heard) + 1 if name in self.machine.groups else 1
        await self.leave(name)
        want = f"{size}" if size else f"at least {min_size}"
        raise CollectiveError(
            f"group {name} did not form within {timeout:g} s: {want} members wanted,"
            f" {found} heard from (are the others running, and bootstrapped to this swarm?)"
        )

    async def leave(self, name: str) -> None:
        g = self.groups.pop(name, None)
        if g is None:
            return
        g.cancel_lookup.cancel()
        self.driver.submit(LeaveGroup(name=name))
        if g.running is not None:
            self._fail(g, g.running, CollectiveError("this node left the group"), report=False)
        await self.links.close_group(name)

    def leave_soon(self, name: str) -> None:
        """:meth:`leave` in the background (from a callback that cannot wait)."""
        if self._nursery is not None:
            self._nursery.start_soon(self.leave, name)

    async def _discover(self, g: Group) -> None:
        """Announce this node under the group's name and look the others up while forming."""
        name = provider_name(g.name)
        provided_at = -math.inf
        with g.cancel_lookup:
            while True:
                now = trio.current_time()
                if now - provided_at > PROVIDE_INTERVAL:
                    with suppress(Exception), trio.move_on_after(10):
                        await self.dht.provide(name)
                        provided_at = now
                if not g.formed:
                    peers: set[bytes] = set()
                    with suppress(Exception), trio.move_on_after(5):
                        for pid, _addrs in await self.dht.find_providers(name, limit=256):
                            with suppress(Exception):
                                peers.add(ID.from_base58(pid).to_bytes())
                    if peers:
                        self.driver.submit(CandidatesFound(name=g.name, peers=frozenset(peers)))
                    self._ping(g.name, peers - {self.me})
                with trio.move_on_after(LOOKUP_INTERVAL if not g.formed else 5.0):
                    await g.changed.wait()

    # -- the machine's news ----------------------------------------------------------------------

    def _ping(self, group: str, peers: Iterable[bytes]) -> None:
        """Measure round trips to ``peers`` (answered in :meth:`_on_packet`), for the ring."""
        now = trio.current_time()
        self._pings = {k: v for k, v in self._pings.items() if now - v[1] < 10}
        for peer in peers:
            nonce = secrets.randbits(63)
            self._pings[nonce] = (peer, now)
            self.transport.send(peer, encode_control(Ping(group, nonce)))

    def _on_packet(self, sender: bytes, data: bytes) -> None:
        try:
            msg = decode_control(data)
        except ControlError as exc:
            self.counters["refused_control"] += 1
            log.debug("bad control message from %s: %s", ID(sender), exc)
            return
        if isinstance(msg, Ping):
            self.transport.send(sender, encode_control(Pong(msg.group, msg.nonce)))
            return
        if isinstance(msg, Pong):
            sent = self._pings.pop(msg.nonce, None)
            if sent is not None and sent[0] == sender:
                rtt = (trio.current_time() - sent[1]) * 1000
                old = self.rtt_ms.get(sender)
                self.rtt_ms[sender] = rtt if old is None else 0.7 * old + 0.3 * rtt
                if len(self.rtt_ms) > 1024:
                    self.rtt_ms.pop(next(iter(self.rtt_ms)))
                self.driver.submit(LinksMeasured(rtt_ms=dict(self.rtt_ms)))
            return
        self.driver.submit(MessageReceived(sender=sender, msg=msg))

    def _notified(self, e: Notify) -> None:
        g = self.groups.get(getattr(e, "name", ""))
        if g is None:
            return
        if isinstance(e, GroupFormed):
            g.generation, g.members = e.generation, e.members
            g.rank = e.members.index(self.me)
            g.formed = True
            g.seq = 0
            g.broken_reason = None
            g.stats["formations"] += 1
            log.info(
                "group %s generation %d: rank %d of %d",
                g.name,
                g.generation,
                g.rank,
                len(g.members),
            )
            self.events.publish(
                "collectives",
                {
                    "event": "formed",
                    "group": g.name,
                    "generation": g.generation,
                    "members": [ID(m).to_base58() for m in g.members],
                },
            )
        elif isinstance(e, GroupBroken):
            if e.generation == g.generation:
                g.formed = False
                g.broken_reason = e.reason
                run = g.running
                if run is not None and run.op.generation == e.generation:
                    if not e.departed or self._depends_on(run, e.departed):
                        self._fail(g, run, GroupChanged(e.reason), report=False)
                    else:
                        # A member that finished its part of this operation and left (or
                        # died): ours completes with every part, and the next one is refused.
                        run.leavers.update(e.departed)
                self.events.publish(
                    "collectives",
                    {
                        "event": "broken",
                        "group": g.name,
                        "generation": e.generation,
                        "reason": e.reason,
                    },
                )
        elif isinstance(e, GroupRefused):
            g.refused = e.reason
        g.pulse()

    async def _watch_members(self) -> None:
        """Membership's verdicts: a member declared dead, and no longer connected, is gone
        from its groups."""
        reported: set[bytes] = set()
        while True:
            await trio.sleep(WATCH_INTERVAL)
            if self.membership is None or not self.groups:
                continue
            in_groups = {m for g in self.groups.values() for m in g.members}
            network = self.host.get_network()
            for v in self.membership.members():
                # A verdict alone is not enough while our connection to the member is up: a
                # daemon busy moving an all-reduce's gigabytes can miss its heartbeats, while a
                # dead one's connection closes (and a hung one stalls the operation anyway).
                if (
                    v.node in in_groups
                    and v.status == MemberStatus.DEAD
                    and not network.connections.get(ID(v.node))
                ):
                    if v.node not in reported:
                        reported.add(v.node)
                        self.driver.submit(PeerGone(peer=v.node))
                else:
                    reported.discard(v.node)

    async def _watch_connections(self) -> None:
        """A member's connection closing fails the running operation at once (a SIGKILLed
        daemon's connection closes within milliseconds on a LAN)."""
        peers = self.events.subscribe("peers")
        async for event in peers:
            if event.get("event") != "disconnected":
                continue
            with suppress(Exception):
                peer = ID.from_base58(event["peer_id"]).to_bytes()
                for g in list(self.groups.values()):
                    run = g.running
                    if run is not None and peer in run.members and not run.done.is_set():
                        if self.host.get_network().connections.get(ID(peer)):
                            continue  # another connection to it is still up
                        self._fail(
                            g,
                            run,
                            CollectiveError(f"lost the connection to member {ID(peer)}"),
                            suspects={peer},
                        )

    # -- operations ------------------------------------------------------------------------------

    async def run_op(
        self,
        name: str,
        generation: int,
        spec: OpSpec,
        data: np.ndarray | bytes,
        *,
        timeout: float | None = None,
        out: np.ndarray | None = None,
    ) -> Operation:
        """Run one operation of ``spec`` on group ``name`` in ``generation`` (the one the caller
        knows): the finished :class:`Operation` (``result``, ``gathered``; in ``out`` when
        given), or an error."""
        g = self.groups.get(name)
        if g is None:
            raise CollectiveError(f"this node is not in group {name}: join it first")
        async with g.lock:
            if not g.formed or g.generation != generation:
                raise GroupChanged(
                    f"group {name} is at generation {g.generation}"
                    f"{'' if g.formed else ' (re-forming)'}, not {generation}:"
                    f" refresh the group and retry"
                    + (f" (why: {g.broken_reason})" if g.broken_reason else "")
                )
            residual = None
            if spec.codec == "topk":
                residual = g.residuals.setdefault(spec.length, np.zeros(spec.length, np.float32))
            op = Operation(
                spec,
                rank=g.rank,
                n=len(g.members),
                generation=g.generation,
                seq=g.seq,
                data=data,
                residual=residual,
                out=out,
            )
            g.seq += 1
            run = _Running(op, g.members)
            started = time.perf_counter()
            deadline = trio.current_time() + (timeout or self.op_timeout)
            g.running = run
            g.pulse()  # parts of this op waiting in their streams may go in now
            try:
                async with trio.open_nursery() as nursery:
                    for j, peer in enumerate(g.members):
                        if j != g.rank:
                            send, recv = trio.open_memory_channel[Out](math.inf)
                            run.queues[j] = send
                            nursery.start_soon(self._sender, g, run, peer, recv)
                    self._emit(g, run, op.start())
                    await self._await(g, run, deadline)
                    nursery.cancel_scope.cancel()
            finally:
                if g.running is run:
                    g.running = None
            seconds = time.perf_counter() - started
            g.stats["ops"] += 1
            g.stats["bytes_sent"] += run.sent
            g.stats["bytes_received"] += run.received
            if self.observe is not None:
                outcome = (
                    "ok"
                    if run.error is None
                    else "group_changed"
                    if isinstance(run.error, GroupChanged)
                    else "failed"
                )
                self.observe(str(spec.kind), outcome, seconds, run.sent, run.received)
            if run.error is not None:
                g.stats["failures"] += 1
                raise run.error
            g.stats["seconds"] += seconds
            return op

    async def _await(self, g: Group, run: _Running, deadline: float) -> None:
        while not run.done.is_set():
            now = trio.current_time()
            if now >= deadline:
                self._fail(
                    g,
                    run,
                    CollectiveError("the operation missed its deadline"),
                    suspects=self._owing(run),
                )
                return
            if now - run.progress_at > self.stall_timeout:
                owing = self._owing(run)
                names = ", ".join(str(ID(p)) for p in sorted(owing)) or "nobody"
                self._fail(
                    g,
                    run,
                    CollectiveError(
                        f"nothing moved for {self.stall_timeout:g} s; waiting for {names}"
                    ),
                    suspects=owing,
                )
                return
            with trio.move_on_at(min(deadline, run.progress_at + self.stall_timeout + 0.05)):
                await run.done.wait()

    def _depends_on(self, run: _Running, peers: Iterable[bytes]) -> bool:
        """Whether ``run`` still waits for a part from one of ``peers`` or has parts queued
        for one of them."""
        ranks = {run.members.index(p) for p in peers if p in run.members}
        return bool(ranks & run.op.missing_from()) or any(run.queued[j] for j in ranks)

    def _owing(self, run: _Running) -> set[bytes]:
        return {run.members[j] for j in run.op.missing_from()}

    def _emit(self, g: Group, run: _Running, outs: Iterable[Out]) -> None:
        for out in outs:
            if run.members[out.to] in run.leavers:
                self._fail(g, run, GroupChanged(g.broken_reason or "a member left"), report=False)
                return
            run.outstanding += 1
            run.queued[out.to] += 1
            run.queues[out.to].send_nowait(out)
        self._check_done(run)

    def _check_done(self, run: _Running) -> None:
        if run.error is None and run.outstanding == 0 and run.op.done:
            run.done.set()

    async def _sender(
        self, g: Group, run: _Running, peer: bytes, recv: trio.MemoryReceiveChannel[Out]
    ) -> None:
        async for out in recv:
            header, payload = self._faulty(out.header, out.payload)
            try:
                await self.links.send(g.name, peer, header, payload)
            except LinkError as exc:
                self._fail(g, run, CollectiveError(str(exc)), suspects={peer})
                return
            run.sent += len(payload)
            run.outstanding -= 1
            run.queued[out.to] -= 1
            run.progress_at = trio.current_time()
            self._check_done(run)

    def _faulty(self, header: PartHeader, payload: bytes | memoryview):  # type: ignore[no-untyped-def]
        """``collectives.fault`` (tests only): a member that sends bad parts."""
        if self.fault == "corrupt" and len(payload) > 0:
            data = bytearray(payload)
            data[len(data) // 2] ^= 0xFF
            return header, bytes(data)
        if self.fault == "short" and header.count > 1:
            import dataclasses
            import zlib

            cut = bytes(payload)[: len(payload) - 4]
            return dataclasses.replace(
                header, count=header.count - 1, nbytes=len(cut), crc=zlib.crc32(cut)
            ), cut
        return header, payload

    def _fail(
        self,
        g: Group,
        run: _Running,
        error: CollectiveError,
        *,
        suspects: set[bytes] | None = None,
        report: bool = True,
    ) -> None:
        if run.error is not None or run.done.is_set():
            return
        run.error = error
        run.done.set()
        g.broken_reason = str(error)
        log.warning("group %s op %d failed: %s", g.name, run.op.seq, error)
        if report:
            self.driver.submit(
                OpFailed(
                    name=g.name,
                    generation=run.op.generation,
                    op=run.op.seq,
                    reason=str(error),
                    suspects=frozenset(suspects or ()),
                )
            )

    async def _on_part(self, group: str, peer: bytes, header: PartHeader, payload: bytes) -> None:
        g = self.groups.get(group)
        if g is None:
            return
        waited_since = trio.current_time()
        while True:
            run = g.running
            gen = run.op.generation if run is not None else g.generation
            seq = run.op.seq if run is not None else g.seq - 1
            if run is not None and (header.generation, header.op) == (gen, seq):
                if not 0 <= header.sender < len(run.members) or run.members[header.sender] != peer:
                    self._fail(
                        g,
                        run,
                        CollectiveError(f"{ID(peer)} sent a part as another rank"),
                        suspects={peer},
                    )
                    return
                if run.done.is_set():
                    return
                try:
                    outs = run.op.receive(header, payload)
                except Exception as exc:  # PartError, or a bad value
                    self._fail(
                        g,
                        run,
                        CollectiveError(f"bad part from {ID(peer)}: {exc}"),
                        suspects={peer},
                    )
                    return
                run.received += len(payload)
                run.progress_at = trio.current_time()
                self._emit(g, run, outs)
                return
            if (header.generation, header.op) <= (gen, seq) and header.generation <= g.generation:
                self.counters["stale_parts"] += 1
                return  # of an operation that is over here
            # A part of an operation this node has not started: hold the stream until it does.
            left = waited_since + self.stall_timeout - trio.current_time()
            if left <= 0:
                self.counters["parts_waited_out"] += 1
                return
            with trio.move_on_after(left):
                await g.changed.wait()

    def _on_bad_peer(self, group: str, peer: bytes, reason: str) -> None:
        g = self.groups.get(group)
        self.counters["bad_data_streams"] += 1
        if g is not None and g.running is not None and peer in g.running.members:
            self._fail(
                g,
                g.running,
                CollectiveError(f"bad part from {ID(peer)}: {reason}"),
                suspects={peer},
            )

    # -- status ----------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {
            "groups": [g.describe() for g in self.groups.values()],
            "bytes_sent": self.links.bytes_sent,
            "bytes_received": self.links.bytes_received,
            "counters": dict(self.counters),
        }
