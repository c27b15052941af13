"""The frame codec: round trips however the bytes are cut, and garbage fails only with
the codec's own error."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pnode_protocols.framing import (
    FrameDecoder,
    FrameError,
    FrameTooLarge,
    MalformedFrame,
    decode_payload,
    encode_frame,
    encode_frame_with_data,
)
from p2pnode_protocols.framing.codec import _MARK

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=50)
    | st.binary(max_size=200)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=20,
)
payloads = st.dictionaries(st.text(max_size=20), values, max_size=8)


def decode_all(decoder: FrameDecoder, chunks: list[bytes]) -> list[dict]:
    out = []
    for chunk in chunks:
        decoder.receive_data(chunk)
        while (frame := decoder.next_frame()) is not None:
            out.append(frame)
    return out


@given(st.lists(payloads, min_size=1, max_size=4))
def test_round_trip_whole(frames: list[dict]) -> None:
    data = b"".join(encode_frame(f) for f in frames)
    assert decode_all(FrameDecoder(1 << 20), [data]) == frames


@given(payloads)
def test_round_trip_byte_by_byte(frame: dict) -> None:
    data = encode_frame(frame)
    decoder = FrameDecoder(1 << 20)
    assert decode_all(decoder, [data[i : i + 1] for i in range(len(data))]) == [frame]
    assert decoder.buffered == 0


@given(st.lists(payloads, min_size=1, max_size=3), st.data())
def test_round_trip_random_cuts(frames: list[dict], data: st.DataObject) -> None:
    blob = b"".join(encode_frame(f) for f in frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(blob)), max_size=10)))
    bounds = zip([0, *cuts], [*cuts, len(blob)], strict=True)
    pieces = [blob[a:b] for a, b in bounds if b > a]  # b"" would mean end of input
    assert decode_all(FrameDecoder(1 << 20), pieces) == frames


@given(payloads, st.binary(min_size=1, max_size=3))
def test_trailing_partial_header_waits_then_errors_at_eof(frame: dict, tail: bytes) -> None:
    decoder = FrameDecoder(1 << 20)
    assert decode_all(decoder, [encode_frame(frame) + tail]) == [frame]
    decoder.receive_data(b"")
    with pytest.raises(FrameError, match="header"):
        decoder.next_frame()


@given(st.binary(max_size=300))
def test_garbage_raises_only_frame_errors(blob: bytes) -> None:
    decoder = FrameDecoder(256)
    try:
        decoder.receive_data(blob)
        decoder.receive_data(b"")
        for _ in range(len(blob) + 1):
            try:
                if decoder.next_frame() is None:
                    break
            except MalformedFrame:
                continue  # in sync: keep reading
    except FrameError:
        pass


@given(st.binary(max_size=200))
def test_decode_payload_raises_only_malformed(body: bytes) -> None:
    with contextlib.suppress(MalformedFrame):
        assert isinstance(decode_payload(body), dict)


def test_oversized_header_is_refused_before_the_body_arrives() -> None:
    decoder = FrameDecoder(1024)
    decoder.receive_data(struct.pack(">I", 1025))
    with pytest.raises(FrameTooLarge) as info:
        decoder.next_frame()
    assert (info.value.size, info.value.limit) == (1025, 1024)


def test_truncated_body_is_reported_at_eof() -> None:
    decoder = FrameDecoder(1024)
    decoder.receive_data(encode_frame({"a": 1})[:-1])
    assert decoder.next_frame() is None
    decoder.receive_data(b"")
    with pytest.raises(FrameError, match="body"):
        decoder.next_frame()


def test_non_map_and_non_text_keys_are_malformed() -> None:
    decoder = FrameDecoder(1024)
    decoder.receive_data(struct.pack(">I", 2) + b"\x81\x01" + encode_frame({"ok": True}))
    with pytest.raises(MalformedFrame):
        decoder.next_frame()
    assert decoder.next_frame() == {"ok": True}  # still in sync
    with pytest.raises(MalformedFrame, match="keys"):
        decode_payload(b"\xa1\x01\x02")  # {1: 2}


def test_encoder_refuses_its_own_oversized_frames() -> None:
    with pytest.raises(FrameTooLarge):
        encode_frame({"v": b"x" * 100}, max_frame=50)


@given(payloads, st.binary(max_size=3000), st.data())
def test_raw_bytes_after_a_frame_round_trip_however_cut(
    frame: dict, raw: bytes, data: st.DataObject
) -> None:
    blob = encode_frame(frame) + raw + encode_frame({"after": True})
    cuts = sorted(data.draw(st.lists(st.integers(1, len(blob) - 1), max_size=6)))
    pieces = [blob[a:b] for a, b in zip([0, *cuts], [*cuts, len(blob)], strict=True) if b > a]
    decoder = FrameDecoder(1 << 20)
    got: list[object] = []
    stage = 0
    for piece in pieces:
        decoder.receive_data(piece)
        while True:
            item = decoder.next_raw(len(raw)) if stage == 1 else decoder.next_frame()
            if item is None:
                break
            got.append(item)
            stage += 1
    assert got == [frame, raw, {"after": True}]


@given(st.lists(st.binary(min_size=1, max_size=200), min_size=1, max_size=8), st.data())
def test_raw_parts_are_the_bytes_in_arrival_pieces_without_copies(
    pieces: list[bytes], data: st.DataObject
) -> None:
    blob = b"".join(pieces)
    n = data.draw(st.integers(0, len(blob)))
    decoder = FrameDecoder(1024)
    for piece in pieces:
        decoder.receive_data(piece)
    parts = decoder.next_raw_parts(n)
    assert parts is not None
    assert b"".join(parts) == blob[:n]
    assert all(isinstance(p, (bytes, memoryview)) for p in parts)
    assert len(parts) <= len(pieces), "pieces are handed on, never cut smaller than they came"
    assert decoder.buffered == len(blob) - n
    assert decoder.next_raw(len(blob) - n) == blob[n:], "the rest follows, split by a view"


def test_raw_bytes_cut_short_are_an_error_at_eof() -> None:
    decoder = FrameDecoder(1024)
    decoder.receive_data(b"abc")
    assert decoder.next_raw(5) is None
    decoder.receive_data(b"")
    with pytest.raises(FrameError, match="raw data"):
        decoder.next_raw(5)


@given(payloads, st.text(max_size=10), st.lists(st.binary(max_size=300), max_size=4))
def test_a_frame_with_data_is_the_frame_with_the_data_joined(
    payload: dict, key: str, parts: list[bytes]
) -> None:
    frame = {**payload, "result": {key: b""}}
    views = [memoryview(p) for p in parts]
    pieces = encode_frame_with_data(frame, ("result", key), views)
    joined = {**payload, "result": {key: b"".join(parts)}}
    assert b"".join(pieces) == encode_frame(joined)
    if len(pieces) > 1:  # the data went out as the very buffers it was given
        assert all(any(x is v for x in pieces) for v in views)


def test_data_that_contains_the_marker_is_still_encoded_right() -> None:
    frame = {"id": 1, "note": _MARK, "result": {"data": b""}}
    pieces = encode_frame_with_data(frame, ("result", "data"), [b"abc", _MARK])
    assert b"".join(pieces) == encode_frame({**frame, "result": {"data": b"abc" + _MARK}})
