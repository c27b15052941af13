"""Interim: replaced by the wire module of the wt-cproto branch at merge."""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from enum import IntEnum

from p2pnode_protocols.machine import RemoteProtocolError

MAGIC = b"P2C1"


class Phase(IntEnum):
    REDUCE_SCATTER = 0
    ALL_GATHER = 1
    DIRECT = 2
    BROADCAST = 3


class Codec(IntEnum):
    NONE = 0
    FP16 = 1
    INT8 = 2
    TOPK = 3


class PartError(RemoteProtocolError):
    pass


@dataclass(frozen=True, slots=True)
class PartHeader:
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


HEADER = struct.Struct("<4sIQIBBHHQIII")
HEADER_SIZE = HEADER.size


def encode_part_header(h: PartHeader) -> bytes:
    return HEADER.pack(MAGIC, h.generation, h.op, h.desc, h.phase, h.codec, h.step, h.sender,
                       h.offset, h.count, h.nbytes, h.crc)


def decode_part_header(data: bytes | memoryview, *, max_count: int, max_nbytes: int) -> PartHeader:
    if len(data) != HEADER_SIZE:
        raise PartError("short header")
    magic, gen, op, desc, phase, codec, step, sender, offset, count, nbytes, crc = HEADER.unpack(data)
    if magic != MAGIC:
        raise PartError("bad magic")
    if count > max_count or nbytes > max_nbytes:
        raise PartError("part too large")
    try:
        return PartHeader(gen, op, desc, Phase(phase), Codec(codec), step, sender, offset, count,
                          nbytes, crc)
    except ValueError as exc:
        raise PartError(str(exc)) from None


def descriptor_digest(kind: str, length: int, dtype: str, codec: str, algorithm: str, root: int) -> int:
    return zlib.crc32(f"{kind}|{length}|{dtype}|{codec}|{algorithm}|{root}".encode())


def check_payload(h: PartHeader, payload: bytes | memoryview) -> None:
    if len(payload) != h.nbytes:
        raise PartError("short payload")
    if zlib.crc32(payload) != h.crc:
        raise PartError("payload checksum mismatch")
