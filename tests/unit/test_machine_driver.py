"""``p2pnode.machine_driver.MachineDriver`` with a scripted fake machine, in virtual time.

The machine under the driver is a fake: each ``Poke`` event carries the effects the machine
returns for it (or the exception it raises), and a timer's effects come from a table. The
transport, codec and hooks are recorders that write into one ordered log, so a test can check
what the driver did and in which order: timers at exact virtual times, persist before any send
of a step, one encoding per message, and the error policy (a peer's bad input is counted, any
other exception stops this driver only and never raises out of ``run``).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio
import trio.testing

from p2pnode.machine_driver import MachineDriver, Timers
from p2pnode_protocols.machine import (
    Broadcast,
    CancelTimer,
    Effect,
    Event,
    LocalProtocolError,
    Notify,
    Persist,
    RemoteProtocolError,
    Send,
    SetTimer,
    TimerFired,
)

pytestmark = pytest.mark.timeout(10)

ME, P1, P2, P3 = b"me", b"p1", b"p2", b"p3"


@dataclass(frozen=True, slots=True, kw_only=True)
class Poke(Event):
    """Scripted input: the machine returns ``effects``, or raises ``raises``."""

    effects: tuple[Effect, ...] = ()
    raises: Exception | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class News(Notify):
    what: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Strange(Effect):
    """An effect no driver knows how to carry out."""


class Refused(RemoteProtocolError):
    def __init__(self, msg: str, reason: str | None) -> None:
        super().__init__(msg)
        self.reason = reason


class FakeMachine:
    def __init__(self, on_timer: dict[Hashable, Sequence[Effect]] | None = None) -> None:
        self.on_timer = on_timer or {}
        #: Every event handed to the machine, with the ``now`` it came with.
        self.seen: list[tuple[Event, float]] = []

    def handle(self, event: Event, now: float) -> list[Effect]:
        self.seen.append((event, now))
        if isinstance(event, Poke):
            if event.raises is not None:
                raise event.raises
            return list(event.effects)
        if isinstance(event, TimerFired):
            return list(self.on_timer.get(event.key, ()))
        return []

    def fired(self) -> list[tuple[Hashable, int, float]]:
        return [(e.key, e.generation, now) for e, now in self.seen if isinstance(e, TimerFired)]


@dataclass
class Rig:
    """The driver's surroundings, recording every call into one ordered ``log``."""

    machine: FakeMachine = field(default_factory=FakeMachine)
    log: list[tuple[Any, ...]] = field(default_factory=list)
    encodes: int = 0
    accept: bool = True
    persist_fails: bool = False
    group: tuple[bytes, ...] = (ME, P1, P2, P3)

    def driver(self, *, persist: bool = True, group: bool = True, **kw: Any) -> MachineDriver:
        return MachineDriver(
            self.machine,
            name="fake",
            send=self._send,
            encode=self._encode,
            me=ME,
            group=(lambda: self.group) if group else None,
            notify=self._notify,
            persist=self._persist if persist else None,
            **kw,
        )

    def _send(self, to: bytes, data: bytes) -> bool:
        self.log.append(("send", to, data))
        return self.accept

    def _encode(self, msg: object) -> bytes:
        self.encodes += 1
        return f"<{msg}>".encode()

    def _notify(self, e: Notify) -> None:
        self.log.append(("notify", e))

    def _persist(self, effects: Sequence[Effect]) -> None:
        self.log.append(("persist", tuple(effects)))
        if self.persist_fails:
            raise OSError("disk full")

    def kinds(self) -> list[str]:
        return [entry[0] for entry in self.log]


async def idle() -> None:
    """Until every other task waits (the driver has carried out all it could), with no
    virtual time passing: ``wait_all_tasks_blocked`` takes priority over the autojump."""
    await trio.testing.wait_all_tasks_blocked()


# -- timers ------------------------------------------------------------------------------------


