"""Encoding and incremental decoding of length-prefixed CBOR frames."""

from __future__ import annotations

import struct
from collections import deque
from typing import Any

import cbor2

HEADER_SIZE = 4
_HEADER = struct.Struct(">I")


class FrameError(Exception):
    """Bytes that are not a valid frame. The codec raises nothing else on bad input."""


class FrameTooLarge(FrameError):
    """A frame header announced more bytes than the decoder accepts.

    After this the byte stream cannot be resynchronised: the caller should reply and close.
    """

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"frame of {size} bytes exceeds the limit of {limit} bytes")
        self.size = size
        self.limit = limit


class MalformedFrame(FrameError):
    """A whole frame arrived but its body is not a CBOR map.

    The stream is still in sync (the length was honest), so the caller may go on reading.
    """


def encode_frame(payload: dict[str, Any], *, max_frame: int | None = None) -> bytes:
    """Serialise ``payload`` as one frame; refuse bodies above ``max_frame`` (our own bug)."""
    body = cbor2.dumps(payload, canonical=True)
    if max_frame is not None and len(body) > max_frame:
        raise FrameTooLarge(len(body), max_frame)
    return _HEADER.pack(len(body)) + body


def encode_frame_parts(
    payload: dict[str, Any], *, max_frame: int | None = None
) -> tuple[bytes, bytes]:
    """Header and body separately, for writers that can send two buffers without joining."""
    body = cbor2.dumps(payload, canonical=True)
    if max_frame is not None and len(body) > max_frame:
        raise FrameTooLarge(len(body), max_frame)
    return _HEADER.pack(len(body)), body


def cbor_head(major: int, n: int) -> bytes:
    """A CBOR item's head: major type and argument in the shortest form (canonical)."""
    if n < 24:
        return bytes([major << 5 | n])
    for extra, code in ((1, 24), (2, 25), (4, 26), (8, 27)):
        if n < 1 << (8 * extra):
            return bytes([major << 5 | code]) + n.to_bytes(extra, "big")
    raise ValueError("length too large for CBOR")


# Stands in for a byte string while the rest of a frame is encoded (see encode_frame_with_data).
_MARK = b"\x00p2pnode: bulk data goes here\x00"
_MARKED = cbor_head(2, len(_MARK)) + _MARK


def encode_frame_with_data(
    payload: dict[str, Any], path: tuple[str, ...], parts: list[bytes | memoryview]
) -> list[bytes | memoryview]:
    """The frame of ``payload`` with the byte string ``b"".join(parts)`` set at ``path`` (a
    chain of map keys; the last need not be there yet), as buffers to send one after another:
    the parts themselves are among them, never joined or copied. The bytes are those of
    :func:`encode_frame`: canonical CBOR orders map keys, not values, so the byte string sits
    where a marker sat."""
    marked = dict(payload)
    inner = marked
    for key in path[:-1]:
        inner[key] = dict(inner[key])
        inner = inner[key]
    inner[path[-1]] = _MARK
    body = cbor2.dumps(marked, canonical=True)
    at = body.find(_MARKED)
    size = sum(len(p) for p in parts)
    if at < 0 or body.find(_MARKED, at + 1) >= 0:  # the marker's bytes occur elsewhere too
        inner[path[-1]] = b"".join(parts)
        return [encode_frame(marked)]
    before, after = body[:at], body[at + len(_MARKED) :]
    head = cbor_head(2, size)
    total = len(before) + len(head) + size + len(after)
    return [_HEADER.pack(total) + before + head, *parts, after]


def decode_payload(body: bytes) -> dict[str, Any]:
    """Decode one frame body into a map, converting every failure into :class:`MalformedFrame`."""
    try:
        value = cbor2.loads(body)
    except Exception as exc:  # cbor2 raises a zoo of types on hostile input
        raise MalformedFrame(f"body is not valid CBOR: {exc}") from None
    if not isinstance(value, dict):
        raise MalformedFrame(f"body must be a CBOR map, got {type(value).__name__}")
    if not all(isinstance(k, str) for k in value):
        raise MalformedFrame("map keys must be text strings")
    return value


