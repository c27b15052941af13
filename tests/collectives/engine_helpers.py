"""Run several members' operations against each other in memory (no network)."""

from __future__ import annotations

import random

import numpy as np

from p2pnode.collectives.engine import Operation, OpSpec, Out


def run_ops(
    spec: OpSpec,
    inputs: list[np.ndarray] | list[bytes],
    *,
    seed: int = 0,
    residuals: list[np.ndarray | None] | None = None,
    tamper=None,  # type: ignore[no-untyped-def]
) -> list[Operation]:
    """Start one operation per input and deliver every part, in a seeded random order, until
    none is left; ``tamper(out) -> (header, payload)`` may change a part on its way."""
    n = len(inputs)
    ops = [
        Operation(
            spec,
            rank=r,
            n=n,
            generation=1,
            seq=7,
            data=inputs[r],
            residual=None if residuals is None else residuals[r],
        )
        for r in range(n)
    ]
    rng = random.Random(seed)
    queue: list[Out] = []
    for op in ops:
        queue += op.start()
    while queue:
        out = queue.pop(rng.randrange(len(queue)))
        header, payload = out.header, bytes(out.payload)
        if tamper is not None:
            header, payload = tamper(out.to, header, payload)
        queue += ops[out.to].receive(header, payload)
    return ops
