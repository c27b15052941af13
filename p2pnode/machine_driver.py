"""The machine driver: how every sans-I/O machine of ``protocols/`` runs inside the daemon.

A service owns a transport and a machine; the driver sits between them and is the only thing
that calls ``machine.handle``. It gives every protocol the same:

- **inbox**: events come in through :meth:`MachineDriver.submit` from any task of the daemon,
  never blocking; the inbox is bounded, and an event that does not fit is dropped and counted
  (``dropped_inbox_full``): the protocols retransmit, as they would over a lossy link.
- **steps**: one task takes up to ``drain`` queued events, hands each to the machine, fires the
  timers that are due, then carries out the effects of the whole step, in order.
- **timers**: one heap. ``SetTimer`` replaces the timer with the same key, ``CancelTimer``
  forgets it; a machine ignores a stale generation anyway, so a late firing is harmless.
- **durable before visible**: when a step has effects and the service gave a ``persist`` hook,
  the hook gets the step's effects first and must make durable whatever they ask (the last
  ``Persist``, a committed entry) before the driver sends a single message or tells anyone.
  A machine that asks for ``Persist`` from a service without the hook is a bug.
- **one error policy**: a peer's bad input (:class:`~p2pnode_protocols.machine.RemoteProtocolError`)
  is counted (``refused``, and ``refused_<reason>`` when the error has one) and dropped; it changed
  nothing. Anything else raised by the machine or while carrying out its effects (a bug, or a
  disk that refuses the persist) **stops this service only**: the driver records the error,
  logs it with its traceback, stops handling events and never raises into the daemon's
  nursery. ``status`` and the metrics name the stopped service; DHT, blobs and IPC go on.

Messages are encoded once per step however many peers a ``Broadcast`` or repeated ``Send``
reaches (PBFT broadcasts one pre-prepare to the whole committee).

Cancellation: cancelling :meth:`MachineDriver.run` ends the loop between two steps or inside
the inbox wait; a step itself never awaits, so a machine never sees half a step.

Resources: ``inbox_size`` events; one heap entry per live timer (replaced entries are dropped
lazily and the heap is compacted when stale ones outnumber live ones).
"""

from __future__ import annotations

import heapq
import logging
import math
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any

import trio

from p2pnode_protocols.machine import (
    Broadcast,
    CancelTimer,
    Effect,
    Event,
    LocalProtocolError,
    Machine,
    Notify,
    Persist,
    RemoteProtocolError,
    Send,
    SetTimer,
    TimerFired,
)

log = logging.getLogger(__name__)

__all__ = ["MachineDriver", "Timers"]


