"""The transition tables alone (h11's test_state.py habit): no messages, no bytes."""

from __future__ import annotations

import itertools

import pytest

from p2pnode_protocols.pbft import LocalProtocolError
from p2pnode_protocols.pbft.state import (
    REPLICA_TRANSITIONS,
    SLOT_TRANSITIONS,
    ReplicaStatus,
    ReplicaTrigger,
    SlotPhase,
    SlotTrigger,
    next_replica_status,
    next_slot_phase,
)

pytestmark = pytest.mark.timeout(10)


def test_every_listed_replica_transition_applies() -> None:
    for (status, trigger), nxt in REPLICA_TRANSITIONS.items():
        assert next_replica_status(status, trigger) is nxt


def test_missing_replica_pairs_raise() -> None:
    for status, trigger in itertools.product(ReplicaStatus, ReplicaTrigger):
        if (status, trigger) not in REPLICA_TRANSITIONS:
            with pytest.raises(LocalProtocolError):
                next_replica_status(status, trigger)


def test_forbidden_replica_moves() -> None:
    # An ERROR replica never comes back, and nobody boots twice.
    for trigger in ReplicaTrigger:
        if trigger is not ReplicaTrigger.FAIL:
            assert (ReplicaStatus.ERROR, trigger) not in REPLICA_TRANSITIONS
    assert (ReplicaStatus.NORMAL, ReplicaTrigger.BOOT_NORMAL) not in REPLICA_TRANSITIONS
    assert (ReplicaStatus.INIT, ReplicaTrigger.ENTER_VIEW) not in REPLICA_TRANSITIONS


def test_slot_phases_only_move_forward_within_a_view() -> None:
    order = [SlotPhase.EMPTY, SlotPhase.PRE_PREPARED, SlotPhase.PREPARED, SlotPhase.COMMITTED]
    for (phase, trigger), nxt in SLOT_TRANSITIONS.items():
        assert next_slot_phase(phase, trigger) is nxt
        if trigger is SlotTrigger.NEW_VIEW:
            assert nxt is SlotPhase.EMPTY
        else:
            assert order.index(nxt) > order.index(phase)


def test_missing_slot_pairs_raise() -> None:
    for phase, trigger in itertools.product(SlotPhase, SlotTrigger):
        if (phase, trigger) not in SLOT_TRANSITIONS:
            with pytest.raises(LocalProtocolError):
                next_slot_phase(phase, trigger)
    # A pre-prepare is never accepted twice for one slot in one view.
    assert (SlotPhase.PREPARED, SlotTrigger.ACCEPT_PRE_PREPARE) not in SLOT_TRANSITIONS
