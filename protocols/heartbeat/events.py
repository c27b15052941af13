"""Inputs to ``Membership.handle`` and the effects it returns.

The shared vocabulary (``MessageReceived`` carrying a :class:`Packet`, ``TimerFired``, ``Send``,
``SetTimer``) is :mod:`p2pnode_protocols.machine`'s, re-exported here. Membership adds the inputs
``Started`` (with this node's state, listen addresses included, to sign its first alive record),
``PeerDiscovered`` (the transport met a peer that speaks the protocol), ``PeerDisconnected``
(the transport lost its connection: probe it now rather than when the round robin comes to it),
``LocalStateChanged`` and ``TaskOutcome``, and the notification ``MemberChanged``. A
``TimerFired`` whose generation is no longer current is ignored, so membership never cancels a
timer. All are frozen, slotted, keyword-only dataclasses.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from ..machine import Effect, Event, MessageReceived, Notify, Send, SetTimer, TimerFired
from .messages import Alive, NodeState
from .state import MemberStatus

__all__ = [
    "ChangeKind",
    "Effect",
    "Event",
    "LocalStateChanged",
    "MemberChanged",
    "MessageReceived",
    "Notify",
    "PeerDisconnected",
    "PeerDiscovered",
    "Send",
    "SetTimer",
    "Started",
    "TaskOutcome",
    "TimerFired",
    "TimerKind",
]


class TimerKind(Enum):
    PROBE = "probe"  #: periodic: probe the next member
    ACK = "ack"  #: the direct probe's ack is late: ask helpers
    RESEND = "resend"  #: half the probe timeout passed in silence: ping once more
    INDIRECT = "indirect"  #: the probe period is over: suspect the target if still silent
    RELAY = "relay"  #: we probed for someone else and heard nothing: nack
    SUSPICION = "suspicion"  #: a suspect ran out of time: declare it dead
    GOSSIP = "gossip"  #: periodic: send queued broadcasts
    RECONNECT = "reconnect"  #: periodic: probe one dead member, forget the old ones
    STATE = "state"  #: a coalesced change of our own state is due
    PUSH_PULL = "push_pull"  #: periodic: exchange a page of views with one random member
    ROUND_ROBIN = "round_robin"  #: ring every period: the round robin's own probe is due
    FINAL = "final"  #: a suspicion ran out and we pinged the suspect: ping again, or declare


# -- inputs (MessageReceived and TimerFired are p2pnode_protocols.machine's) -----------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Started(Event):
    #: Queue our own alive record for gossip (a (re)joining node announces itself).
    announce: bool = True
    #: This node's state as the service knows it once listening (addresses included): the
    #: machine adopts it and signs its first alive record with it. None keeps the state the
    #: machine was built with.
    state: NodeState | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerDiscovered(Event):
    node: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerDisconnected(Event):
    node: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalStateChanged(Event):
    state: NodeState


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskOutcome(Event):
    node: bytes
    success: bool


# -- notifications (Send and SetTimer are p2pnode_protocols.machine's) -----------------------------


class ChangeKind(Enum):
    JOIN = "join"
    SUSPECT = "suspect"
    DEAD = "dead"
    RECOVERED = "recovered"
    STATE = "state"


@dataclass(frozen=True, slots=True, kw_only=True)
class MemberChanged(Notify):
    kind: ChangeKind
    node: bytes
    incarnation: int
    status: MemberStatus
    #: The member's current alive record (its node state), if known.
    alive: Alive | None
    #: Who accused it (SUSPECT, DEAD), else empty.
    accuser: bytes = b""
