"""Collectives wire: part headers and control messages round-trip, and malformed, oversized,
impossible or corrupt input is a ``PartError`` / ``MessageError`` (both remote errors), never
another exception."""

from __future__ import annotations

import struct
import zlib
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pnode_protocols.collectives import (
    HEADER,
    HEADER_SIZE,
    MAGIC,
    Abort,
    Algorithm,
    Codec,
    Formed,
    Join,
    Leave,
    MessageError,
    PartError,
    PartHeader,
    Phase,
    Redirect,
    Refused,
    check_payload,
    decode_message,
    decode_part_header,
    descriptor_digest,
    encode_message,
    encode_part_header,
    max_payload,
)
from p2pnode_protocols.collectives.wire import MAX_MESSAGE_BYTES
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
    h = _header(phase=1, codec=1, nbytes=8)
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
    assert max_payload(Codec.FP16, 10) == 20
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


# -- control messages -------------------------------------------------------------------------

groups = st.from_regex(r"[A-Za-z0-9._:-]{1,64}", fullmatch=True)
peer_ids = st.text(min_size=1, max_size=64)
ms = st.floats(0.0, 1e7, allow_nan=False)


@st.composite
def messages(draw: st.DrawFn) -> Any:
    kind = draw(st.sampled_from(["join", "formed", "redirect", "leave", "abort", "refused"]))
    g = draw(groups)
    if kind == "join":
        size = draw(st.integers(1, 256))
        rtt = draw(st.dictionaries(peer_ids, ms, max_size=20))
        return Join(g, size, draw(st.integers(1, size)), draw(st.integers(0, 3_600_000)), rtt)
    if kind == "formed":
        members = draw(st.lists(peer_ids, min_size=1, max_size=40, unique=True))
        return Formed(g, draw(_u(32)), tuple(members))
    if kind == "redirect":
        return Redirect(g, draw(peer_ids))
    if kind == "leave":
        return Leave(g, draw(_u(32)))
    reason = draw(st.text(max_size=256))
    if kind == "abort":
        return Abort(g, draw(_u(32)), draw(_u(64)), reason)
    return Refused(g, reason)


@settings(max_examples=200)
@given(m=messages())
def test_messages_round_trip(m: Any) -> None:
    data = encode_message(m)
    assert len(data) <= MAX_MESSAGE_BYTES
    assert decode_message(data) == m
    assert decode_message(bytearray(data)) == m
    assert encode_message(decode_message(data)) == data


def test_messages_at_their_bounds_fit() -> None:
    big_join = Join("g" * 64, 256, 1, 3_600_000, {f"{i:064d}": 0.1 + i for i in range(256)})
    big_formed = Formed("g" * 64, (1 << 32) - 1, tuple(f"{i:064d}" for i in range(256)))
    big_abort = Abort("g" * 64, 1, (1 << 64) - 1, "\U0001f600" * 256)
    for m in (big_join, big_formed, big_abort):
        data = encode_message(m)
        assert len(data) <= MAX_MESSAGE_BYTES
        assert decode_message(data) == m


def test_join_turns_int_round_trips_into_floats() -> None:
    j = Join("g", 3, 2, 0, {"a": 5})
    assert j.rtt_ms == {"a": 5.0} and type(j.rtt_ms["a"]) is float
    assert decode_message(encode_message(j)) == j


def _dumps(o: object) -> bytes:
    return cbor2.dumps(o, canonical=True)


