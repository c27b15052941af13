"""The bytes of collectives: one part's header on a data stream, and the group's control
messages.

**Parts.** An op moves float32 arrays as parts, each a fixed-size header followed by
``nbytes`` of payload. The header (:data:`HEADER`, all little-endian) is::

    magic   4s  b"P2C1"
    generation  u32   the group's generation (membership epoch)
    op      u64   the op's sequence number within the generation
    desc    u32   crc32 of the op's descriptor (:func:`descriptor_digest`): a member that
                  called a different op is caught at its first part
    phase   u8    :class:`~.schedule.Phase`
    codec   u8    :class:`Codec`
    step    u16   the plan step
    sender  u16   the sender's rank
    offset  u64   element offset of this part in the whole array
    count   u32   elements in the part
    nbytes  u32   payload bytes after the header
    crc     u32   zlib.crc32 of the payload

:func:`decode_part_header` bounds ``count`` and ``nbytes`` before the reader allocates the
payload, and refuses an ``nbytes`` the codec cannot produce for ``count`` elements
(:func:`max_payload`); :func:`check_payload` then checks the payload's size and crc. Range
checks that need the op (offset + count within the array, sender a member, step in the plan)
are the service's.

**Control messages** (:class:`Join`, :class:`Formed`, :class:`Redirect`, :class:`Leave`,
:class:`Abort`, :class:`Refused`): canonical CBOR ``[tag, ...]``, every field bounded;
:func:`decode_message` refuses anything else, including a non-canonical encoding.
"""

from __future__ import annotations

import math
import re
import struct
import zlib
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import cbor2

from .errors import MessageError, PartError
from .schedule import Phase

__all__ = [
    "HEADER",
    "HEADER_SIZE",
    "MAGIC",
    "MAX_GENERATION",
    "MAX_MEMBERS",
    "MAX_MESSAGE_BYTES",
    "MAX_OP",
    "Abort",
    "Codec",
    "Formed",
    "Join",
    "Leave",
    "Message",
    "MessageError",
    "PartError",
    "PartHeader",
    "Redirect",
    "Refused",
    "check_payload",
    "decode_message",
    "decode_part_header",
    "descriptor_digest",
    "encode_message",
    "encode_part_header",
    "max_payload",
]

MAGIC = b"P2C1"
HEADER = struct.Struct("<4sIQIBBHHQIII")
HEADER_SIZE = HEADER.size

_U16 = (1 << 16) - 1
_U32 = (1 << 32) - 1
_U64 = (1 << 64) - 1
MAX_GENERATION = _U32
MAX_OP = _U64


class Codec(IntEnum):
    """How a part's payload encodes its ``count`` float32 values."""

    #: float32, 4 bytes an element
    NONE = 0
    #: float16, 2 bytes an element
    FP16 = 1
    #: 8-bit codes with per-block scales (at most :func:`max_payload` bytes)
    INT8 = 2
    #: kept (index, value) pairs (at most :func:`max_payload` bytes)
    TOPK = 3


#: room a compressed part may spend on its own header (scheme, sizes, k, ...)
CODEC_OVERHEAD = 64
#: the smallest int8 block the bound allows for: one 8-byte (low, step) pair per block
INT8_MIN_BLOCK = 32


