"""The small messages that form and re-form a collective group.

They travel as datagrams between the members' daemons (``/p2pnode/collectives/1.0.0``), never
beside the data: a part of an all-reduce goes on a data stream (:mod:`.wire`).

- :class:`Join`: "I want group G" (with its size, or a minimum and a wait), sent by a peer that
  looks for the group or re-forms it after a failure (``generation``: the last it was in).
- :class:`Formed`: the leader's list of members in rank order for a new generation.
- :class:`Redirect`: "G is formed; its leader is L" to a joiner that asked a member.
- :class:`Abort`: "the operation ``op`` of ``generation`` failed here" (with the peers this
  member blames), so the other members fail it at once instead of at their deadline.
- :class:`Refused`: the leader will not take the joiner (the group is full).
- :class:`Leave`: a member leaves the group.
- :class:`Ping` / :class:`Pong`: round trips to the other peers while the group forms, for the
  ring's order (the service answers them; the group machine never sees them).

Wire form: canonical CBOR ``[tag, group, ...]``; :func:`decode_control` bounds every field.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import cbor2

from p2pnode_protocols.text import brief

from .errors import MessageError

__all__ = [
    "MAX_CONTROL_BYTES",
    "MAX_GROUP_SIZE",
    "Abort",
    "ControlError",
    "Formed",
    "Join",
    "Leave",
    "Ping",
    "Pong",
    "Redirect",
    "Refused",
    "check_group_name",
    "decode_control",
    "encode_control",
]

MAX_GROUP_SIZE = 256
MAX_PEER = 64
MAX_REASON = 256
MAX_CONTROL_BYTES = 64 * 1024
_NAME = re.compile(r"[A-Za-z0-9._:-]{1,64}")


#: a control message that does not decode or breaks a bound
ControlError = MessageError


def check_group_name(name: object) -> str:
    """``name`` if it is a valid group name (1-64 of ``A-Za-z0-9._:-``), else ValueError."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError("a group name is 1 to 64 characters of A-Z a-z 0-9 . _ : -")
    return name


@dataclass(frozen=True, slots=True)
class Join:
    group: str
    size: int  # 0: no fixed size
    min_size: int
    wait_ms: int
    generation: int  # the last generation the sender was a member of (0: none)
    rtt_ms: dict[bytes, float] = field(default_factory=dict)  # the sender's round trips


@dataclass(frozen=True, slots=True)
class Formed:
    group: str
    generation: int
    members: tuple[bytes, ...]  # rank order


@dataclass(frozen=True, slots=True)
class Redirect:
    group: str
    leader: bytes


@dataclass(frozen=True, slots=True)
class Abort:
    group: str
    generation: int
    op: int
    reason: str
    suspects: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class Refused:
    group: str
    reason: str


@dataclass(frozen=True, slots=True)
class Leave:
    group: str
    generation: int


@dataclass(frozen=True, slots=True)
class Ping:
    group: str
    nonce: int


@dataclass(frozen=True, slots=True)
class Pong:
    group: str
    nonce: int


Control = Join | Formed | Redirect | Abort | Refused | Leave | Ping | Pong
_TAGS: dict[type, int] = {
    Join: 1,
    Formed: 2,
    Redirect: 3,
    Abort: 4,
    Refused: 5,
    Leave: 6,
    Ping: 7,
    Pong: 8,
}


def encode_control(m: Control) -> bytes:
    if isinstance(m, Join):
        body: list[object] = [
            m.size,
            m.min_size,
            m.wait_ms,
            m.generation,
            {k: float(v) for k, v in sorted(m.rtt_ms.items())},
        ]
    elif isinstance(m, Formed):
        body = [m.generation, list(m.members)]
    elif isinstance(m, Redirect):
        body = [m.leader]
    elif isinstance(m, Abort):
        body = [m.generation, m.op, m.reason, list(m.suspects)]
    elif isinstance(m, Refused):
        body = [m.reason]
    elif isinstance(m, Leave):
        body = [m.generation]
    elif isinstance(m, Ping | Pong):
        body = [m.nonce]
    else:
        raise TypeError(f"not a control message: {m!r}")
    return cbor2.dumps([_TAGS[type(m)], m.group, *body], canonical=True)


def _int(v: object, hi: int, what: str) -> int:
    if type(v) is not int or not 0 <= v <= hi:
        raise ControlError(f"bad {what}")
    return v


def _peer(v: object) -> bytes:
    if type(v) is not bytes or not 0 < len(v) <= MAX_PEER:
        raise ControlError("bad peer id")
    return v


def _text(v: object) -> str:
    if not isinstance(v, str) or len(v) > MAX_REASON:
        raise ControlError("bad reason")
    return v


def _peers(v: object) -> tuple[bytes, ...]:
    if not isinstance(v, list) or len(v) > MAX_GROUP_SIZE:
        raise ControlError("bad peer list")
    out = tuple(_peer(p) for p in v)
    if len(set(out)) != len(out):
        raise ControlError("a peer listed twice")
    return out


def decode_control(data: bytes) -> Control:
    """The message ``data`` encodes; :class:`ControlError` if it is malformed or out of bounds."""
    if len(data) > MAX_CONTROL_BYTES:
        raise ControlError("control message too large")
    try:
        raw = cbor2.loads(data)
    except Exception as exc:
        raise ControlError(f"undecodable control message: {exc}") from None
    if not isinstance(raw, list) or len(raw) < 2 or type(raw[0]) is not int:
        raise ControlError("a control message is [tag, group, ...]")
    tag, group, body = raw[0], raw[1], raw[2:]
    try:
        check_group_name(group)
    except ValueError as exc:
        raise ControlError(str(exc)) from None
    u32 = 2**32 - 1
    if tag == 1 and len(body) == 5:
        size, min_size, wait_ms, gen, rtt = body
        if not isinstance(rtt, dict) or len(rtt) > MAX_GROUP_SIZE:
            raise ControlError("bad rtt map")
        rtts: dict[bytes, float] = {}
        for k, v in rtt.items():
            if type(v) is not float or not math.isfinite(v) or v < 0:
                raise ControlError("bad rtt")
            rtts[_peer(k)] = v
        return Join(
            group,
            _int(size, MAX_GROUP_SIZE, "size"),
            _int(min_size, MAX_GROUP_SIZE, "min size"),
            _int(wait_ms, 3_600_000, "wait"),
            _int(gen, u32, "generation"),
            rtts,
        )
    if tag == 2 and len(body) == 2:
        members = _peers(body[1])
        if not members:
            raise ControlError("a group has members")
        return Formed(group, _int(body[0], u32, "generation"), members)
    if tag == 3 and len(body) == 1:
        return Redirect(group, _peer(body[0]))
    if tag == 4 and len(body) == 4:
        return Abort(
            group,
            _int(body[0], u32, "generation"),
            _int(body[1], 2**63 - 1, "op"),
            _text(body[2]),
            _peers(body[3]),
        )
    if tag == 5 and len(body) == 1:
        return Refused(group, _text(body[0]))
    if tag == 6 and len(body) == 1:
        return Leave(group, _int(body[0], u32, "generation"))
    if tag in (7, 8) and len(body) == 1:
        nonce = _int(body[0], 2**64 - 1, "nonce")
        return Ping(group, nonce) if tag == 7 else Pong(group, nonce)
    raise ControlError(f"unknown control message tag {brief(tag)} or wrong field count")
