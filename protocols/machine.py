"""The vocabulary every sans-I/O machine in ``protocols/`` speaks.

A machine is an object with ``handle(event, now) -> list[Effect]``: it never reads a clock, a
socket or global randomness. The inputs and effects that every protocol shares live here, so the
daemon runs every machine on one driver (:mod:`p2pnode.machines.driver`) and the simulator on
one interpreter:

- inputs: :class:`MessageReceived` (a decoded message from the peer the transport
  authenticated) and :class:`TimerFired`;
- effects: :class:`Send` and :class:`Broadcast` (to the machine's group), :class:`SetTimer` and
  :class:`CancelTimer`, :class:`Persist` (make this durable before anything after it is carried
  out), and :class:`Notify`, the base of every effect that is news for users (a commit, a member
  that died) rather than an instruction to the transport.

A protocol adds its own inputs (subclasses of :class:`Event`) and its own notifications
(subclasses of :class:`Notify`); it does not redefine these. All are frozen, slotted,
keyword-only dataclasses that check their fields on construction.

Errors are split by blame, as in h11: :class:`LocalProtocolError` is a bug on this node (our
caller or our own code asked for something illegal); :class:`RemoteProtocolError` means a peer
sent something we must refuse, and is raised only at the decode/handle boundary. A protocol's
own errors subclass these, so a driver tells blame apart without knowing the protocol.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "Broadcast",
    "CancelTimer",
    "Effect",
    "Event",
    "LocalProtocolError",
    "Machine",
    "MessageReceived",
    "Notify",
    "Persist",
    "ProtocolError",
    "RemoteProtocolError",
    "Send",
    "SetTimer",
    "TimerFired",
]


# -- errors -----------------------------------------------------------------------------------


class ProtocolError(Exception):
    """Abstract base of every protocol error. ``reply_hint`` names what, if anything, is worth
    sending back to the peer (a message type name), or None for nothing."""

    def __init__(self, msg: str, *, reply_hint: str | None = None) -> None:
        super().__init__(msg)
        self.reply_hint = reply_hint


class LocalProtocolError(ProtocolError):
    """We (or our caller) broke the protocol: a bug on this node, never the peer's fault."""


class RemoteProtocolError(ProtocolError):
    """A peer sent something malformed, unsigned, forged, stale or out of bounds."""


# -- inputs -----------------------------------------------------------------------------------


class Event:
    """Empty base of every input to a machine."""

    __slots__ = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageReceived(Event):
    """``msg`` (already decoded, its size bounded) arrived from ``sender``, the peer the
    transport authenticated."""

    sender: bytes
    msg: object

    def __post_init__(self) -> None:
        if type(self.sender) is not bytes:
            raise LocalProtocolError("MessageReceived needs the sender's id as bytes")


@dataclass(frozen=True, slots=True, kw_only=True)
class TimerFired(Event):
    """The timer ``key`` set with ``generation`` is due. A machine ignores a generation that is
    no longer current, so a late or duplicate firing is harmless."""

    key: Hashable
    generation: int

    def __post_init__(self) -> None:
        if type(self.generation) is not int:
            raise LocalProtocolError("TimerFired needs an int generation")


# -- effects ----------------------------------------------------------------------------------


class Effect:
    """Empty base of every effect a machine returns."""

    __slots__ = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Send(Effect):
    """Send ``msg`` to the peer ``to`` (best effort: the protocol's timers cover a loss)."""

    to: bytes
    msg: object


@dataclass(frozen=True, slots=True, kw_only=True)
class Broadcast(Effect):
    """Send ``msg`` to every other member of the machine's group (PBFT: the committee)."""

    msg: object


@dataclass(frozen=True, slots=True, kw_only=True)
class SetTimer(Effect):
    """Deliver ``TimerFired(key, generation)`` at ``at``; replaces any timer with that key."""

    key: Hashable
    at: float
    generation: int

    def __post_init__(self) -> None:
        if math.isnan(self.at):
            raise LocalProtocolError("timer deadline is NaN")


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelTimer(Effect):
    """Forget the timer ``key`` (if it already fired, its stale generation is ignored)."""

    key: Hashable
    generation: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Persist(Effect):
    """Make ``state`` durable before carrying out any effect after this one: a machine must
    never let a peer see what it could forget in a crash. Each ``Persist`` holds the whole
    durable state, so the last one of a step supersedes the earlier ones."""

    state: object


class Notify(Effect):
    """Base of the effects that are news for users and other services (a committed entry, a
    member declared dead), not instructions to the transport. The driver hands them to the
    service, in order, after the step's ``Persist`` is durable."""

    __slots__ = ()


# -- the machine ------------------------------------------------------------------------------


class Machine(Protocol):
    """What a driver needs of a machine: one entry point, time passed in."""

    def handle(self, event: Event, now: float) -> list[Effect]: ...