async def test_timers_fire_in_deadline_order_at_exact_virtual_times(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rig = Rig()
    driver = rig.driver()
    timers = (
        SetTimer(key="late", at=3.0, generation=1),
        SetTimer(key="early", at=1.0, generation=1),
        SetTimer(key="mid", at=2.5, generation=7),
        # Ties fire in the order they were set.
        SetTimer(key="tie-1", at=4.0, generation=1),
        SetTimer(key="tie-0", at=4.0, generation=1),
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(driver.run, Poke(effects=timers))
        assert len(driver.timers) == 5
        await trio.sleep(10)
        assert rig.machine.fired() == [
            ("early", 1, 1.0),
            ("mid", 7, 2.5),
            ("late", 1, 3.0),
            ("tie-1", 1, 4.0),
            ("tie-0", 1, 4.0),
        ]
        assert len(driver.timers) == 0
        # A deadline already past fires at the next step, with that step's time.
        driver.submit(Poke(effects=(SetTimer(key="past", at=1.0, generation=1),)))
        await idle()
        assert rig.machine.fired()[-1] == ("past", 1, 10.0)
        nursery.cancel_scope.cancel()


async def test_a_timer_set_from_a_timer_fires_at_its_own_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A periodic timer: each firing sets the next one, as PBFT's status tick does.
    rig = Rig(machine=FakeMachine(on_timer={"tick": (SetTimer(key="tock", at=1.5, generation=2),)}))
    driver = rig.driver()
    async with trio.open_nursery() as nursery:
        await nursery.start(driver.run, Poke(effects=(SetTimer(key="tick", at=0.5, generation=1),)))
        await trio.sleep(5)
        assert rig.machine.fired() == [("tick", 1, 0.5), ("tock", 2, 1.5)]
        nursery.cancel_scope.cancel()


async def test_replaced_and_cancelled_timers_do_not_fire(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rig = Rig()
    driver = rig.driver()
    effects = (
        SetTimer(key="moved-later", at=1.0, generation=1),
        SetTimer(key="moved-later", at=2.0, generation=2),
        SetTimer(key="moved-earlier", at=4.0, generation=1),
        SetTimer(key="moved-earlier", at=0.5, generation=2),
        SetTimer(key="cancelled", at=1.5, generation=1),
        CancelTimer(key="cancelled", generation=1),
        SetTimer(key="kept", at=3.0, generation=1),
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(driver.run, Poke(effects=effects))
        assert len(driver.timers) == 3
        # Cancelled in a later step, before it is due.
        await trio.sleep(2.5)
        driver.submit(Poke(effects=(CancelTimer(key="kept", generation=1),)))
        await trio.sleep(10)
        assert rig.machine.fired() == [("moved-earlier", 2, 0.5), ("moved-later", 2, 2.0)]
        assert len(driver.timers) == 0
        nursery.cancel_scope.cancel()


def test_timer_heap_stays_bounded_when_one_key_is_reset_again_and_again() -> None:
    timers = Timers()
    for i in range(10_000):
        timers.set("status", float(i), i)
    assert len(timers) == 1
    # The documented bound: twice the live timers plus a constant (stale entries are dropped).
    assert len(timers._heap) <= 2 * len(timers) + 64 + 1
    assert timers.next_deadline() == 9999.0
    assert timers.pop_due(10_000.0) == [TimerFired(key="status", generation=9999)]


# -- durable before visible --------------------------------------------------------------------


async def test_persist_hook_sees_the_whole_step_before_anything_is_carried_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rig = Rig()
    driver = rig.driver(drain=8)
    first = Poke(effects=(Send(to=P1, msg="early"), Persist(state="s1"), News(what="n1")))
    second = Poke(effects=(Persist(state="s2"), Broadcast(msg="vote"), News(what="n2")))
    async with trio.open_nursery() as nursery:
        await nursery.start(driver.run)
        # Queued before the driver runs again: one step (drain=8), one persist for both.
        assert driver.submit(first) and driver.submit(second)
        await idle()
        assert rig.kinds() == ["persist", "send", "notify", "send", "send", "send", "notify"]
        assert rig.log[0] == ("persist", first.effects + second.effects)
        assert [e[1] for e in rig.log if e[0] == "send"] == [P1, P1, P2, P3]
        assert [e[1].what for e in rig.log if e[0] == "notify"] == ["n1", "n2"]
        # A step without Persist is still shown to the hook first (a commit may need writing).
        rig.log.clear()
        driver.submit(Poke(effects=(Send(to=P2, msg="m"),)))
        await idle()
        assert rig.kinds() == ["persist", "send"]
        # A step without effects does not call it.
        rig.log.clear()
        driver.submit(Poke())
        await idle()
        assert rig.log == []
        nursery.cancel_scope.cancel()


async def test_persist_hook_failure_stops_the_driver_and_nothing_of_the_step_goes_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rig = Rig(persist_fails=True)
    driver = rig.driver()
    step = Poke(
        effects=(
            Send(to=P1, msg="before"),
            Persist(state="s"),
            Broadcast(msg="after"),
            SetTimer(key="t", at=1.0, generation=1),
            News(what="n"),
        )
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(driver.run)
        driver.submit(step)
        with trio.fail_after(1):
            await driver.wait_stopped()
        await trio.sleep(5)
    assert rig.kinds() == ["persist"]  # no send, no notify
    assert len(driver.timers) == 0
    assert rig.machine.fired() == []
    assert driver.state == "stopped"
    assert driver.error == "OSError: disk full"


# -- encoding and sending ----------------------------------------------------------------------


async def test_a_message_is_encoded_once_per_step_and_broadcast_skips_me(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rig = Rig()
    driver = rig.driver()
    vote = ("vote", 1)
    async with trio.open_nursery() as nursery:
        await nursery.start(driver.run)
        driver.submit(Poke(effects=(Broadcast(msg=vote), Send(to=P2, msg=vote))))
        await idle()
        assert rig.encodes == 1
        sends = [e for e in rig.log if e[0] == "send"]
        assert [to for _, to, _ in sends] == [P1, P2, P3, P2]
        assert len({id(data) for _, _, data in sends}) == 1  # the same bytes, not copies
        assert sends[0][2] == b"<('vote', 1)>"
        # Dropped sends are counted, and the driver goes on.
        rig.accept = False
        driver.submit(Poke(effects=(Broadcast(msg="x"),)))
        await idle()
        assert driver.counters["send_dropped"] == 3
        assert driver.state == "running"
        nursery.cancel_scope.cancel()


# -- the inbox ---------------------------------------------------------------------------------


async def test_inbox_overflow_is_counted_and_dropped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rig = Rig()
    driver = rig.driver(inbox_size=2)
    pokes = [Poke(effects=(Send(to=P1, msg=i),)) for i in range(3)]
    assert driver.state == "starting"
    assert [driver.submit(p) for p in pokes] == [True, True, False]
    assert driver.counters["dropped_inbox_full"] == 1
    async with trio.open_nursery() as nursery:
        await nursery.start(driver.run)
        assert driver.state == "running"
        await idle()
        assert [e for e, _now in rig.machine.seen] == pokes[:2]
        assert driver.submit(pokes[2])
        await idle()
        assert [e for e, _now in rig.machine.seen] == pokes
        nursery.cancel_scope.cancel()
    # Cancelled with its service: not running, and not stopped by a bug either.
    assert driver.state == "ended"
    assert driver.error is None


# -- the error policy ----------------------------------------------------------------------------


async def test_remote_protocol_error_is_counted_with_its_reason_and_the_driver_goes_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rig = Rig()
    driver = rig.driver(drain=8)
    async with trio.open_nursery() as nursery:
        await nursery.start(driver.run)
        driver.submit(Poke(raises=Refused("forged", "bad_signature")))
        driver.submit(Poke(effects=(Send(to=P1, msg="same step"),)))
        driver.submit(Poke(raises=Refused("odd", None)))
        await idle()
        assert driver.counters["refused"] == 2
        assert driver.counters["refused_bad_signature"] == 1
        # The refused events changed nothing; the good one in the same step went out.
        assert rig.kinds() == ["persist", "send"]
        assert (driver.state, driver.error) == ("running", None)
        assert driver.submit(Poke(effects=(Send(to=P2, msg="later"),)))
        await idle()
        assert rig.log[-1][:2] == ("send", P2)
        nursery.cancel_scope.cancel()


BUGS = {
    "machine raises": (Poke(raises=KeyError("slot")), "KeyError: 'slot'"),
    "machine raises LocalProtocolError": (
        Poke(raises=LocalProtocolError("views never go back")),
        "LocalProtocolError: views never go back",
    ),
    "unknown effect": (Poke(effects=(Strange(),)), "LocalProtocolError: fake: no way to carry"),
}


@pytest.mark.parametrize("bug", list(BUGS))
async def test_a_bug_stops_the_driver_without_raising_out_of_run(
    autojump_clock: trio.testing.MockClock, bug: str
) -> None:
    rig = Rig()
    driver = rig.driver()
    poke, error = BUGS[bug]
    async with trio.open_nursery() as nursery:
        await nursery.start(driver.run, Poke(effects=(SetTimer(key="t", at=5.0, generation=1),)))
        assert driver.submit(poke)
        with trio.fail_after(1):
            await driver.wait_stopped()
        # run returned by itself (the nursery has nothing left to wait for) and raised nothing.
        await idle()
        assert not nursery.child_tasks
    assert driver.state == "stopped"
    assert driver.running is False
    assert driver.error is not None and driver.error.startswith(error)
    assert driver.counters["stopped_by_bug"] == 1
    assert driver.submit(Poke()) is False
    assert rig.machine.fired() == []  # the timer never fires: nothing runs the machine


@pytest.mark.parametrize(
    ("effect", "kw", "error"),
    [
        (Persist(state="s"), {"persist": False}, "Persist without a persist hook"),
        (Broadcast(msg="m"), {"group": False}, "Broadcast without a group"),
    ],
)
async def test_an_effect_the_service_cannot_carry_out_stops_the_driver(
    autojump_clock: trio.testing.MockClock, effect: Effect, kw: dict[str, bool], error: str
) -> None:
    rig = Rig()
    driver = rig.driver(**kw)
    async with trio.open_nursery() as nursery:
        await nursery.start(driver.run)
        driver.submit(Poke(effects=(effect, Send(to=P1, msg="after"))))
        with trio.fail_after(1):
            await driver.wait_stopped()
    assert driver.error is not None and error in driver.error
    assert "send" not in rig.kinds()  # nothing after the bad effect was carried out


async def test_a_bug_in_a_batch_keeps_what_came_before_it_as_unbatched_steps_would(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rig = Rig()
    driver = rig.driver(drain=8)
    ok = Poke(effects=(Persist(state="s"), Send(to=P1, msg="ok")))
    after = Poke(effects=(Send(to=P2, msg="never"),))
    async with trio.open_nursery() as nursery:
        await nursery.start(driver.run)
        driver.submit(ok)
        driver.submit(Poke(raises=RuntimeError("bug")))
        driver.submit(after)
        with trio.fail_after(1):
            await driver.wait_stopped()
    # With drain=1 ``ok`` would have gone out in a step of its own before the bug: batching
    # must not change that. The event after the bug never reaches the machine.
    assert rig.log == [("persist", ok.effects), ("send", P1, b"<ok>")]
    assert after not in [e for e, _now in rig.machine.seen]


async def test_a_bug_in_the_start_up_event_stops_the_driver_before_started(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rig = Rig()
    driver = rig.driver()
    async with trio.open_nursery() as nursery:
        await nursery.start(driver.run, Poke(raises=ValueError("bad durable state")))
    assert driver.state == "stopped"
    assert driver.error == "ValueError: bad durable state"
    with trio.fail_after(1):
        await driver.wait_stopped()


def test_driver_refuses_a_zero_inbox_or_drain() -> None:
    with pytest.raises(ValueError):
        Rig().driver(inbox_size=0)
    with pytest.raises(ValueError):
        Rig().driver(drain=0)
