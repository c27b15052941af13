"""SWIM membership with Lifeguard, sans I/O: ``Membership.handle(event, now) -> list[Effect]``.

Modules: ``config`` (knobs and memberlist's formulas), ``state`` (statuses and the incarnation
table), ``suspicion`` and ``awareness`` (Lifeguard), ``broadcast_queue`` (the piggyback),
``detector`` (phi accrual and reliability), ``table`` (members, copy-on-write), ``messages`` and
``codec`` (the wire), ``signing``, ``events``, and the machine: ``machine`` (``Membership``, the
entry point) assembled from ``core`` (shared state), ``probing`` and ``targets`` (the failure
detector), ``dissemination`` (piggyback, gossip, applying updates) and ``sync`` (push-pull
anti-entropy). See docs/membership.md.
"""

from .awareness import Awareness
from .broadcast_queue import BroadcastQueue
from .codec import decode_packet, encode_packet, packet_size, update_size
from .config import HeartbeatConfig, remaining_suspicion_time, retransmit_limit, suspicion_timeout
from .detector import PhiAccrual, Reliability
from .errors import HeartbeatError, LocalProtocolError, RemoteProtocolError
from .events import (
    ChangeKind,
    Effect,
    Event,
    LocalStateChanged,
    MemberChanged,
    MessageReceived,
    PeerDisconnected,
    PeerDiscovered,
    Send,
    SetTimer,
    Started,
    TaskOutcome,
    TimerFired,
    TimerKind,
)
from .machine import Membership, MemberView
from .messages import Alive, Dead, NodeState, Packet, PacketKind, Suspect, Update
from .signing import KeyedHashSigner, KeyedHashVerifier, Signer, Verifier
from .state import MemberStatus, UpdateKind
from .suspicion import Suspicion
from .table import Member, MemberBase, MemberTable

__all__ = [
    "Alive",
    "Awareness",
    "BroadcastQueue",
    "ChangeKind",
    "Dead",
    "Effect",
    "Event",
    "HeartbeatConfig",
    "HeartbeatError",
    "KeyedHashSigner",
    "KeyedHashVerifier",
    "LocalProtocolError",
    "LocalStateChanged",
    "Member",
    "MemberBase",
    "MemberChanged",
    "MemberStatus",
    "MemberTable",
    "MemberView",
    "Membership",
    "MessageReceived",
    "NodeState",
    "Packet",
    "PacketKind",
    "PeerDisconnected",
    "PeerDiscovered",
    "PhiAccrual",
    "Reliability",
    "RemoteProtocolError",
    "Send",
    "SetTimer",
    "Signer",
    "Started",
    "Suspect",
    "Suspicion",
    "TaskOutcome",
    "TimerFired",
    "TimerKind",
    "Update",
    "UpdateKind",
    "Verifier",
    "decode_packet",
    "encode_packet",
    "packet_size",
    "remaining_suspicion_time",
    "retransmit_limit",
    "suspicion_timeout",
    "update_size",
]