def max_payload(codec: Codec, count: int) -> int:
    """The most payload bytes ``count`` elements can take under ``codec``. For ``NONE``
    (``4 * count``) and ``FP16`` (``2 * count``) this is also the exact size; for ``INT8`` it
    allows one byte per element plus an 8-byte (low, step) pair per block of at least
    :data:`INT8_MIN_BLOCK` elements, and for ``TOPK`` every element kept as a 4-byte index and a
    float32 value; both plus :data:`CODEC_OVERHEAD` bytes of codec header."""
    if type(count) is not int or count < 0:
        raise ValueError(f"count must be an int >= 0, not {count!r}")
    codec = Codec(codec)
    if codec is Codec.NONE:
        return 4 * count
    if codec is Codec.FP16:
        return 2 * count
    if codec is Codec.INT8:
        return count + 8 * -(-count // INT8_MIN_BLOCK) + CODEC_OVERHEAD
    return 8 * count + CODEC_OVERHEAD


def _payload_fits(codec: Codec, count: int, nbytes: int) -> bool:
    if codec in (Codec.NONE, Codec.FP16):
        return nbytes == max_payload(codec, count)
    return nbytes <= max_payload(codec, count)


@dataclass(frozen=True, slots=True)
class PartHeader:
    """The header of one part; see the module docstring for the layout. Construction checks
    every field's range and that ``nbytes`` is possible for ``codec`` and ``count``
    (``ValueError`` otherwise)."""

    generation: int
    op: int
    desc: int
    phase: Phase
    codec: Codec
    step: int
    sender: int
    offset: int
    count: int
    nbytes: int
    crc: int

    def __post_init__(self) -> None:
        for name, hi in (
            ("generation", _U32),
            ("op", _U64),
            ("desc", _U32),
            ("step", _U16),
            ("sender", _U16),
            ("offset", _U64),
            ("count", _U32),
            ("nbytes", _U32),
            ("crc", _U32),
        ):
            v = getattr(self, name)
            if type(v) is not int or not 0 <= v <= hi:
                raise ValueError(f"{name} must be an int in 0..{hi}, not {v!r}")
        # Plain ints become the enums (ValueError for an unknown value).
        for name, enum in (("phase", Phase), ("codec", Codec)):
            v = getattr(self, name)
            if type(v) is bool or not isinstance(v, int):
                raise ValueError(f"{name} must be a {enum.__name__}, not {v!r}")
            object.__setattr__(self, name, enum(v))
        if not _payload_fits(self.codec, self.count, self.nbytes):
            raise ValueError(
                f"{self.nbytes} payload bytes are impossible for {self.count} elements "
                f"under {self.codec.name}"
            )


def encode_part_header(h: PartHeader) -> bytes:
    """The :data:`HEADER_SIZE` bytes of ``h``."""
    return HEADER.pack(
        MAGIC,
        h.generation,
        h.op,
        h.desc,
        h.phase,
        h.codec,
        h.step,
        h.sender,
        h.offset,
        h.count,
        h.nbytes,
        h.crc,
    )


def decode_part_header(
    data: bytes | bytearray | memoryview, *, max_count: int, max_nbytes: int
) -> PartHeader:
    """The header in ``data`` (exactly :data:`HEADER_SIZE` bytes). Raises :class:`PartError`
    on a wrong magic or length, an unknown phase or codec, ``count > max_count``,
    ``nbytes > max_nbytes``, or an ``nbytes`` the codec cannot produce for ``count``."""
    if len(data) != HEADER_SIZE:
        raise PartError(f"a part header is {HEADER_SIZE} bytes, not {len(data)}")
    magic, gen, op, desc, phase, codec, step, sender, offset, count, nbytes, crc = HEADER.unpack(
        data
    )
    if magic != MAGIC:
        raise PartError(f"bad part magic {bytes(magic)!r}")
    if count > max_count:
        raise PartError(f"part of {count} elements exceeds the bound {max_count}")
    if nbytes > max_nbytes:
        raise PartError(f"part of {nbytes} bytes exceeds the bound {max_nbytes}")
    try:
        return PartHeader(gen, op, desc, phase, codec, step, sender, offset, count, nbytes, crc)
    except ValueError as exc:
        raise PartError(f"bad part header: {exc}") from None


def check_payload(h: PartHeader, payload: bytes | bytearray | memoryview) -> None:
    """Raises :class:`PartError` unless ``payload`` has ``h.nbytes`` bytes and crc ``h.crc``."""
    if len(payload) != h.nbytes:
        raise PartError(f"payload of {len(payload)} bytes, header says {h.nbytes}")
    if zlib.crc32(payload) != h.crc:
        raise PartError("payload crc mismatch")


def descriptor_digest(
    kind: str, length: int, dtype: str, codec: str, algorithm: str, root: int
) -> int:
    """crc32 of the canonical CBOR ``[kind, length, dtype, codec, algorithm, root]``: every
    member computes it from its own call, and a part whose ``desc`` differs is from a member
    that called a different op. ``root`` is the broadcast root's rank, or any fixed value
    (say -1) for ops without one."""
    for name, v in (("kind", kind), ("dtype", dtype), ("codec", codec), ("algorithm", algorithm)):
        if not isinstance(v, str):
            raise ValueError(f"{name} must be a str, not {v!r}")
    for name, v in (("length", length), ("root", root)):
        if type(v) is not int:
            raise ValueError(f"{name} must be an int, not {v!r}")
    if length < 0:
        raise ValueError("length must be >= 0")
    # str() drops a StrEnum's type so that Algorithm.RING and "ring" give the same digest.
    body = [str(kind), length, str(dtype), str(codec), str(algorithm), root]
    return zlib.crc32(cbor2.dumps(body, canonical=True))


# -- control messages -------------------------------------------------------------------------

MAX_GROUP = 64
MAX_PEER = 64
#: the most members of a group: ranks travel as u16, and a ring or butterfly of more would
#: be too slow to form anyway
MAX_MEMBERS = 256
MAX_REASON = 256
MAX_RTT_ENTRIES = 256
#: a Join or Formed at their bounds stays well below this
MAX_MESSAGE_BYTES = 32 * 1024
#: a Join waits at most this long for members (one hour)
MAX_WAIT_MS = 3_600_000
#: round-trip times beyond this (ms) are not measurements
MAX_RTT_MS = 1e7

_GROUP_RE = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def _check_group(v: object) -> None:
    if type(v) is not str or not _GROUP_RE.fullmatch(v):
        raise ValueError(f"group must be 1..{MAX_GROUP} characters of [A-Za-z0-9._:-]")


def _check_peer(name: str, v: object) -> None:
    if type(v) is not str or not 0 < len(v) <= MAX_PEER:
        raise ValueError(f"{name} must be a peer id of 1..{MAX_PEER} characters")


def _check_int(name: str, v: object, lo: int, hi: int) -> None:
    if type(v) is not int or not lo <= v <= hi:
        raise ValueError(f"{name} must be an int in {lo}..{hi}")


def _check_reason(v: object) -> None:
    if type(v) is not str or len(v) > MAX_REASON:
        raise ValueError(f"reason must be a str of at most {MAX_REASON} characters")


@dataclass(frozen=True, slots=True)
class Join:
    """A peer asks the group's leader to be a member: it wants a group of ``size`` and will
    settle for ``min_size`` after ``wait_ms``; ``rtt_ms`` are its measured round trips (peer
    id -> milliseconds) for the leader's ring order. Int round trips become floats."""

    group: str
    size: int
    min_size: int
    wait_ms: int
    rtt_ms: dict[str, float]

    def __post_init__(self) -> None:
        _check_group(self.group)
        _check_int("size", self.size, 1, MAX_MEMBERS)
        _check_int("min_size", self.min_size, 1, self.size)
        _check_int("wait_ms", self.wait_ms, 0, MAX_WAIT_MS)
        if type(self.rtt_ms) is not dict or len(self.rtt_ms) > MAX_RTT_ENTRIES:
            raise ValueError(f"rtt_ms must be a dict of at most {MAX_RTT_ENTRIES} entries")
        rtt: dict[str, float] = {}
        for peer, ms in self.rtt_ms.items():
            _check_peer("an rtt_ms key", peer)
            if type(ms) not in (int, float) or not 0 <= ms <= MAX_RTT_MS:
                raise ValueError(f"rtt_ms values must be numbers in 0..{MAX_RTT_MS:g}")
            rtt[peer] = float(ms)
        object.__setattr__(self, "rtt_ms", rtt)


@dataclass(frozen=True, slots=True)
class Formed:
    """The leader's word: generation ``generation`` of ``group`` has these ``members``, in
    rank order (a member's rank is its index)."""

    group: str
    generation: int
    members: tuple[str, ...]

    def __post_init__(self) -> None:
        _check_group(self.group)
        _check_int("generation", self.generation, 0, MAX_GENERATION)
        if type(self.members) is not tuple or not 0 < len(self.members) <= MAX_MEMBERS:
            raise ValueError(f"members must be a tuple of 1..{MAX_MEMBERS} peer ids")
        for m in self.members:
            _check_peer("a member", m)
        if len(set(self.members)) != len(self.members):
            raise ValueError("members must be distinct")


@dataclass(frozen=True, slots=True)
class Redirect:
    """Not the leader of ``group``: ask ``leader``."""

    group: str
    leader: str

    def __post_init__(self) -> None:
        _check_group(self.group)
        _check_peer("leader", self.leader)


@dataclass(frozen=True, slots=True)
class Leave:
    """The sender leaves generation ``generation`` of ``group``."""

    group: str
    generation: int

    def __post_init__(self) -> None:
        _check_group(self.group)
        _check_int("generation", self.generation, 0, MAX_GENERATION)


@dataclass(frozen=True, slots=True)
class Abort:
    """Op ``op`` of generation ``generation`` failed on the sender, for ``reason``."""

    group: str
    generation: int
    op: int
    reason: str

    def __post_init__(self) -> None:
        _check_group(self.group)
        _check_int("generation", self.generation, 0, MAX_GENERATION)
        _check_int("op", self.op, 0, MAX_OP)
        _check_reason(self.reason)


@dataclass(frozen=True, slots=True)
class Refused:
    """The leader will not take the sender into ``group``, for ``reason``."""

    group: str
    reason: str

    def __post_init__(self) -> None:
        _check_group(self.group)
        _check_reason(self.reason)


Message = Join | Formed | Redirect | Leave | Abort | Refused

_TAGS: dict[type, int] = {Join: 1, Formed: 2, Redirect: 3, Leave: 4, Abort: 5, Refused: 6}


def encode_message(m: Message) -> bytes:
    """Canonical CBOR ``[tag, field, ...]`` of a control message."""
    if isinstance(m, Join):
        body: list[Any] = [1, m.group, m.size, m.min_size, m.wait_ms, dict(m.rtt_ms)]
    elif isinstance(m, Formed):
        body = [2, m.group, m.generation, list(m.members)]
    elif isinstance(m, Redirect):
        body = [3, m.group, m.leader]
    elif isinstance(m, Leave):
        body = [4, m.group, m.generation]
    elif isinstance(m, Abort):
        body = [5, m.group, m.generation, m.op, m.reason]
    elif isinstance(m, Refused):
        body = [6, m.group, m.reason]
    else:
        raise TypeError(f"not a collectives message: {m!r}")
    return cbor2.dumps(body, canonical=True)


def _tuple(v: object) -> tuple[Any, ...]:
    if type(v) is not list:
        raise ValueError("members must be an array")
    return tuple(v)


def _build(o: list[Any]) -> Message:
    tag, args = o[0], o[1:]
    if type(tag) is not int:
        raise ValueError("a message tag is an int")
    if tag == 1 and len(args) == 5:
        if type(args[4]) is not dict:
            raise ValueError("rtt_ms must be a map")
        for ms in args[4].values():
            if type(ms) is not float or math.isnan(ms):
                raise ValueError("rtt_ms values must be floats")
        return Join(*args)
    if tag == 2 and len(args) == 3:
        return Formed(args[0], args[1], _tuple(args[2]))
    if tag == 3 and len(args) == 2:
        return Redirect(*args)
    if tag == 4 and len(args) == 2:
        return Leave(*args)
    if tag == 5 and len(args) == 4:
        return Abort(*args)
    if tag == 6 and len(args) == 2:
        return Refused(*args)
    raise ValueError(f"unknown message tag {tag!r} with {len(args)} fields")


def decode_message(data: bytes | bytearray | memoryview) -> Message:
    """The control message in ``data``. Raises :class:`MessageError` on oversized, malformed,
    out-of-bounds or non-canonical input (never another exception)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MessageError("a message is bytes")
    data = bytes(data)
    if len(data) > MAX_MESSAGE_BYTES:
        raise MessageError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        o = cbor2.loads(data, max_depth=2)
        if type(o) is not list or not o:
            raise ValueError("a message is [tag, ...]")
        m = _build(o)
    except (cbor2.CBORError, ValueError, TypeError, RecursionError, OverflowError) as exc:
        raise MessageError(f"bad collectives message: {exc}") from None
    if encode_message(m) != data:
        raise MessageError("collectives message is not canonical")
    return m
