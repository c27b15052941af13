"""Compression of updates: fp16, stochastic 8/4-bit quantisation, top-k and random-k.

An encoded update is self-describing bytes: a 16-byte header (magic ``P2U1``, scheme, vector
length) then the scheme's fields, so a validator decodes any update with :func:`decode` and no
side information, and its compressed size is simply ``len(encoded)``. All multi-byte fields are
little-endian. Layouts after the header:

``none``   float32[size]
``fp16``   float16[size] (values beyond the float16 range saturate to +-65504)
``quant``  u8 bits, 3 pad, u32 block; float32 lo[nb], float32 step[nb]; codes packed
           ``8 // bits`` per byte, low bits first (``nb = ceil(size / block)``)
``topk``   u64 k, u32 block, 4 pad; u32 counts[nb] (only if ``nb = ceil(size / block) > 1``);
           uint16 offsets[k]; values[k]
``randk``  u64 k, u64 seed; values[k] at ``random_k_indices(size, k, seed)``

The sparsifiers' values are float16 when bit 0 of the header's flags is set (the default:
``Compressor(values="float16")``, saturating at +-65504), else float32. Top-k indices are split
into blocks of ``block <= 65,536`` coordinates: ``counts[b]`` says how many kept coordinates lie
in block ``b`` and each one is stored as its uint16 offset from the block start, ascending within
the block, so an index costs 2 bytes at any vector size (plus 4 bytes per block: 64 bytes at 1M
coordinates). With float16 values top-1% costs 4 bytes per kept coordinate, about 100x fewer
than float32 at 1M and 10M parameters. The rounding to float16 is not lost under
:class:`ErrorFeedback`: the residual is computed against the decoded vector, so it keeps it.

Quantisation is stochastic rounding between the two nearest of ``2**bits`` levels spanning each
block's [min, max]: unbiased, and off by less than one step per coordinate. Randomness comes
only from the numpy Generator the caller passes (the trainer's seeded stream); decoding is
deterministic. Random-k sends a seed instead of indices. Sparsifiers do not rescale: they are
meant to run under :class:`ErrorFeedback` (Stich et al., 2018; Karimireddy et al., 2019), which
keeps on the trainer what was not sent and adds it to the next update.

:func:`decode` bounds every size read from the bytes before it allocates anything.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

MAGIC = b"P2U1"
_HEADER = struct.Struct("<4sBBHQ")  # magic, scheme, flags, reserved, size
_QUANT = struct.Struct("<B3xI")
_TOPK = struct.Struct("<QI4x")
#: header flag: the sparsifier's values are float16 (else float32)
FLAG_F16_VALUES = 0x01
#: top-k index block length: offsets within a block fit a uint16
TOPK_BLOCK = 1 << 16
_RANDK = struct.Struct("<QQ")
FP16_MAX = float(np.finfo(np.float16).max)

#: decode refuses vectors longer than this unless told otherwise (1 G params = 4 GB of f32).
DEFAULT_MAX_SIZE = 1 << 30


class Scheme(IntEnum):
    NONE = 0
    FP16 = 1
    QUANT = 2
    TOPK = 3
    RANDK = 4


class DecodeError(ValueError):
    """The bytes are not a well-formed encoded update."""


def _header(scheme: Scheme, size: int, flags: int = 0) -> bytes:
    return _HEADER.pack(MAGIC, int(scheme), flags, 0, size)


def _as_f32(vec: np.ndarray) -> np.ndarray:
    vec = np.asarray(vec)
    if vec.ndim != 1 or vec.dtype.kind != "f":
        raise ValueError("an update is a 1-D float vector")
    if not np.isfinite(vec).all():
        raise ValueError("cannot compress a vector holding NaN or inf")
    return np.ascontiguousarray(vec, dtype=np.float32)


def _k_for(size: int, ratio: float) -> int:
    if not 0.0 < ratio <= 1.0:
        raise ValueError("ratio must lie in (0, 1]")
    return min(size, max(1, int(np.ceil(ratio * size)))) if size else 0


def random_k_indices(size: int, k: int, seed: int) -> np.ndarray:
    """The ascending coordinates random-k keeps for ``seed``: shared by encoder and decoder."""
    rng = np.random.Generator(np.random.PCG64(seed))
    return np.sort(rng.choice(size, size=k, replace=False)).astype(np.int64)


def _pack_codes(codes: np.ndarray, bits: int) -> bytes:
    if bits == 8:
        return codes.astype(np.uint8).tobytes()
    per = 8 // bits
    padded = np.zeros(-(-codes.size // per) * per, dtype=np.uint8)
    padded[: codes.size] = codes
    groups = padded.reshape(-1, per)
    packed = np.zeros(groups.shape[0], dtype=np.uint8)
    for j in range(per):
        packed |= groups[:, j] << np.uint8(j * bits)
    return packed.tobytes()


def _unpack_codes(raw: bytes, bits: int, size: int) -> np.ndarray:
    packed = np.frombuffer(raw, dtype=np.uint8)
    if bits == 8:
        return packed[:size]
    per = 8 // bits
    mask = np.uint8((1 << bits) - 1)
    groups = np.stack([(packed >> np.uint8(j * bits)) & mask for j in range(per)], axis=1)
    return groups.reshape(-1)[:size]


@dataclass(frozen=True, slots=True)
class Compressor:
    """One compression scheme and its knobs; ``encode`` gives bytes for :func:`decode`.

    ``kind`` is one of ``none``, ``fp16``, ``int8``, ``int4``, ``topk``, ``randk``. ``ratio`` is
    the fraction of coordinates the sparsifiers keep; ``block`` the quantisation block length;
    ``values`` (``float16`` or ``float32``) how the sparsifiers store the values they keep.
    """

    kind: str = "none"
    ratio: float = 0.01
    block: int = 256
    values: str = "float16"
    #: quantisation's rounding: ``stochastic`` (unbiased: what trainers send) or ``nearest``
    #: (off by at most half a step, and four times faster: what collectives send)
    rounding: str = "stochastic"

    def __post_init__(self) -> None:
        if self.kind not in COMPRESSION_KINDS:
            raise ValueError(f"unknown compression {self.kind!r}; known: {COMPRESSION_KINDS}")
        if self.block < 1:
            raise ValueError("block must be >= 1")
        if self.values not in ("float16", "float32"):
            raise ValueError("values must be 'float16' or 'float32'")
        if self.rounding not in ("stochastic", "nearest"):
            raise ValueError("rounding must be 'stochastic' or 'nearest'")
        _k_for(1, self.ratio)

    @property
    def needs_error_feedback(self) -> bool:
        return self.kind in ("topk", "randk")

    def encode(self, vec: np.ndarray, rng: np.random.Generator) -> bytes:
        v = _as_f32(vec)
        size = v.shape[0]
        if self.kind == "none":
            return _header(Scheme.NONE, size) + v.tobytes()
        if self.kind == "fp16":
            clipped = np.clip(v, -FP16_MAX, FP16_MAX)
            return _header(Scheme.FP16, size) + clipped.astype(np.float16).tobytes()
        if self.kind in ("int8", "int4"):
            return self._quantize(v, 8 if self.kind == "int8" else 4, rng)
        k = _k_for(size, self.ratio)
        f16 = self.values == "float16"
        flags = FLAG_F16_VALUES if f16 else 0
        if self.kind == "topk":
            # argpartition finds the k largest magnitudes in O(size); then sort for the layout.
            idx = np.sort(np.argpartition(-np.abs(v), k - 1)[:k]) if k else np.zeros(0, np.int64)
            nb = -(-size // TOPK_BLOCK)
            blk = idx // TOPK_BLOCK
            counts = np.bincount(blk, minlength=nb).astype("<u4") if nb > 1 else None
            offsets = (idx - blk * TOPK_BLOCK).astype("<u2")
            return (
                _header(Scheme.TOPK, size, flags)
                + _TOPK.pack(k, TOPK_BLOCK)
                + (counts.tobytes() if counts is not None else b"")
                + offsets.tobytes()
                + _sparse_values(v[idx], f16)
            )
        seed = int(rng.integers(0, 2**63))
        idx = random_k_indices(size, k, seed)
        return (
            _header(Scheme.RANDK, size, flags) + _RANDK.pack(k, seed) + _sparse_values(v[idx], f16)
        )

    def _quantize(self, v: np.ndarray, bits: int, rng: np.random.Generator) -> bytes:
        if self.rounding == "nearest":
            return self._quantize_nearest(v, bits)
        size = v.shape[0]
        nb = -(-size // self.block)
        padded = np.zeros(nb * self.block, dtype=np.float64)
        padded[:size] = v
        # Padding repeats the block's last real value so it never widens the block's range.
        if nb * self.block > size and size:
            padded[size:] = v[-1]
        blocks = padded.reshape(nb, self.block)
        lo = blocks.min(axis=1).astype(np.float32)
        hi = blocks.max(axis=1).astype(np.float32)
        levels = (1 << bits) - 1
        step = ((hi.astype(np.float64) - lo) / levels).astype(np.float32)
        safe = np.where(step > 0, step, 1.0).astype(np.float64)
        scaled = (blocks - lo[:, None]) / safe[:, None]
        codes = np.floor(scaled + rng.random(blocks.shape))
        codes = np.clip(codes, 0, levels).astype(np.uint8).reshape(-1)[:size]
        return (
            _header(Scheme.QUANT, size)
            + _QUANT.pack(bits, self.block)
            + lo.tobytes()
            + step.tobytes()
            + _pack_codes(codes, bits)
        )

    def _quantize_nearest(self, v: np.ndarray, bits: int) -> bytes:
        """Round to the nearest level, in float32 and in place: the same layout and levels
        as the stochastic rounding (so :func:`decode` reads it), without the random draws."""
        size, block = v.shape[0], self.block
        nb = -(-size // block)
        if nb * block != size:
            padded = np.empty(nb * block, dtype=np.float32)
            padded[:size] = v
            padded[size:] = v[-1] if size else 0.0
        else:
            padded = v
        blocks = padded.reshape(nb, block)
        lo = blocks.min(axis=1)
        hi = blocks.max(axis=1)
        levels = (1 << bits) - 1
        step = ((hi.astype(np.float64) - lo) / levels).astype(np.float32)
        inv = np.divide(np.float32(1), step, out=np.zeros_like(step), where=step > 0)
        scaled = blocks - lo[:, None]
        scaled *= inv[:, None]
        scaled += np.float32(0.5)
        np.minimum(scaled, np.float32(levels), out=scaled)
        codes = scaled.astype(np.uint8).reshape(-1)[:size]
        return (
            _header(Scheme.QUANT, size)
            + _QUANT.pack(bits, block)
            + lo.astype("<f4").tobytes()
            + step.tobytes()
            + _pack_codes(codes, bits)
        )


COMPRESSION_KINDS = ("none", "fp16", "int8", "int4", "topk", "randk")


def _sparse_values(values: np.ndarray, f16: bool) -> bytes:
    if f16:
        return np.clip(values, -FP16_MAX, FP16_MAX).astype("<f2").tobytes()
    return values.astype("<f4").tobytes()


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.pos = 0

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise DecodeError(f"truncated: need {n} bytes at offset {self.pos}")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def array(self, dtype: type, count: int) -> np.ndarray:
        item = np.dtype(dtype).itemsize
        return np.frombuffer(self.take(count * item), dtype=np.dtype(dtype).newbyteorder("<"))

    def done(self) -> None:
        if self.pos != len(self.data):
            raise DecodeError(f"{len(self.data) - self.pos} trailing bytes")


def decode(data: bytes, max_size: int = DEFAULT_MAX_SIZE) -> np.ndarray:
    """The float32 vector an encoded update stands for. Raises :class:`DecodeError`."""
    r = _Reader(data)
    magic, scheme_id, flags, _reserved, size = _HEADER.unpack(r.take(_HEADER.size))
    if magic != MAGIC:
        raise DecodeError("not an encoded update (bad magic)")
    if flags & ~FLAG_F16_VALUES:
        raise DecodeError(f"unknown flags {flags:#x}")
    if size > max_size:
        raise DecodeError(f"vector of {size} exceeds the bound {max_size}")
    try:
        scheme = Scheme(scheme_id)
    except ValueError:
        raise DecodeError(f"unknown scheme {scheme_id}") from None
    if flags and scheme not in (Scheme.TOPK, Scheme.RANDK):
        raise DecodeError(f"flags {flags:#x} on a dense scheme")
    value_type = np.float16 if flags & FLAG_F16_VALUES else np.float32
    out: np.ndarray
    if scheme is Scheme.NONE:
        out = r.array(np.float32, size).astype(np.float32)
    elif scheme is Scheme.FP16:
        out = r.array(np.float16, size).astype(np.float32)
    elif scheme is Scheme.QUANT:
        bits, block = _QUANT.unpack(r.take(_QUANT.size))
        if bits not in (4, 8) or block < 1:
            raise DecodeError(f"bad quantisation fields bits={bits} block={block}")
        nb = -(-size // block)
        lo = r.array(np.float32, nb)
        step = r.array(np.float32, nb)
        codes = _unpack_codes(r.take(-(-size * bits // 8)).tobytes(), bits, size)
        # Block by block through broadcasting: the same float32 arithmetic per coordinate as
        # indexing lo and step per coordinate, without the index array. One block may be
        # wider than the vector (the header's block is the sender's to choose, up to 2**32):
        # then only its first ``size`` slots exist, so the allocation stays below 2 * size.
        width = block if nb > 1 else size
        full = np.empty(nb * width, dtype=np.float32)
        full[:size] = codes
        full[size:] = 0
        grid = full.reshape(nb, width)
        grid *= step[:, None]
        grid += lo[:, None]
        out = full[:size]
    elif scheme is Scheme.TOPK:
        k, block = _TOPK.unpack(r.take(_TOPK.size))
        if k > size or not 1 <= block <= TOPK_BLOCK:
            raise DecodeError(f"bad top-k fields k={k} block={block}")
        nb = -(-size // block)
        counts = (
            r.array(np.uint32, nb).astype(np.int64)
            if nb > 1
            else np.array([k] * nb, dtype=np.int64)  # none at all for an empty vector
        )
        if int(np.sum(counts)) != k:
            raise DecodeError(f"top-k block counts sum to {int(np.sum(counts))}, not k={k}")
        offsets = r.array(np.uint16, k).astype(np.int64)
        values = r.array(value_type, k).astype(np.float32)
        idx = np.repeat(np.arange(nb, dtype=np.int64) * block, counts) + offsets
        if k and (np.any(offsets >= block) or idx[-1] >= size or np.any(np.diff(idx) <= 0)):
            raise DecodeError("top-k indices out of range or not strictly ascending")
        out = np.zeros(size, dtype=np.float32)
        out[idx] = values
    else:
        k, seed = _RANDK.unpack(r.take(_RANDK.size))
        if k > size:
            raise DecodeError(f"random-k keeps {k} of {size}")
        values = r.array(value_type, k).astype(np.float32)
        out = np.zeros(size, dtype=np.float32)
        out[random_k_indices(size, k, seed)] = values
    r.done()
    if not np.isfinite(out).all():
        raise DecodeError("decoded update holds NaN or inf")
    return out


@dataclass(slots=True)
class ErrorFeedback:
    """Trainer-side error feedback: compress ``delta + residual`` and keep what was lost.

    After each :meth:`encode`, ``residual`` holds exactly ``(delta + old residual) - decode(...)``
    so over rounds every coordinate's mass is eventually sent.
    """

    compressor: Compressor
    residual: np.ndarray | None = field(default=None)

    def encode(self, delta: np.ndarray, rng: np.random.Generator) -> bytes:
        d = _as_f32(delta)
        corrected = d if self.residual is None else d + self.residual
        blob = self.compressor.encode(corrected, rng)
        self.residual = corrected - decode(blob)
        return blob