BAD_MESSAGES: list[tuple[str, bytes]] = [
    ("empty", b""),
    ("not cbor", b"\xff\xff"),
    ("not a list", _dumps({"a": 1})),
    ("empty list", _dumps([])),
    ("unknown tag", _dumps([9, "g"])),
    ("string tag", _dumps(["1", "g", "x"])),
    ("too few fields", _dumps([3, "g"])),
    ("too many fields", _dumps([3, "g", "p", "x"])),
    ("group empty", _dumps([3, "", "p"])),
    ("group too long", _dumps([3, "g" * 65, "p"])),
    ("group bad char", _dumps([3, "a/b", "p"])),
    ("group space", _dumps([3, "a b", "p"])),
    ("group newline", _dumps([3, "ab\n", "p"])),
    ("group bytes", _dumps([3, b"g", "p"])),
    ("leader empty", _dumps([3, "g", ""])),
    ("leader too long", _dumps([3, "g", "p" * 65])),
    ("generation negative", _dumps([4, "g", -1])),
    ("generation too big", _dumps([4, "g", 1 << 32])),
    ("generation bool", _dumps([4, "g", True])),
    ("op too big", _dumps([5, "g", 1, 1 << 64, ""])),
    ("reason too long", _dumps([6, "g", "r" * 257])),
    ("reason not str", _dumps([6, "g", 5])),
    ("no members", _dumps([2, "g", 0, []])),
    ("members not a list", _dumps([2, "g", 0, "abc"])),
    ("duplicate members", _dumps([2, "g", 0, ["a", "a"]])),
    ("too many members", _dumps([2, "g", 0, [f"{i}" for i in range(257)]])),
    ("member too long", _dumps([2, "g", 0, ["m" * 65]])),
    ("member not str", _dumps([2, "g", 0, [1]])),
    ("nested member", _dumps([2, "g", 0, [["a"]]])),
    ("size zero", _dumps([1, "g", 0, 0, 0, {}])),
    ("size too big", _dumps([1, "g", 257, 1, 0, {}])),
    ("min_size above size", _dumps([1, "g", 3, 4, 0, {}])),
    ("min_size zero", _dumps([1, "g", 3, 0, 0, {}])),
    ("wait negative", _dumps([1, "g", 3, 1, -1, {}])),
    ("wait too long", _dumps([1, "g", 3, 1, 3_600_001, {}])),
    ("rtt not a map", _dumps([1, "g", 3, 1, 0, [1.0]])),
    ("rtt int value", _dumps([1, "g", 3, 1, 0, {"a": 1}])),
    ("rtt negative", _dumps([1, "g", 3, 1, 0, {"a": -1.0}])),
    ("rtt nan", _dumps([1, "g", 3, 1, 0, {"a": float("nan")}])),
    ("rtt inf", _dumps([1, "g", 3, 1, 0, {"a": float("inf")}])),
    ("rtt key empty", _dumps([1, "g", 3, 1, 0, {"": 1.0}])),
    ("rtt key int", _dumps([1, "g", 3, 1, 0, {1: 1.0}])),
    ("rtt key too long", _dumps([1, "g", 3, 1, 0, {"k" * 65: 1.0}])),
    ("rtt too many", _dumps([1, "g", 3, 1, 0, {f"{i}": 1.0 for i in range(257)}])),
    ("not canonical (long int)", b"\x83\x04\x61g\x19\x00\x01"),
    (
        "not canonical (float64 for 1.5)",
        b"\x86\x01\x61g\x03\x01\x00\xa1\x61a\xfb" + struct.pack(">d", 1.5),
    ),
    ("trailing bytes", _dumps([4, "g", 1]) + b"\x00"),
    ("oversized", _dumps([6, "g", "r" * (MAX_MESSAGE_BYTES + 10)])),
    ("too deep", _dumps([6, "g", [[["r"]]]])),
]


@pytest.mark.parametrize(("name", "data"), BAD_MESSAGES, ids=[n for n, _ in BAD_MESSAGES])
def test_bad_messages_are_refused(name: str, data: bytes) -> None:
    with pytest.raises(MessageError) as info:
        decode_message(data)
    assert isinstance(info.value, RemoteProtocolError)


def test_the_canonical_forms_of_the_non_canonical_cases_decode() -> None:
    # guards the two non-canonical cases above: they fail for their encoding, not their values
    assert decode_message(_dumps([4, "g", 1])) == Leave("g", 1)
    assert decode_message(_dumps([1, "g", 3, 1, 0, {"a": 1.5}])) == Join("g", 3, 1, 0, {"a": 1.5})


def test_decode_refuses_non_bytes() -> None:
    with pytest.raises(MessageError):
        decode_message("[4]")  # type: ignore[arg-type]


@settings(max_examples=200)
@given(data=st.binary(max_size=200))
def test_arbitrary_bytes_never_raise_anything_else(data: bytes) -> None:
    try:
        m = decode_message(data)
    except MessageError:
        return
    assert encode_message(m) == data


def test_encode_refuses_other_objects() -> None:
    with pytest.raises(TypeError):
        encode_message("not a message")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "make",
    [
        lambda: Join("g", 2, 3, 0, {}),
        lambda: Join("g", 2, 1, 0, {"a": float("nan")}),
        lambda: Formed("g", 0, ()),
        lambda: Formed("g", 0, ["a"]),
        lambda: Redirect("bad group!", "p"),
        lambda: Abort("g", 0, -1, ""),
        lambda: Refused("g", "x" * 257),
    ],
)
def test_messages_refuse_bad_fields_locally(make: Any) -> None:
    with pytest.raises(ValueError):
        make()
