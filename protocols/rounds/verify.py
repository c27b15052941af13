"""Verified work, the sans-I/O parts: which trainers a round spot-checks, a trainer's salt for
commit then reveal, and the per-peer rate limit on notices.

- :func:`spot_checked`: committed randomness picks the trainers whose tasks the validators re-run.
  The seed is the hash of the round's base model key and the keys of the round's fresh updates:
  every trainer committed to its key before any key was revealed, so none can know whether it
  will be checked when it decides what to send (it can only withhold its reveal, and miss the
  round). Everything hashed is in the result, so every validator picks the same trainers.
- :func:`salt_for`: the salt of a commitment, derived from the trainer's own (deterministic,
  secret until revealed) signature, so the machine needs no randomness of its own.
- :class:`RateLimit`: at most N messages per peer per minute; the clock is the caller's.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable

import cbor2

from p2pnode_protocols.signing import Signer

from .messages import UpdateRef

__all__ = ["RateLimit", "salt_for", "spot_checked"]

_SPOT_DOMAIN = "p2pnode/rounds/spot/1"
_SALT_DOMAIN = "p2pnode/rounds/salt/1"


def spot_checked(
    job: str, round: int, base_key: str, updates: Iterable[UpdateRef], fraction: float
) -> tuple[bytes, ...]:
    """The nodes (sorted) whose fresh updates of ``round`` are re-run: ceil(fraction x n) of
    the n fresh updates, ranked by a hash of the committed seed and the node."""
    fresh = sorted((u.node, u.key) for u in updates if u.round == round)
    if fraction <= 0 or not fresh:
        return ()
    seed = hashlib.sha256(
        cbor2.dumps([_SPOT_DOMAIN, job, round, base_key, [k for _, k in fresh]], canonical=True)
    ).digest()
    k = min(len(fresh), math.ceil(fraction * len(fresh) - 1e-9))
    ranked = sorted(fresh, key=lambda nk: hashlib.sha256(seed + nk[0]).digest())
    return tuple(sorted(node for node, _ in ranked[:k]))


def salt_for(signer: Signer, job: str, round: int, key: str) -> bytes:
    """A commitment's salt: secret until revealed, the same each time for the same update."""
    sig = signer.sign(cbor2.dumps([_SALT_DOMAIN, job, round, key], canonical=True))
    return hashlib.sha256(sig).digest()[:16]


class RateLimit:
    """At most ``per_minute`` events per key in any fixed one-minute window (0: no limit)."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._windows: dict[bytes, tuple[float, int]] = {}

    def allow(self, key: bytes, now: float) -> bool:
        if self.per_minute <= 0:
            return True
        start, n = self._windows.get(key, (now, 0))
        if now - start >= 60.0:
            start, n = now, 0
        if n >= self.per_minute:
            self._windows[key] = (start, n)
            return False
        self._windows[key] = (start, n + 1)
        if len(self._windows) > 4096:  # forget peers idle for a minute
            self._windows = {k: v for k, v in self._windows.items() if now - v[0] < 60.0}
        return True