class FrameDecoder:
    """Buffers received bytes and yields whole frame bodies.

    ``receive_data(b"")`` means end of input: a partial frame left in the buffer then becomes
    a :class:`FrameError` from :meth:`next_body`, so a truncated frame is reported, not lost
    silently. Received pieces are kept as a list and joined once per frame, so a 1 MiB body
    arriving in 64 KiB reads is copied once, not once per read.
    """

    __slots__ = ("_eof", "_need", "_parts", "_size", "max_frame")

    def __init__(self, max_frame: int) -> None:
        if max_frame <= 0:
            raise ValueError("max_frame must be positive")
        self.max_frame = max_frame
        self._parts: deque[bytes | memoryview] = deque()
        self._size = 0
        self._need: int | None = None  # body length of the frame being read, once known
        self._eof = False

    @property
    def buffered(self) -> int:
        return self._size

    @property
    def frame_size(self) -> int | None:
        """Body length announced by the frame being read, once its header is parsed (by a
        :meth:`next_body` call); None between frames. Lets a reader reserve memory for the
        whole body before reading it."""
        return self._need

    @property
    def at_eof(self) -> bool:
        return self._eof

    def receive_data(self, data: bytes) -> None:
        if self._eof and data:
            raise FrameError("data received after end of input")
        if not data:
            self._eof = True
            return
        self._parts.append(bytes(data))
        self._size += len(data)

    def _take_parts(self, n: int) -> list[bytes | memoryview]:
        """Remove the first n buffered bytes (n <= buffered), as the pieces they arrived in;
        a piece split at the boundary is split by a view, not copied."""
        out: list[bytes | memoryview] = []
        got = 0
        while got < n:
            part = self._parts[0]
            want = n - got
            if len(part) <= want:
                out.append(self._parts.popleft())
                got += len(part)
            else:
                view = memoryview(part)
                out.append(view[:want])
                self._parts[0] = view[want:]
                got = n
        self._size -= n
        return out

    def _take(self, n: int) -> bytes:
        """Remove and return the first n buffered bytes (n <= buffered), copying once."""
        out = self._take_parts(n)
        return bytes(out[0]) if len(out) == 1 else b"".join(out)

    def next_body(self) -> bytes | None:
        """Return the next complete frame body, or None if more bytes are needed."""
        if self._need is None:
            if self._size < HEADER_SIZE:
                if self._eof and self._size:
                    raise FrameError(f"input ended inside a frame header ({self._size} bytes)")
                return None
            (size,) = _HEADER.unpack(self._take(HEADER_SIZE))
            if size > self.max_frame:
                raise FrameTooLarge(size, self.max_frame)
            self._need = size
        if self._size < self._need:
            if self._eof:
                raise FrameError(
                    f"input ended inside a frame body ({self._size} of {self._need} bytes)"
                )
            return None
        body = self._take(self._need)
        self._need = None
        return body

    def next_raw(self, n: int) -> bytes | None:
        """The next ``n`` bytes, unframed: bulk data a preceding frame announced.

        Only between frames. The caller bounds ``n`` (it comes from a frame it validated).
        """
        parts = self.next_raw_parts(n)
        if parts is None:
            return None
        return bytes(parts[0]) if len(parts) == 1 else b"".join(parts)

    def next_raw_parts(self, n: int) -> list[bytes | memoryview] | None:
        """Like :meth:`next_raw`, but the bytes as the pieces they arrived in, not joined: for
        a consumer that hashes and copies them anyway (a 1 MiB chunk then costs no join)."""
        if self._need is not None:
            raise FrameError("raw bytes requested in the middle of a frame")
        if self._size < n:
            if self._eof:
                raise FrameError(f"input ended inside raw data ({self._size} of {n} bytes)")
            return None
        return self._take_parts(n)

    def next_frame(self) -> dict[str, Any] | None:
        """Like :meth:`next_body`, decoded; a bad body raises :class:`MalformedFrame`."""
        body = self.next_body()
        if body is None:
            return None
        return decode_payload(body)
