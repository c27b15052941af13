"""The tensor codec: a state dict (names to numpy arrays) as deterministic bytes.

Equal tensors always give equal bytes, hence equal blob keys: each array is written as its
little-endian dtype string, shape and C-order bytes, in the mapping's order, inside a CBOR
envelope ``["p2pnode-tensors", 2, [[name, dtype, shape, pad, data], ...]]``. ``pad`` is a byte
string of zeros, as short as it can be, that puts the first byte of ``data`` at a multiple of
``ALIGN`` from the start of the blob: decoded from an aligned buffer, every array is then a
view of it, where an unaligned one would have to be copied (a 64 MiB array decodes in 0.5 ms
instead of 6-7, more where the copy's pages are new). Version 1 blobs (no ``pad``) still decode.
The encoder yields pieces (small CBOR headers and zero-copy views of the arrays), so a model is
never copied whole just to be sent.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import cbor2
import numpy as np

from p2pnode_protocols.framing import cbor_head

MAGIC = "p2pnode-tensors"
VERSION = 2
ALIGN = 64  # arrays' bytes start at multiples of this: numpy needs at most 16, a cache line 64
MEDIA_TYPE = "application/x-p2pnode-tensors"


class TensorCodecError(ValueError):
    """An array that cannot be encoded, or bytes that are not an encoded state dict."""


def _pad(at: int, data_head: int) -> bytes:
    """The shortest zero-filled byte string item after which, and a head of ``data_head``
    bytes, the next byte is at a multiple of ALIGN (``at``: where the item starts)."""
    for n in range(2 * ALIGN):
        item = cbor_head(2, n)
        if (at + len(item) + n + data_head) % ALIGN == 0:
            return item + bytes(n)
    raise AssertionError("some padding below 2 * ALIGN always fits")


def encode_pieces(tensors: Mapping[str, Any]) -> Iterator[bytes | memoryview]:
    """Yield the encoding of ``tensors`` in pieces whose concatenation is the blob."""
    if not isinstance(tensors, Mapping):
        raise TensorCodecError("tensors must be a mapping of names to arrays")
    piece = cbor_head(4, 3) + cbor2.dumps(MAGIC) + cbor2.dumps(VERSION) + cbor_head(4, len(tensors))
    at = len(piece)  # bytes yielded so far
    yield piece
    for name, value in tensors.items():
        if not isinstance(name, str):
            raise TensorCodecError(f"tensor names must be strings, got {type(name).__name__}")
        array = np.asarray(value)
        dtype = array.dtype
        if dtype.kind not in "biufc" or dtype.fields is not None:
            raise TensorCodecError(f"tensor {name!r}: dtype {dtype} is not numeric")
        le = dtype.newbyteorder("<") if dtype.itemsize > 1 else dtype
        array = array.astype(le, order="C", copy=False)  # keeps 0-d arrays 0-d
        data = memoryview(array.reshape(-1).view(np.uint8)) if array.size else memoryview(b"")
        entry = (
            cbor_head(4, 5)
            + cbor2.dumps(name, canonical=True)
            + cbor2.dumps(le.str, canonical=True)
            + cbor2.dumps(list(array.shape), canonical=True)
        )
        data_head = cbor_head(2, data.nbytes)
        piece = entry + _pad(at + len(entry), len(data_head)) + data_head
        at += len(piece) + data.nbytes
        yield piece
        if data.nbytes:
            yield data


def encode(tensors: Mapping[str, Any]) -> bytes:
    return b"".join(encode_pieces(tensors))


def metadata(tensors: Mapping[str, Any]) -> dict[str, Any]:
    """Names, dtypes and shapes, for the blob manifest (deterministic, small)."""
    out = []
    for name, value in tensors.items():
        array = np.asarray(value)
        le = array.dtype.newbyteorder("<") if array.dtype.itemsize > 1 else array.dtype
        out.append([name, le.str, list(array.shape)])
    return {"tensors": out}


class _Walk:
    """A cursor over the envelope's CBOR: only the items :func:`encode_pieces` writes (arrays,
    text, unsigned integers, byte strings, definite lengths), each bounded by what is left."""

    __slots__ = ("at", "view")

    def __init__(self, view: memoryview) -> None:
        self.view = view
        self.at = 0

    def head(self, major: int) -> int:
        view, at = self.view, self.at
        if at >= len(view):
            raise TensorCodecError("truncated")
        first = view[at]
        if first >> 5 != major:
            raise TensorCodecError(f"expected CBOR major type {major}, got {first >> 5}")
        info = first & 31
        if info < 24:
            self.at = at + 1
            return info
        if info > 27:
            raise TensorCodecError("indefinite or reserved CBOR length")
        extra = 1 << (info - 24)
        if at + 1 + extra > len(view):
            raise TensorCodecError("truncated")
        self.at = at + 1 + extra
        return int.from_bytes(view[at + 1 : at + 1 + extra], "big")

    def span(self, major: int) -> tuple[int, int]:
        """A byte or text string's (start, end) in the buffer."""
        n = self.head(major)
        start = self.at
        if n > len(self.view) - start:
            raise TensorCodecError("truncated")
        self.at = start + n
        return start, start + n

    def text(self) -> str:
        start, end = self.span(3)
        try:
            return str(self.view[start:end], "utf-8")
        except UnicodeDecodeError:
            raise TensorCodecError("text is not UTF-8") from None


