"""Encoding and incremental decoding of length-prefixed CBOR frames."""

from __future__ import annotations

import struct
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
    silently.
    """

    __slots__ = ("_buf", "_eof", "_need", "max_frame")

    def __init__(self, max_frame: int) -> None:
        if max_frame <= 0:
            raise ValueError("max_frame must be positive")
        self.max_frame = max_frame
        self._buf = bytearray()
        self._need: int | None = None  # body length of the frame being read, once known
        self._eof = False

    @property
    def buffered(self) -> int:
        return len(self._buf)

    @property
    def pending(self) -> int:
        """Bytes still needed to complete the current frame (0 when between frames)."""
        if self._need is None:
            return max(0, HEADER_SIZE - len(self._buf)) if self._buf else 0
        return self._need - len(self._buf)

    def receive_data(self, data: bytes) -> None:
        if self._eof and data:
            raise FrameError("data received after end of input")
        if not data:
            self._eof = True
            return
        self._buf += data

    def next_body(self) -> bytes | None:
        """Return the next complete frame body, or None if more bytes are needed."""
        if self._need is None:
            if len(self._buf) < HEADER_SIZE:
                if self._eof and self._buf:
                    raise FrameError(f"input ended inside a frame header ({len(self._buf)} bytes)")
                return None
            (size,) = _HEADER.unpack_from(self._buf)
            if size > self.max_frame:
                raise FrameTooLarge(size, self.max_frame)
            del self._buf[:HEADER_SIZE]
            self._need = size
        if len(self._buf) < self._need:
            if self._eof:
                raise FrameError(
                    f"input ended inside a frame body ({len(self._buf)} of {self._need} bytes)"
                )
            return None
        body = bytes(self._buf[: self._need])
        del self._buf[: self._need]
        self._need = None
        return body

    def next_frame(self) -> dict[str, Any] | None:
        """Like :meth:`next_body`, decoded; a bad body raises :class:`MalformedFrame`."""
        body = self.next_body()
        if body is None:
            return None
        return decode_payload(body)
