"""Inputs to ``Membership.handle`` and the effects it returns.

Inputs: ``Started``, ``PacketReceived``, ``TimerFired``, ``PeerDiscovered`` (the transport met a
peer that speaks the protocol), ``PeerDisconnected`` (the transport lost its connection: probe
it now rather than when the round robin comes to it), ``LocalStateChanged``, ``TaskOutcome``.
Effects: ``Send``, ``SetTimer`` (a ``TimerFired`` whose generation is no longer current is
ignored, so there is no cancel) and ``MemberChanged``. All are frozen, slotted, keyword-only.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from .errors import LocalProtocolError
from .messages import Alive, NodeState, Packet
from .state import MemberStatus

__all__ = [
    "ChangeKind",
    "Effect",
    "Event",
    "LocalStateChanged",
    "MemberChanged",
    "PacketReceived",
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


# -- inputs -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Started:
    #: Queue our own alive record for gossip (a (re)joining node announces itself).
    announce: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class PacketReceived:
    #: The peer the transport authenticated (the libp2p stream's remote peer).
    sender: bytes
    packet: Packet


@dataclass(frozen=True, slots=True, kw_only=True)
class TimerFired:
    key: tuple[TimerKind, object]
    generation: int


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerDiscovered:
    node: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerDisconnected:
    node: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalStateChanged:
    state: NodeState


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskOutcome:
    node: bytes
    success: bool


Event = Started | PacketReceived | TimerFired | PeerDiscovered | PeerDisconnected
Event = Event | LocalStateChanged | TaskOutcome


# -- effects ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Send:
    to: bytes
    packet: Packet


@dataclass(frozen=True, slots=True, kw_only=True)
class SetTimer:
    key: tuple[TimerKind, object]
    at: float
    generation: int

    def __post_init__(self) -> None:
        if not self.at == self.at:  # NaN
            raise LocalProtocolError("timer deadline is NaN")


class ChangeKind(Enum):
    JOIN = "join"
    SUSPECT = "suspect"
    DEAD = "dead"
    RECOVERED = "recovered"
    STATE = "state"


@dataclass(frozen=True, slots=True, kw_only=True)
class MemberChanged:
    kind: ChangeKind
    node: bytes
    incarnation: int
    status: MemberStatus
    #: The member's current alive record (its node state), if known.
    alive: Alive | None
    #: Who accused it (SUSPECT, DEAD), else empty.
    accuser: bytes = b""


Effect = Send | SetTimer | MemberChanged
