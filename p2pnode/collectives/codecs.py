"""How one part of an operation is put on the wire: the learning library's codecs, per part.

``none`` sends float32 as it is; ``fp16`` halves it; ``int8`` is blockwise quantisation
rounded to the nearest of 256 levels (256 coordinates a block, a float32 minimum and step per
block: off by at most half a step); ``topk`` keeps the largest 1% of each part (indices and
float16 values) and relies on the error feedback the service keeps per (group, array length).
Each part carries the learning library's self-describing header, so a receiver decodes with no
side information and checks the count it expected against the one in the bytes.
"""

from __future__ import annotations

import numpy as np

from p2pnode.training.compression import Compressor, DecodeError, decode
from p2pnode_protocols.collectives.wire import Codec, PartError

CODECS: dict[str, Codec] = {
    "none": Codec.NONE,
    "fp16": Codec.FP16,
    "int8": Codec.INT8,
    "topk": Codec.TOPK,
}
TOPK_RATIO = 0.01
_COMPRESSORS = {
    Codec.FP16: Compressor("fp16"),
    Codec.INT8: Compressor("int8", block=256, rounding="nearest"),
    Codec.TOPK: Compressor("topk", ratio=TOPK_RATIO),
}


def codec_of(name: str) -> Codec:
    try:
        return CODECS[name]
    except KeyError:
        raise ValueError(f"unknown codec {name!r}; known: {', '.join(CODECS)}") from None


def encode_part(codec: Codec, values: np.ndarray, rng: np.random.Generator) -> bytes | memoryview:
    """The wire bytes of ``values`` (float32, one dimension) under ``codec``."""
    if codec is Codec.NONE:
        return memoryview(np.ascontiguousarray(values, dtype=np.float32)).cast("B")
    return _COMPRESSORS[codec].encode(values, rng)


def decode_part(codec: Codec, payload: bytes | memoryview, count: int) -> np.ndarray:
    """float32[count] from ``payload``; :class:`PartError` if it is not that."""
    if codec is Codec.NONE:
        if len(payload) != 4 * count:
            raise PartError(f"a part of {count} floats is {4 * count} bytes, not {len(payload)}")
        return np.frombuffer(payload, dtype="<f4")
    try:
        out = decode(bytes(payload), max_size=count)
    except DecodeError as exc:
        raise PartError(f"undecodable part: {exc}") from None
    if out.shape[0] != count:
        raise PartError(f"a part of {count} values decoded to {out.shape[0]}")
    if not np.all(np.isfinite(out)):
        raise PartError("a part holds values that are not finite")
    return out
