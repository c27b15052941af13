"""The tensor codec: a state dict (names to numpy arrays) as deterministic bytes.

Equal tensors always give equal bytes, hence equal blob keys: each array is written as its
little-endian dtype string, shape and C-order bytes, in the mapping's order, inside a CBOR
envelope ``["p2pnode-tensors", 1, [[name, dtype, shape, data], ...]]``. The encoder yields
pieces (small CBOR headers and zero-copy views of the arrays), so a model is never copied
whole just to be sent.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import cbor2
import numpy as np

MAGIC = "p2pnode-tensors"
VERSION = 1
MEDIA_TYPE = "application/x-p2pnode-tensors"


class TensorCodecError(ValueError):
    """An array that cannot be encoded, or bytes that are not an encoded state dict."""


def _head(major: int, n: int) -> bytes:
    """A CBOR head: major type and argument, shortest form (canonical)."""
    if n < 24:
        return bytes([major << 5 | n])
    for extra, code in ((1, 24), (2, 25), (4, 26), (8, 27)):
        if n < 1 << (8 * extra):
            return bytes([major << 5 | code]) + n.to_bytes(extra, "big")
    raise TensorCodecError("length too large for CBOR")


def encode_pieces(tensors: Mapping[str, Any]) -> Iterator[bytes | memoryview]:
    """Yield the encoding of ``tensors`` in pieces whose concatenation is the blob."""
    if not isinstance(tensors, Mapping):
        raise TensorCodecError("tensors must be a mapping of names to arrays")
    yield _head(4, 3) + cbor2.dumps(MAGIC) + cbor2.dumps(VERSION) + _head(4, len(tensors))
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
        yield (
            _head(4, 4)
            + cbor2.dumps(name, canonical=True)
            + cbor2.dumps(le.str, canonical=True)
            + cbor2.dumps(list(array.shape), canonical=True)
            + _head(2, data.nbytes)
        )
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


def decode(data: bytes | memoryview) -> dict[str, np.ndarray]:
    """Inverse of :func:`encode`; raises TensorCodecError on anything malformed."""
    try:
        raw = cbor2.loads(bytes(data))
    except Exception as exc:
        raise TensorCodecError(f"not an encoded state dict: {exc}") from None
    if not (isinstance(raw, list) and len(raw) == 3 and raw[0] == MAGIC):
        raise TensorCodecError("not an encoded state dict (bad envelope)")
    if raw[1] != VERSION:
        raise TensorCodecError(f"unsupported tensor codec version {raw[1]!r}")
    out: dict[str, np.ndarray] = {}
    for entry in raw[2]:
        if not (isinstance(entry, list) and len(entry) == 4):
            raise TensorCodecError("bad tensor entry")
        name, dtype_str, shape, buf = entry
        if not isinstance(name, str) or not isinstance(buf, bytes):
            raise TensorCodecError("bad tensor entry")
        try:
            dtype = np.dtype(dtype_str)
        except TypeError:
            raise TensorCodecError(f"bad dtype {dtype_str!r}") from None
        if dtype.kind not in "biufc" or not isinstance(shape, list):
            raise TensorCodecError(f"tensor {name!r}: bad dtype or shape")
        if not all(isinstance(d, int) and d >= 0 for d in shape):
            raise TensorCodecError(f"tensor {name!r}: bad shape {shape!r}")
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if count * dtype.itemsize != len(buf):
            raise TensorCodecError(f"tensor {name!r}: {len(buf)} bytes for shape {shape}")
        if name in out:
            raise TensorCodecError(f"tensor {name!r} appears twice")
        out[name] = np.frombuffer(buf, dtype=dtype).reshape(shape).copy()
    return out