def decode(data: bytes | bytearray | memoryview) -> dict[str, np.ndarray]:
    """Inverse of :func:`encode`; raises TensorCodecError on anything malformed.

    Arrays are views of ``data`` where they can be (no copy of a model to decode it): in a
    ``bytearray`` they are writable and keep it alive; bytes that are read-only, or an array
    not aligned for its dtype, are copied.
    """
    view = memoryview(data).cast("B")
    walk = _Walk(view)
    try:
        envelope = walk.head(4) == 3 and walk.text() == MAGIC
    except TensorCodecError:
        envelope = False
    if not envelope:
        raise TensorCodecError(
            "not an encoded state dict: the bytes do not start with the tensors envelope"
            f" (what put_tensors stores, media type {MEDIA_TYPE})"
        )
    version = walk.head(0)
    if version not in (1, VERSION):
        raise TensorCodecError(f"unsupported tensor codec version {version!r}")
    out: dict[str, np.ndarray] = {}
    for _ in range(walk.head(4)):
        if walk.head(4) != (4 if version == 1 else 5):
            raise TensorCodecError("bad tensor entry")
        name = walk.text()
        dtype_str = walk.text()
        rank = walk.head(4)
        if rank > 64:
            raise TensorCodecError(f"tensor {name!r}: rank {rank}")
        shape = [walk.head(0) for _ in range(rank)]
        if version > 1:
            pad_start, pad_end = walk.span(2)
            if pad_end - pad_start >= 2 * ALIGN or any(view[pad_start:pad_end]):
                raise TensorCodecError(f"tensor {name!r}: bad padding")
        start, end = walk.span(2)
        try:
            dtype = np.dtype(dtype_str)
        except Exception:  # numpy's parser raises TypeError, ValueError, SyntaxError...
            raise TensorCodecError(f"bad dtype {dtype_str!r}") from None
        if dtype.kind not in "biufc" or dtype.fields is not None:
            raise TensorCodecError(f"tensor {name!r}: bad dtype {dtype_str!r}")
        count = 1
        for d in shape:
            count *= d
        if count * dtype.itemsize != end - start:
            raise TensorCodecError(f"tensor {name!r}: {end - start} bytes for shape {shape}")
        if name in out:
            raise TensorCodecError(f"tensor {name!r} appears twice")
        array = np.frombuffer(view, dtype=dtype, count=count, offset=start).reshape(shape)
        if view.readonly or not array.flags.aligned:
            array = array.copy()
        out[name] = array
    if walk.at != len(view):
        raise TensorCodecError(f"{len(view) - walk.at} bytes after the envelope")
    return out
