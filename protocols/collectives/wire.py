"""The bytes of collectives on a data stream: one part's header (the group's control messages
are :mod:`.control`).

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
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from enum import IntEnum

import cbor2

from .errors import PartError
from .schedule import Phase

__all__ = [
    "HEADER",
    "HEADER_SIZE",
    "MAGIC",
    "MAX_GENERATION",
    "MAX_OP",
    "Codec",
    "PartError",
    "PartHeader",
    "check_payload",
    "decode_part_header",
    "descriptor_digest",
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
#: the header the learning library's codecs put before their fields (magic, scheme, size)
CODEC_HEADER = 16
#: the smallest int8 block the bound allows for: one 8-byte (low, step) pair per block
INT8_MIN_BLOCK = 32


def max_payload(codec: Codec, count: int) -> int:
    """The most payload bytes ``count`` elements can take under ``codec``. For ``NONE``
    (``4 * count``: raw float32) and ``FP16`` (``2 * count`` after the learning library's
    :data:`CODEC_HEADER`-byte header) this is also the exact size; for ``INT8`` it
    allows one byte per element plus an 8-byte (low, step) pair per block of at least
    :data:`INT8_MIN_BLOCK` elements, and for ``TOPK`` every element kept as a 4-byte index and a
    float32 value; both plus :data:`CODEC_OVERHEAD` bytes of codec header."""
    if type(count) is not int or count < 0:
        raise ValueError(f"count must be an int >= 0, not {count!r}")
    codec = Codec(codec)
    if codec is Codec.NONE:
        return 4 * count
    if codec is Codec.FP16:
        return CODEC_HEADER + 2 * count
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
