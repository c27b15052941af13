"""The operation engine wired in memory: exact sums, every part from every member, checks."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pnode.collectives.engine import Algorithm, Kind, OpSpec
from p2pnode_protocols.collectives.wire import PartError

from .engine_helpers import run_ops


def _inputs(n: int, length: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    # integers: every sum is exact in float32 whatever the order of the additions
    return [rng.integers(-1000, 1000, length).astype(np.float32) for _ in range(n)]


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 9),
    length=st.integers(0, 300),
    part_len=st.integers(1, 64),
    algorithm=st.sampled_from(list(Algorithm)),
    seed=st.integers(0, 2**16),
)
def test_all_reduce_is_exact_for_every_member(n, length, part_len, algorithm, seed) -> None:
    spec = OpSpec(Kind.ALL_REDUCE, length, algorithm=algorithm, part_len=part_len)
    xs = _inputs(n, length, seed)
    ops = run_ops(spec, xs, seed=seed)
    want = np.sum(xs, axis=0) if n else None
    for op in ops:
        assert op.done
        np.testing.assert_array_equal(op.result, want)


@pytest.mark.parametrize("algorithm", list(Algorithm))
def test_mean_is_identical_on_every_member(algorithm: Algorithm) -> None:
    rng = np.random.default_rng(3)
    xs = [rng.standard_normal(1001).astype(np.float32) for _ in range(5)]
    ops = run_ops(
        OpSpec(Kind.ALL_REDUCE, 1001, algorithm=algorithm, reduce="mean", part_len=97), xs
    )
    for op in ops[1:]:
        np.testing.assert_array_equal(op.result, ops[0].result)
    np.testing.assert_allclose(ops[0].result, np.mean(xs, axis=0), atol=1e-6)


@pytest.mark.parametrize("codec,tol", [("fp16", 2e-3), ("int8", 0.05)])
@pytest.mark.parametrize("algorithm", list(Algorithm))
def test_compressed_within_bound_and_identical(
    codec: str, tol: float, algorithm: Algorithm
) -> None:
    rng = np.random.default_rng(5)
    xs = [rng.uniform(-1, 1, 3000).astype(np.float32) for _ in range(4)]
    spec = OpSpec(Kind.ALL_REDUCE, 3000, algorithm=algorithm, codec=codec, part_len=700)
    ops = run_ops(spec, xs)
    for op in ops[1:]:
        np.testing.assert_array_equal(op.result, ops[0].result)
    assert np.max(np.abs(ops[0].result - np.sum(xs, axis=0))) < tol * 4


def test_topk_error_feedback_sends_everything_over_calls() -> None:
    rng = np.random.default_rng(9)
    length, n = 4000, 3
    xs = [rng.standard_normal(length).astype(np.float32) for _ in range(n)]
    residuals = [np.zeros(length, np.float32) for _ in range(n)]
    total = np.zeros(length, np.float32)
    calls = 60
    for i in range(calls):
        spec = OpSpec(Kind.ALL_REDUCE, length, codec="topk", part_len=1000)
        ops = run_ops(spec, xs, seed=i, residuals=residuals)
        total += ops[0].result
    # what was not sent is still in the residuals: result + residuals == exact, call after call
    exact = calls * np.sum(xs, axis=0)
    np.testing.assert_allclose(total + np.sum(residuals, axis=0), exact, rtol=1e-3, atol=0.05)


def test_broadcast_and_gather() -> None:
    xs = _inputs(4, 777, 1)
    ops = run_ops(OpSpec(Kind.BROADCAST, 777, root=2, part_len=100), xs)
    for op in ops:
        np.testing.assert_array_equal(op.result, xs[2])
    values = [b"a", b"", b"ccc", b"dd"]
    ops = run_ops(OpSpec(Kind.ALL_GATHER, 0), values)
    for op in ops:
        assert op.gathered == values


def test_short_and_corrupt_and_mismatched_parts_are_refused() -> None:
    xs = _inputs(3, 100, 2)
    spec = OpSpec(Kind.ALL_REDUCE, 100, algorithm=Algorithm.BUTTERFLY, part_len=10)

    def short(to, header, payload):  # type: ignore[no-untyped-def]
        if header.sender == 1:
            cut = payload[:-4]
            return dataclasses.replace(header, count=header.count - 1, nbytes=len(cut)), cut
        return header, payload

    with pytest.raises(PartError, match="rank 1"):
        run_ops(spec, xs, tamper=short)

    def other_op(to, header, payload):  # type: ignore[no-untyped-def]
        return dataclasses.replace(header, desc=header.desc ^ 1), payload

    with pytest.raises(PartError, match="different operation"):
        run_ops(spec, xs, tamper=other_op)

    def twice(to, header, payload):  # type: ignore[no-untyped-def]
        return dataclasses.replace(header, offset=0), payload

    with pytest.raises(PartError):
        run_ops(spec, xs, tamper=twice)
