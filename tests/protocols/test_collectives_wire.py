"""Collectives wire: part headers and control messages round-trip, and malformed, oversized,
impossible or corrupt input is a ``PartError`` / ``MessageError`` (both remote errors), never
another exception."""

from __future__ import annotations

import struct
import zlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pnode_protocols.collectives import (
    HEADER,
    HEADER_SIZE,
    MAGIC,
    Algorithm,
    Codec,
    PartError,
    PartHeader,
    Phase,
    check_payload,
    decode_part_header,
    descriptor_digest,
    encode_part_header,
    max_payload,
)
from p2pnode_protocols.machine import RemoteProtocolError

pytestmark = pytest.mark.timeout(60)

BIG = 1 << 32  # bounds that let every valid header through


def _u(bits: int) -> st.SearchStrategy[int]:
    return st.integers(0, (1 << bits) - 1)


@st.composite
def headers(draw: st.DrawFn) -> PartHeader:
    codec = draw(st.sampled_from(Codec))
    count = draw(_u(32))
    hi = min(max_payload(codec, count), (1 << 32) - 1)
    if codec in (Codec.NONE, Codec.FP16):
        # the exact size must fit in the u32 nbytes field
        count = draw(st.integers(0, ((1 << 32) - 1) // (4 if codec is Codec.NONE else 2)))
        nbytes = max_payload(codec, count)
    else:
        nbytes = draw(st.integers(0, hi))
    return PartHeader(
        generation=draw(_u(32)),
        op=draw(_u(64)),
        desc=draw(_u(32)),
        phase=draw(st.sampled_from(Phase)),
        codec=codec,
        step=draw(_u(16)),
        sender=draw(_u(16)),
        offset=draw(_u(64)),
        count=count,
        nbytes=nbytes,
        crc=draw(_u(32)),
    )


def _header(**kw: Any) -> PartHeader:
    base: dict[str, Any] = {
        "generation": 3,
        "op": 7,
        "desc": 0xDEADBEEF,
        "phase": Phase.REDUCE_SCATTER,
        "codec": Codec.NONE,
        "step": 2,
        "sender": 1,
        "offset": 1000,
        "count": 4,
        "nbytes": 16,
        "crc": 0,
    }
    return PartHeader(**(base | kw))


# -- part headers -----------------------------------------------------------------------------


@given(h=headers())
def test_part_header_round_trips(h: PartHeader) -> None:
    data = encode_part_header(h)
    assert len(data) == HEADER_SIZE == HEADER.size
    assert data[:4] == MAGIC
    got = decode_part_header(data, max_count=BIG, max_nbytes=BIG)
    assert got == h
    assert type(got.phase) is Phase and type(got.codec) is Codec
    assert decode_part_header(memoryview(bytearray(data)), max_count=BIG, max_nbytes=BIG) == h


def test_part_header_layout_is_little_endian_and_fixed() -> None:
    h = _header()
    data = encode_part_header(h)
    assert HEADER_SIZE == 46
    assert data == struct.pack(
        "<4sIQIBBHHQIII", b"P2C1", 3, 7, 0xDEADBEEF, 0, 0, 2, 1, 1000, 4, 16, 0
    )


def test_plain_ints_become_enums() -> None:
    h = _header(phase=1, codec=1, nbytes=16 + 8)
    assert h.phase is Phase.ALL_GATHER and h.codec is Codec.FP16


def _corrupt(data: bytes, fmt_index: int, value: int) -> bytes:
    fields = list(HEADER.unpack(data))
    fields[fmt_index] = value
    return HEADER.pack(*fields)


GOOD = encode_part_header(_header())


@pytest.mark.parametrize(
    ("data", "max_count", "max_nbytes"),
    [
        (GOOD[:-1], 100, 100),  # short
        (GOOD + b"\0", 100, 100),  # long
        (b"", 100, 100),
        (b"P2C2" + GOOD[4:], 100, 100),  # wrong magic
        (_corrupt(GOOD, 4, 4), 100, 100),  # unknown phase
        (_corrupt(GOOD, 5, 9), 100, 100),  # unknown codec
        (GOOD, 3, 100),  # count over the bound
        (GOOD, 100, 15),  # nbytes over the bound
        (_corrupt(GOOD, 10, 15), 100, 100),  # NONE needs exactly 4 * count
        (_corrupt(GOOD, 10, 17), 100, 100),
        (_corrupt(_corrupt(GOOD, 5, Codec.FP16), 10, 16), 100, 100),  # FP16 needs 2 * count
        (_corrupt(_corrupt(GOOD, 5, Codec.INT8), 10, 4 + 8 + 64 + 1), 100, 1000),
        (_corrupt(_corrupt(GOOD, 5, Codec.TOPK), 10, 8 * 4 + 64 + 1), 100, 1000),
    ],
)
def test_bad_part_headers_are_refused(data: bytes, max_count: int, max_nbytes: int) -> None:
    with pytest.raises(PartError) as info:
        decode_part_header(data, max_count=max_count, max_nbytes=max_nbytes)
    assert isinstance(info.value, RemoteProtocolError)


def test_compressed_codecs_accept_sizes_up_to_the_bound() -> None:
    for codec in (Codec.INT8, Codec.TOPK):
        for nbytes in (0, 10, max_payload(codec, 4)):
            data = _corrupt(_corrupt(GOOD, 5, codec), 10, nbytes)
            assert decode_part_header(data, max_count=100, max_nbytes=1000).nbytes == nbytes


@settings(max_examples=200)
@given(data=st.binary(min_size=HEADER_SIZE, max_size=HEADER_SIZE))
def test_arbitrary_header_bytes_never_raise_anything_else(data: bytes) -> None:
    try:
        h = decode_part_header(data, max_count=1 << 20, max_nbytes=1 << 22)
    except PartError:
        return
    assert encode_part_header(h) == data


def test_max_payload() -> None:
    assert max_payload(Codec.NONE, 10) == 40
    assert max_payload(Codec.FP16, 10) == 16 + 20  # the learning library's header first
    assert max_payload(Codec.INT8, 0) == 64
    assert max_payload(Codec.INT8, 64) == 64 + 16 + 64
    assert max_payload(Codec.TOPK, 10) == 80 + 64
    # p2pnode.training.compression's int8 of one part (16 + 8 header bytes, 256-blocks) fits
    for count in (1, 255, 256, 10_000):
        assert 24 + 8 * -(-count // 256) + count <= max_payload(Codec.INT8, count)
        assert 32 + 4 * -(-count // 65536) + 6 * count <= max_payload(Codec.TOPK, count)
    for bad in (-1, 1.0):
        with pytest.raises(ValueError):
            max_payload(Codec.NONE, bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kw",
    [
        {"generation": -1},
        {"generation": 1 << 32},
        {"op": 1 << 64},
        {"step": 1 << 16},
        {"sender": True},
        {"phase": 7},
        {"codec": "none"},
        {"nbytes": 15},
        {"count": 1.0},
    ],
)
def test_part_header_refuses_bad_fields_locally(kw: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        _header(**kw)


def test_check_payload() -> None:
    payload = bytes(range(16))
    h = _header(crc=zlib.crc32(payload))
    check_payload(h, payload)
    check_payload(h, memoryview(payload))
    with pytest.raises(PartError):
        check_payload(h, payload[:-1])
    with pytest.raises(PartError):
        check_payload(h, payload[:-1] + b"\xff")


def test_descriptor_digest() -> None:
    d = descriptor_digest("all_reduce", 1000, "float32", "none", "ring", -1)
    assert 0 <= d < 1 << 32
    assert d == descriptor_digest("all_reduce", 1000, "float32", "none", Algorithm.RING, -1)
    others = {
        descriptor_digest("broadcast", 1000, "float32", "none", "ring", -1),
        descriptor_digest("all_reduce", 1001, "float32", "none", "ring", -1),
        descriptor_digest("all_reduce", 1000, "float16", "none", "ring", -1),
        descriptor_digest("all_reduce", 1000, "float32", "fp16", "ring", -1),
        descriptor_digest("all_reduce", 1000, "float32", "none", "butterfly", -1),
        descriptor_digest("all_reduce", 1000, "float32", "none", "ring", 0),
    }
    assert d not in others and len(others) == 6
    for bad in (
        ("x", -1, "f", "c", "a", 0),
        ("x", 1, "f", "c", "a", 0.5),
        (1, 1, "f", "c", "a", 0),
    ):
        with pytest.raises(ValueError):
            descriptor_digest(*bad)  # type: ignore[arg-type]
