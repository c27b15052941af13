"""Compression: self-describing encodings, round-trip error bounds, error feedback."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from p2pnode.training.compression import (
    FP16_MAX,
    Compressor,
    DecodeError,
    ErrorFeedback,
    decode,
    random_k_indices,
)

vectors = hnp.arrays(
    np.float32,
    st.integers(1, 600),
    elements=st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False, width=32),
)


@given(v=vectors)
def test_none_is_lossless_and_fp16_is_within_half_an_ulp(v: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    blob = Compressor("none").encode(v, rng)
    assert len(blob) == 16 + 4 * v.size
    np.testing.assert_array_equal(decode(blob), v)
    blob = Compressor("fp16").encode(v, rng)
    assert len(blob) == 16 + 2 * v.size
    out = decode(blob)
    # float16 has 11 significant bits: relative error <= 2**-11, plus subnormal spacing 2**-24.
    assert np.all(np.abs(out - v) <= np.abs(v) * 2.0**-11 + 2.0**-24)


def test_fp16_saturates_instead_of_overflowing() -> None:
    out = decode(Compressor("fp16").encode(np.array([1e6, -1e6], np.float32), None))  # type: ignore[arg-type]
    np.testing.assert_array_equal(out, [FP16_MAX, -FP16_MAX])


@pytest.mark.parametrize("kind,bits", [("int8", 8), ("int4", 4)])
@given(v=vectors, block=st.sampled_from([1, 7, 64, 256]), seed=st.integers(0, 2**32))
def test_quantization_error_is_below_one_step(
    kind: str, bits: int, v: np.ndarray, block: int, seed: int
) -> None:
    comp = Compressor(kind, block=block)
    blob = comp.encode(v, np.random.default_rng(seed))
    nb = -(-v.size // block)
    assert len(blob) == 16 + 8 + 8 * nb + -(-v.size * bits // 8)
    out = decode(blob)
    levels = (1 << bits) - 1
    padded = np.concatenate([v, np.full(nb * block - v.size, v[-1], np.float32)])
    blocks = padded.reshape(nb, block).astype(np.float64)
    step = np.repeat((blocks.max(1) - blocks.min(1)) / levels, block)[: v.size]
    # One step of the grid, plus float32 rounding of lo + code * step.
    slack = 1e-6 * (np.abs(v) + np.repeat(np.abs(blocks).max(1), block)[: v.size]) + 1e-30
    assert np.all(np.abs(out.astype(np.float64) - v) <= step * (1 + 1e-6) + slack)


def test_stochastic_quantization_is_unbiased_and_seeded() -> None:
    v = np.linspace(-1, 1, 1000).astype(np.float32)
    comp = Compressor("int4", block=1000)
    mean = np.mean([decode(comp.encode(v, np.random.default_rng(s))) for s in range(400)], axis=0)
    step = 2 / 15
    # The average of 400 unbiased draws is within a few standard errors (step/2/sqrt(400)).
    assert np.max(np.abs(mean - v)) < 5 * (step / 2) / 20
    a = comp.encode(v, np.random.default_rng(5))
    assert a == comp.encode(v, np.random.default_rng(5))
    assert a != comp.encode(v, np.random.default_rng(6))


@given(v=vectors, ratio=st.sampled_from([0.01, 0.1, 0.5, 1.0]))
def test_topk_keeps_the_largest_magnitudes(v: np.ndarray, ratio: float) -> None:
    blob = Compressor("topk", ratio=ratio, values="float32").encode(v, np.random.default_rng(0))
    out = decode(blob)
    k = max(1, int(np.ceil(ratio * v.size)))
    kept = out != 0
    assert np.count_nonzero(kept) <= k
    np.testing.assert_array_equal(out[kept], v[kept])
    # Nothing dropped is larger in magnitude than anything kept.
    dropped = np.abs(v[(out == 0) & (v != 0)])
    sent = np.abs(out[kept])
    if dropped.size and sent.size:
        assert dropped.max() <= sent.min()
    assert len(blob) == 16 + 16 + (2 + 4) * k  # one block: no counts, uint16 offsets
    # The default stores the same coordinates' values as float16: 2 bytes each.
    blob16 = Compressor("topk", ratio=ratio).encode(v, np.random.default_rng(0))
    assert len(blob16) == 16 + 16 + (2 + 2) * k
    out16 = decode(blob16)
    assert np.all(np.abs(out16 - out) <= np.abs(out) * 2.0**-11 + 2.0**-24)
    assert np.all(out16[~kept] == 0)


def test_topk_blocks_hand_computed() -> None:
    # 65,537 coordinates = two blocks (65,536 + 1). Keep 3: indices 5, 65,535 and 65,536.
    v = np.zeros(65_537, np.float32)
    v[[5, 65_535, 65_536]] = [3.0, -2.0, 1.5]
    blob = Compressor("topk", ratio=3 / 65_537).encode(v, np.random.default_rng(0))
    body = blob[32:]
    assert np.frombuffer(body[:8], "<u4").tolist() == [2, 1]  # counts per block
    assert np.frombuffer(body[8:14], "<u2").tolist() == [5, 65_535, 0]  # offsets in the block
    assert np.frombuffer(body[14:], "<f2").tolist() == [3.0, -2.0, 1.5]
    np.testing.assert_array_equal(decode(blob), v)


@given(
    size=st.integers(65_000, 300_000),
    k=st.integers(1, 300),
    seed=st.integers(0, 2**32),
    f16=st.booleans(),
)
def test_topk_round_trips_across_blocks(size: int, k: int, seed: int, f16: bool) -> None:
    rng = np.random.default_rng(seed)
    v = np.zeros(size, np.float32)
    idx = rng.choice(size, k, replace=False)
    v[idx] = rng.uniform(1, 2, k).astype(np.float16).astype(np.float32)  # exact in float16
    comp = Compressor("topk", ratio=k / size, values="float16" if f16 else "float32")
    blob = comp.encode(v, rng)
    kept = int(np.ceil(k / size * size))
    nb = -(-size // 65_536)
    assert len(blob) == 32 + 4 * nb * (nb > 1) + (2 + (2 if f16 else 4)) * kept
    np.testing.assert_array_equal(decode(blob), v)


def test_randk_sends_a_seed_not_indices() -> None:
    v = np.arange(1, 1001, dtype=np.float32)  # exact in float16 too
    assert len(Compressor("randk", ratio=0.05).encode(v, np.random.default_rng(3))) == 32 + 2 * 50
    blob = Compressor("randk", ratio=0.05, values="float32").encode(v, np.random.default_rng(3))
    assert len(blob) == 16 + 16 + 4 * 50
    out = decode(blob)
    idx = np.flatnonzero(out)
    assert idx.size == 50
    np.testing.assert_array_equal(out[idx], v[idx])
    np.testing.assert_array_equal(random_k_indices(1000, 50, 42), random_k_indices(1000, 50, 42))


@pytest.mark.parametrize("size", [1_000_000, 10_000_000])
def test_top_one_percent_is_over_50x_smaller_at_1m_and_10m(size: int) -> None:
    v = np.random.default_rng(0).normal(size=size).astype(np.float32)
    dense = 16 + 4 * size
    sparse = len(Compressor("topk", ratio=0.01).encode(v, np.random.default_rng(0)))
    # 2-byte offsets + 2-byte values per kept coordinate, 4 bytes per 65,536-block, 32 header.
    assert sparse == 32 + 4 * -(-size // 65_536) + 4 * (size // 100)
    assert dense / sparse > 99.5
    rand = len(Compressor("randk", ratio=0.01).encode(v, np.random.default_rng(0)))
    assert dense / rand > 199.5


def test_decode_rejects_malformed_bytes() -> None:
    rng = np.random.default_rng(0)
    good = Compressor("topk", ratio=0.5).encode(np.arange(10, dtype=np.float32), rng)
    decode(good)
    for bad in (
        b"",
        b"XXXX" + good[4:],
        good[:-1],
        good + b"\0",
        good[:4] + bytes([9]) + good[5:],  # unknown scheme
    ):
        with pytest.raises(DecodeError):
            decode(bad)
    with pytest.raises(DecodeError, match="exceeds"):
        decode(good, max_size=5)
    # Indices must ascend strictly (and hence be unique).
    broken = bytearray(good)
    broken[32:34], broken[34:36] = good[34:36], good[32:34]
    with pytest.raises(DecodeError, match="ascending"):
        decode(bytes(broken))
    # Block counts must add up to k; offsets must stay inside their block.
    big = Compressor("topk", ratio=0.01).encode(np.arange(70_000, dtype=np.float32), rng)
    decode(big)
    miscount = bytearray(big)
    miscount[32:36] = (int.from_bytes(big[32:36], "little") + 1).to_bytes(4, "little")
    with pytest.raises(DecodeError, match="counts"):
        decode(bytes(miscount))
    small_block = bytearray(good)
    small_block[24:28] = (2).to_bytes(4, "little")  # block 2: 5 blocks, counts missing
    with pytest.raises(DecodeError):
        decode(bytes(small_block))
    with pytest.raises(DecodeError, match="block"):
        decode(good[:24] + (0).to_bytes(4, "little") + good[28:])
    # The float16 flag is for sparsifiers only, and no other flag exists.
    dense = Compressor("none").encode(np.ones(3, np.float32), rng)
    with pytest.raises(DecodeError, match="dense"):
        decode(dense[:5] + b"\x01" + dense[6:])
    with pytest.raises(DecodeError, match="flags"):
        decode(good[:5] + b"\x03" + good[6:])
    with pytest.raises(ValueError):
        Compressor("int8").encode(np.array([np.nan], np.float32), rng)
    with pytest.raises(ValueError):
        Compressor("zip")
    with pytest.raises(ValueError):
        Compressor("topk", values="int8")


@given(v=vectors, kind=st.sampled_from(["topk", "randk", "int4"]), rounds=st.integers(1, 5))
def test_error_feedback_accounts_for_every_coordinate(
    v: np.ndarray, kind: str, rounds: int
) -> None:
    ef = ErrorFeedback(Compressor(kind, ratio=0.1))
    rng = np.random.default_rng(0)
    sent = np.zeros(v.size, np.float64)
    for _ in range(rounds):
        sent += decode(ef.encode(v, rng))
    assert ef.residual is not None
    # What was sent plus what is held back is exactly what was meant to be sent.
    np.testing.assert_allclose(
        sent + ef.residual, rounds * v.astype(np.float64), rtol=1e-5, atol=1e-2
    )


def test_error_feedback_makes_topk_converge() -> None:
    # Stochastic gradient descent on 0.5 * ||w - target||^2 where only the top 1% of each
    # gradient is sent, and four coordinates carry loud zero-mean noise. Without error feedback
    # the noisy coordinates win the top-k every step and the others never move; with it, the
    # quiet coordinates' residuals grow until they are sent, and w converges (to the noise floor).
    d = 400
    noisy = np.arange(d) < 4
    noise_scale = np.where(noisy, 10.0, 0.0)

    def relative_error(feedback: bool) -> float:
        rng = np.random.default_rng(1)
        target = rng.normal(size=d)
        w = np.zeros(d)
        comp = Compressor("topk", ratio=0.01)
        ef = ErrorFeedback(comp)
        for _ in range(3000):
            grad = ((w - target) + noise_scale * rng.normal(size=d)).astype(np.float32)
            blob = ef.encode(grad, rng) if feedback else comp.encode(grad, rng)
            w -= 0.01 * decode(blob)
        quiet = ~noisy
        return float(np.linalg.norm((w - target)[quiet]) / np.linalg.norm(target[quiet]))

    assert relative_error(feedback=True) < 0.03
    assert relative_error(feedback=False) > 0.5
