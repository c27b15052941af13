"""The committee (who votes) and the replica's tuning knobs, as frozen values.

n = 3f+1 validators tolerate f faulty ones; a quorum is 2f+1. The primary of view v is
``validators[v % n]``, as in the paper. Timeouts are in seconds of whatever clock feeds ``now``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import LocalProtocolError
from .messages import MAX_BATCH, MAX_COMMITTEE, MAX_ENTRIES, MAX_ID_BYTES, MAX_PROOFS

__all__ = ["Committee", "PbftConfig"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Committee:
    """The validator set of one epoch (genesis comes from the network's config)."""

    epoch: int
    validators: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if type(self.epoch) is not int or self.epoch < 0:
            raise LocalProtocolError("epoch must be a non-negative int")
        if type(self.validators) is not tuple or not 1 <= len(self.validators) <= MAX_COMMITTEE:
            raise LocalProtocolError(f"a committee has 1..{MAX_COMMITTEE} validators")
        for v in self.validators:
            if type(v) is not bytes or not 0 < len(v) <= MAX_ID_BYTES:
                raise LocalProtocolError("validator ids are non-empty bytes")
        if len(set(self.validators)) != len(self.validators):
            raise LocalProtocolError("validator ids must be distinct")
        # Cached derived values: the machine asks for these on every message.
        object.__setattr__(self, "_members", frozenset(self.validators))

    _members: frozenset[bytes] = field(default=frozenset(), init=False, repr=False, compare=False)

    @property
    def n(self) -> int:
        return len(self.validators)

    @property
    def f(self) -> int:
        """Faulty validators tolerated: the largest f with 3f+1 <= n."""
        return (self.n - 1) // 3

    @property
    def quorum(self) -> int:
        """2f+1: any two quorums share at least one correct validator."""
        return 2 * self.f + 1

    def is_member(self, node: bytes) -> bool:
        return node in self._members

    def primary(self, view: int) -> bytes:
        return self.validators[view % self.n]


@dataclass(frozen=True, slots=True, kw_only=True)
class PbftConfig:
    """Knobs of one replica. Every replica of a committee must use the same protocol values
    (checkpoint_interval, window), or their checkpoints and windows will not line up."""

    #: K: a checkpoint every K executed entries; the log below a stable checkpoint is dropped.
    checkpoint_interval: int = 16
    #: L: pre-prepares are accepted for h < seq <= h + L, h the stable checkpoint (paper: 2K).
    window: int = 32
    #: Requests in one pre-prepare.
    max_batch: int = 64
    #: Batches the primary keeps in flight before it waits for one to commit (natural batching).
    max_inflight: int = 4
    #: Requests a replica keeps waiting for a slot; more are dropped (the client retries).
    max_pending: int = 4096
    #: A backup with a pending request starts a view change after this without progress.
    request_timeout: float = 2.0
    #: A replica with 2f+1 view changes waits this long for the new view, doubling per failure.
    view_change_timeout: float = 2.0
    #: Cap on the doubled view change timeout.
    max_view_change_timeout: float = 30.0
    #: Period of the status broadcast and the retransmission of in-flight messages.
    status_interval: float = 0.5
    #: Certified entries per state reply.
    max_transfer_entries: int = 64

    def __post_init__(self) -> None:
        ints = ("checkpoint_interval", "window", "max_batch", "max_inflight", "max_pending")
        for name in ints:
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise LocalProtocolError(f"{name} must be a positive int")
        if self.window < self.checkpoint_interval or self.window % self.checkpoint_interval:
            raise LocalProtocolError("window must be a multiple of checkpoint_interval")
        if self.window > MAX_PROOFS:
            raise LocalProtocolError(f"window must be at most {MAX_PROOFS}")
        if self.max_batch > MAX_BATCH:
            raise LocalProtocolError(f"max_batch must be at most {MAX_BATCH}")
        if not 1 <= self.max_transfer_entries <= MAX_ENTRIES:
            raise LocalProtocolError(f"max_transfer_entries must be in 1..{MAX_ENTRIES}")
        for name in (
            "request_timeout",
            "view_change_timeout",
            "max_view_change_timeout",
            "status_interval",
        ):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0 < value < float("inf"):
                raise LocalProtocolError(f"{name} must be a positive finite number")