class Timers:
    """The driver's timer heap: at most one live timer per key, earliest first.

    Entries replaced or cancelled stay in the heap until they surface (lazy deletion); the heap
    is rebuilt when stale entries outnumber live ones, so its size stays within twice the live
    timers plus a constant.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Hashable, int]] = []
        self._live: dict[Hashable, int] = {}
        self._n = 0

    def __len__(self) -> int:
        return len(self._live)

    def set(self, key: Hashable, at: float, generation: int) -> None:
        self._n += 1
        self._live[key] = self._n
        heapq.heappush(self._heap, (at, self._n, key, generation))
        if len(self._heap) > 2 * len(self._live) + 64:
            self._heap = [e for e in self._heap if self._live.get(e[2]) == e[1]]
            heapq.heapify(self._heap)

    def cancel(self, key: Hashable) -> None:
        self._live.pop(key, None)

    def next_deadline(self) -> float:
        heap = self._heap
        while heap and self._live.get(heap[0][2]) != heap[0][1]:
            heapq.heappop(heap)
        return heap[0][0] if heap else math.inf

    def pop_due(self, now: float) -> list[TimerFired]:
        """The timers due at ``now``, earliest first (ties in the order they were set)."""
        out: list[TimerFired] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            _at, n, key, generation = heapq.heappop(heap)
            if self._live.get(key) == n:
                del self._live[key]
                out.append(TimerFired(key=key, generation=generation))
        return out


class MachineDriver:
    """Runs one machine for one service. See the module docstring for the rules.

    ``send(to, data)`` hands encoded bytes to the transport and returns False when it dropped
    them (counted as ``send_dropped``); ``encode(msg)`` is the protocol's codec; ``group()``
    names the peers a ``Broadcast`` goes to (the driver never sends to ``me``); ``notify`` gets
    every :class:`~p2pnode_protocols.machine.Notify` effect; ``persist`` gets each step's effects
    before anything of the step is carried out; ``effects`` carries out a protocol's own effect
    types (the rounds machine's ``Train`` or ``Submit``), never blocking: start work, do not await
    it.
    """

    def __init__(
        self,
        machine: Machine,
        *,
        name: str,
        send: Callable[[bytes, bytes], bool],
        encode: Callable[[Any], bytes],
        me: bytes = b"",
        group: Callable[[], Iterable[bytes]] | None = None,
        notify: Callable[[Notify], None] | None = None,
        persist: Callable[[Sequence[Effect]], None] | None = None,
        effects: Mapping[type, Callable[[Any], None]] | None = None,
        inbox_size: int = 1024,
        drain: int = 1,
    ) -> None:
        if inbox_size < 1 or drain < 1:
            raise ValueError("inbox_size and drain must be at least 1")
        self.machine = machine
        self.name = name
        self._send = send
        self._encode = encode
        self._me = me
        self._group = group
        self._notify = notify
        self._persist = persist
        self._drain = drain
        self._inbox_send, self._inbox = trio.open_memory_channel[Event](inbox_size)
        self.timers = Timers()
        self.counters: Counter[str] = Counter()
        #: Why the service stopped (the exception, one line), or None while it runs.
        self.error: str | None = None
        self.running = False
        self._ended = False
        self._stopped = trio.Event()
        self._carry: dict[type, Callable[[Any, dict[int, bytes]], None]] = {
            Send: self._do_send,
            Broadcast: self._do_broadcast,
            SetTimer: self._do_set_timer,
            CancelTimer: self._do_cancel_timer,
            Persist: self._do_persist,
        }
        for kind, carry in (effects or {}).items():
            self._carry[kind] = lambda e, _cache, carry=carry: carry(e)

    # -- the service's side ------------------------------------------------------------------

    @property
    def state(self) -> str:
        """``starting``, ``running``, ``stopped`` by a bug (see :attr:`error`), or ``ended``
        (cancelled with its service)."""
        if self.error is not None:
            return "stopped"
        if self.running:
            return "running"
        return "ended" if self._ended else "starting"

    def submit(self, event: Event) -> bool:
        """Queue ``event`` for the machine; False if the inbox is full (the event is dropped)
        or the service has stopped. Never blocks, so transport callbacks may call it."""
        if self.error is not None:
            return False
        try:
            self._inbox_send.send_nowait(event)
        except trio.WouldBlock:
            self.counters["dropped_inbox_full"] += 1
            return False
        return True

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    async def run(
        self,
        first: Event | None = None,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Handle ``first`` (a machine's start-up event) and carry out its effects before
        ``started``, then run steps until cancelled or stopped by a bug."""
        if first is not None:
            self._step([first], trio.current_time())
        self.running = self.error is None
        task_status.started()
        try:
            while self.error is None:
                batch: list[Event] = []
                with trio.move_on_at(self.timers.next_deadline()):
                    batch.append(await self._inbox.receive())
                while len(batch) < self._drain:
                    try:
                        batch.append(self._inbox.receive_nowait())
                    except trio.WouldBlock:
                        break
                self._step(batch, trio.current_time())
                # A busy inbox never blocks the receive above: let transports and readers run.
                await trio.lowlevel.checkpoint()
        finally:
            self.running = False
            self._ended = True

    # -- one step ----------------------------------------------------------------------------

    def _step(self, batch: list[Event], now: float) -> None:
        effects: list[Effect] = []
        for event in batch:
            effects += self._handle(event, now)
            if self.error is not None:
                break
        if self.error is None:
            for fired in self.timers.pop_due(now):
                effects += self._handle(fired, now)
                if self.error is not None:
                    break
        if effects:
            self._carry_out(effects)

    def _handle(self, event: Event, now: float) -> list[Effect]:
        try:
            return self.machine.handle(event, now)
        except RemoteProtocolError as exc:
            self.counters["refused"] += 1
            reason = getattr(exc, "reason", None)
            if reason:
                self.counters[f"refused_{reason}"] += 1
            log.debug("%s refused %r: %s", self.name, event, exc)
            return []
        except Exception as exc:
            self._stop(exc)
            return []

    def _carry_out(self, effects: list[Effect]) -> None:
        try:
            if self._persist is not None:
                self._persist(effects)
            encoded: dict[int, bytes] = {}
            for e in effects:
                carry = self._carry.get(type(e))
                if carry is not None:
                    carry(e, encoded)
                elif isinstance(e, Notify):
                    if self._notify is not None:
                        self._notify(e)
                else:
                    raise LocalProtocolError(f"{self.name}: no way to carry out {e!r}")
        except Exception as exc:
            self._stop(exc)

    def _stop(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = f"{type(exc).__name__}: {exc}"
            self.counters["stopped_by_bug"] += 1
            log.error(
                "%s stopped by a bug; the rest of the daemon goes on",
                self.name,
                exc_info=(type(exc), exc, exc.__traceback__),
            )
            self._stopped.set()

    # -- effects -----------------------------------------------------------------------------

    def _encoded(self, msg: object, cache: dict[int, bytes]) -> bytes:
        data = cache.get(id(msg))
        if data is None:
            data = cache[id(msg)] = self._encode(msg)
        return data

    def _do_send(self, e: Send, cache: dict[int, bytes]) -> None:
        if not self._send(e.to, self._encoded(e.msg, cache)):
            self.counters["send_dropped"] += 1

    def _do_broadcast(self, e: Broadcast, cache: dict[int, bytes]) -> None:
        if self._group is None:
            raise LocalProtocolError(f"{self.name}: Broadcast without a group")
        data = self._encoded(e.msg, cache)
        for peer in self._group():
            if peer != self._me and not self._send(peer, data):
                self.counters["send_dropped"] += 1

    def _do_set_timer(self, e: SetTimer, cache: dict[int, bytes]) -> None:
        self.timers.set(e.key, e.at, e.generation)

    def _do_cancel_timer(self, e: CancelTimer, cache: dict[int, bytes]) -> None:
        self.timers.cancel(e.key)

    def _do_persist(self, e: Persist, cache: dict[int, bytes]) -> None:
        # Made durable by the persist hook before this loop began.
        if self._persist is None:
            raise LocalProtocolError(f"{self.name}: Persist without a persist hook")
