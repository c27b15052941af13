"""All of the replica's and a log slot's state transitions, as data (h11's ``_state.py`` habit).

``REPLICA_TRANSITIONS`` maps (status, trigger) to the next status; ``SLOT_TRANSITIONS`` does the
same for one sequence number's progress within a view. A pair that is not in a table is a bug in
the machine and raises ``LocalProtocolError``: the tables say what is allowed *and*, by omission,
what is forbidden. Neither table knows which replica is primary: that is the machine's business.
"""

from __future__ import annotations

from enum import Enum

from .errors import LocalProtocolError

__all__ = [
    "REPLICA_TRANSITIONS",
    "SLOT_TRANSITIONS",
    "ReplicaStatus",
    "ReplicaTrigger",
    "SlotPhase",
    "SlotTrigger",
    "next_replica_status",
    "next_slot_phase",
]


class ReplicaStatus(Enum):
    #: Constructed; waits for ``Restarted`` (fresh or with durable state).
    INIT = "init"
    #: In a view with a primary: the normal case (pre-prepare, prepare, commit).
    NORMAL = "normal"
    #: Has sent a view change for ``view`` and waits for its new view.
    VIEW_CHANGE = "view_change"
    #: A local bug was hit; every later call fails at once.
    ERROR = "error"


class ReplicaTrigger(Enum):
    #: ``Restarted`` with no durable state or with state saved in the normal case.
    BOOT_NORMAL = "boot_normal"
    #: ``Restarted`` with durable state saved during a view change.
    BOOT_VIEW_CHANGE = "boot_view_change"
    #: A timer fired or f+1 peers moved on: send a view change for a higher view.
    START_VIEW_CHANGE = "start_view_change"
    #: A valid new view (received, or built as primary) for a view >= ours.
    ENTER_VIEW = "enter_view"
    #: A local bug.
    FAIL = "fail"


REPLICA_TRANSITIONS: dict[tuple[ReplicaStatus, ReplicaTrigger], ReplicaStatus] = {
    (ReplicaStatus.INIT, ReplicaTrigger.BOOT_NORMAL): ReplicaStatus.NORMAL,
    (ReplicaStatus.INIT, ReplicaTrigger.BOOT_VIEW_CHANGE): ReplicaStatus.VIEW_CHANGE,
    (ReplicaStatus.NORMAL, ReplicaTrigger.START_VIEW_CHANGE): ReplicaStatus.VIEW_CHANGE,
    # Escalation: the new primary failed too, or f+1 peers are already further on.
    (ReplicaStatus.VIEW_CHANGE, ReplicaTrigger.START_VIEW_CHANGE): ReplicaStatus.VIEW_CHANGE,
    (ReplicaStatus.VIEW_CHANGE, ReplicaTrigger.ENTER_VIEW): ReplicaStatus.NORMAL,
    # A replica that missed a whole view change catches up from a later new view.
    (ReplicaStatus.NORMAL, ReplicaTrigger.ENTER_VIEW): ReplicaStatus.NORMAL,
    (ReplicaStatus.INIT, ReplicaTrigger.FAIL): ReplicaStatus.ERROR,
    (ReplicaStatus.NORMAL, ReplicaTrigger.FAIL): ReplicaStatus.ERROR,
    (ReplicaStatus.VIEW_CHANGE, ReplicaTrigger.FAIL): ReplicaStatus.ERROR,
    (ReplicaStatus.ERROR, ReplicaTrigger.FAIL): ReplicaStatus.ERROR,
}


class SlotPhase(Enum):
    #: Nothing accepted for this sequence number in the current view.
    EMPTY = "empty"
    #: A pre-prepare from the view's primary is accepted (and our prepare sent).
    PRE_PREPARED = "pre_prepared"
    #: 2f matching prepares: our commit is sent.
    PREPARED = "prepared"
    #: 2f+1 matching commits: the entry has a certificate and waits for its turn to execute.
    COMMITTED = "committed"


class SlotTrigger(Enum):
    ACCEPT_PRE_PREPARE = "accept_pre_prepare"
    PREPARE_QUORUM = "prepare_quorum"
    COMMIT_QUORUM = "commit_quorum"
    #: The view changed: per-view votes are dropped (a prepared proof is kept aside).
    NEW_VIEW = "new_view"


SLOT_TRANSITIONS: dict[tuple[SlotPhase, SlotTrigger], SlotPhase] = {
    (SlotPhase.EMPTY, SlotTrigger.ACCEPT_PRE_PREPARE): SlotPhase.PRE_PREPARED,
    (SlotPhase.PRE_PREPARED, SlotTrigger.PREPARE_QUORUM): SlotPhase.PREPARED,
    (SlotPhase.PREPARED, SlotTrigger.COMMIT_QUORUM): SlotPhase.COMMITTED,
    # 2f+1 commits imply f+1 correct replicas prepared: commit without our own prepare quorum.
    (SlotPhase.PRE_PREPARED, SlotTrigger.COMMIT_QUORUM): SlotPhase.COMMITTED,
    (SlotPhase.EMPTY, SlotTrigger.NEW_VIEW): SlotPhase.EMPTY,
    (SlotPhase.PRE_PREPARED, SlotTrigger.NEW_VIEW): SlotPhase.EMPTY,
    (SlotPhase.PREPARED, SlotTrigger.NEW_VIEW): SlotPhase.EMPTY,
    # A committed slot keeps its certificate; the new view may re-run the same digest.
    (SlotPhase.COMMITTED, SlotTrigger.NEW_VIEW): SlotPhase.EMPTY,
}


def next_replica_status(status: ReplicaStatus, trigger: ReplicaTrigger) -> ReplicaStatus:
    try:
        return REPLICA_TRANSITIONS[(status, trigger)]
    except KeyError:
        raise LocalProtocolError(f"no replica transition from {status} on {trigger}") from None


def next_slot_phase(phase: SlotPhase, trigger: SlotTrigger) -> SlotPhase:
    try:
        return SLOT_TRANSITIONS[(phase, trigger)]
    except KeyError:
        raise LocalProtocolError(f"no slot transition from {phase} on {trigger}") from None
