"""Inputs to ``Replica.handle`` and the effects it returns, plus the durable state record.

The shared vocabulary (``MessageReceived``, ``TimerFired``, ``Send``, ``Broadcast``, ``SetTimer``,
``CancelTimer``, ``Persist``) is :mod:`p2pnode_protocols.machine`'s, re-exported here; PBFT adds the
inputs ``ClientRequest``, ``PrimarySuspected`` and ``Restarted`` and the notifications
``Commit``, ``StateInstalled``, ``Evidence`` and ``ViewEntered``. Effects are values for the
caller to carry out *in order*: ``Persist`` (holding a :class:`DurableState`) always comes
first when present, and the caller must make it durable before it carries out anything after
it (a replica must never forget a vote it may have sent). All are frozen, slotted,
keyword-only dataclasses.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from ..machine import (
    Broadcast,
    CancelTimer,
    Effect,
    Event,
    MessageReceived,
    Notify,
    Persist,
    Send,
    SetTimer,
    TimerFired,
)
from .errors import LocalProtocolError
from .messages import (
    Certificate,
    CertifiedEntry,
    Entry,
    Message,
    NewView,
    PreparedProof,
    PrePrepare,
    Request,
    StableCheckpoint,
    ViewChange,
)
from .statemachine import TxResult

__all__ = [
    "Broadcast",
    "CancelTimer",
    "ClientRequest",
    "Commit",
    "DurableSlot",
    "DurableState",
    "Effect",
    "Event",
    "Evidence",
    "MessageReceived",
    "Notify",
    "Persist",
    "PrimarySuspected",
    "Restarted",
    "Send",
    "SetTimer",
    "StateInstalled",
    "TimerFired",
    "TimerKey",
    "ViewEntered",
]


class TimerKey(Enum):
    #: Periodic: broadcast ``Status`` and retransmit what is in flight.
    STATUS = "status"
    #: A request waits without progress: suspect the primary.
    REQUEST = "request"
    #: 2f+1 view changes are in but the new view has not come: try the next view.
    VIEW_CHANGE = "view_change"


# -- durable state ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class DurableSlot:
    """What one sequence number must remember across a crash."""

    seq: int
    #: The view of ``pre_prepare`` (accepted there: we sent a prepare, or proposed it).
    view: int
    pre_prepare: PrePrepare | None
    #: The highest-view prepared proof, carried into view changes.
    prepared: PreparedProof | None
    #: We sent a commit vote in ``view``.
    sent_commit: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class DurableState:
    """Everything a replica needs after ``kill -9`` to stay safe and catch up."""

    view: int
    in_view_change: bool
    #: Our view change for ``view`` (resent after restart, never contradicted).
    view_change: ViewChange | None
    #: The new view that started ``view`` (forwarded to replicas that missed it).
    new_view: NewView | None
    stable: StableCheckpoint
    slots: tuple[DurableSlot, ...]
    #: Certified entries above the stable checkpoint (executed or waiting to execute).
    certified: tuple[CertifiedEntry, ...]


# -- inputs (the shared ones are p2pnode_protocols.machine's) --------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientRequest(Event):
    """A signed request submitted on this node (the daemon's IPC): validated and broadcast."""

    request: Request

    def __post_init__(self) -> None:
        if type(self.request) is not Request:
            raise LocalProtocolError("ClientRequest needs a Request")


@dataclass(frozen=True, slots=True, kw_only=True)
class PrimarySuspected(Event):
    """The failure detector (membership) declared ``node`` dead. If ``node`` is the primary of
    this replica's view, it starts a view change now rather than when a request times out, so
    the next submission does not pay for it. A wrong accusation costs a view change, never
    safety: the new view still needs 2f+1 replicas to leave the old one."""

    node: bytes

    def __post_init__(self) -> None:
        if type(self.node) is not bytes:
            raise LocalProtocolError("PrimarySuspected needs a node id as bytes")


@dataclass(frozen=True, slots=True, kw_only=True)
class Restarted(Event):
    """Boot: ``durable`` is None on first start, else what the last ``Persist`` carried."""

    durable: DurableState | None

    def __post_init__(self) -> None:
        if self.durable is not None and type(self.durable) is not DurableState:
            raise LocalProtocolError("Restarted needs a DurableState or None")


# -- notifications (the transport and timer effects are p2pnode_protocols.machine's) ---------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Commit(Notify):
    """Entry ``seq`` is committed and executed (in order). May repeat after a restart with the
    same value: the caller's log writer must be idempotent per seq."""

    seq: int
    entry: Entry
    certificate: Certificate
    results: tuple[TxResult, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class StateInstalled(Notify):
    """Execution resumes from stable checkpoint ``seq``: after a state transfer, or on restart
    from durable state (a crash between ``Persist`` and the ``Commit`` effects after it can
    lose Commits that the checkpoint covers). Entries up to ``seq`` that the caller's log lacks
    must be fetched with their certificates if the local log must be complete."""

    seq: int
    state_digest: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Evidence(Notify):
    """Two validly signed, conflicting messages from ``offender`` (see ``certificates``)."""

    offender: bytes
    first: Message
    second: Message


@dataclass(frozen=True, slots=True, kw_only=True)
class ViewEntered(Notify):
    """The replica now runs ``view``, whose primary is ``primary``."""

    view: int
    primary: bytes
