"""Member states and the incarnation rules of SWIM (memberlist's ``aliveNode``, ``suspectNode``,
``deadNode``) as one table.

``TRANSITIONS[(current, update)]`` gives ``(needs, next)``: the update applies only if its
incarnation compares to the known one as ``needs`` says (``"gt"`` strictly newer, ``"ge"`` same
or newer, ``"any"`` for a member we do not know), and the member moves to ``next``; ``next`` of
None means "ignore". Suspecting an already suspect member at the same incarnation is a
*confirmation* (``CONFIRM``). A pair missing from the table is our bug
(:class:`LocalProtocolError`).
"""

from __future__ import annotations

from enum import Enum, IntEnum

from .errors import LocalProtocolError

__all__ = ["CONFIRM", "TRANSITIONS", "MemberStatus", "UpdateKind", "transition"]


class MemberStatus(IntEnum):
    #: Answering probes (or not yet found silent).
    ALIVE = 0
    #: A probe failed; the member has until the suspicion timeout to refute.
    SUSPECT = 1
    #: Declared dead; only a newer incarnation (a restart or a refutation) brings it back.
    DEAD = 2


class UpdateKind(Enum):
    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"


#: Marker ``next`` value: an accusation at the current incarnation of a suspect member.
CONFIRM = "confirm"

_A, _S, _D = MemberStatus.ALIVE, MemberStatus.SUSPECT, MemberStatus.DEAD
_UA, _US, _UD = UpdateKind.ALIVE, UpdateKind.SUSPECT, UpdateKind.DEAD

TRANSITIONS: dict[tuple[MemberStatus | None, UpdateKind], tuple[str, object]] = {
    # Unknown member: only an alive record (signed by the member itself) introduces it.
    (None, _UA): ("any", _A),
    (None, _US): ("any", None),
    (None, _UD): ("any", None),
    (_A, _UA): ("gt", _A),
    (_A, _US): ("ge", _S),
    (_A, _UD): ("ge", _D),
    (_S, _UA): ("gt", _A),
    (_S, _US): ("ge", CONFIRM),  # same incarnation: confirm; newer: a fresh suspicion
    (_S, _UD): ("ge", _D),
    (_D, _UA): ("gt", _A),
    (_D, _US): ("any", None),
    (_D, _UD): ("any", None),
}


def transition(current: MemberStatus | None, known_inc: int, kind: UpdateKind, inc: int) -> object:
    """The next state for an update, or None to ignore it."""
    try:
        needs, nxt = TRANSITIONS[(current, kind)]
    except KeyError:
        raise LocalProtocolError(f"no transition from {current} on {kind}") from None
    if needs == "gt" and not inc > known_inc:
        return None
    if needs == "ge" and not inc >= known_inc:
        return None
    return nxt
