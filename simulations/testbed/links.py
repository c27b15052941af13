"""Link emulation without I/O: what one directed link of the testbed's switch does to a frame.

The kernel of the machines we test on has no ``netem``, so the switch process
(:mod:`.switch`) emulates delay, jitter, loss and rate itself. This module is the whole of
that logic, with no sockets, no clock and no randomness of its own (``now`` and a seeded
``random.Random`` come in as arguments), so it is unit-tested directly.

One :class:`Shaper` per directed pair of switch ports decides, for each frame offered at
``now``, either a drop (``loss`` or a full queue) or the time at which the frame leaves the
switch. In order:

1. **loss**: the frame is dropped with probability ``loss`` (one draw of the rng).
2. **rate**: a token bucket of ``rate`` bytes/s and a burst of :data:`BURST_SECONDS` worth of
   bytes (at least one maximum frame). A frame takes its length in tokens; the bucket may go
   negative, and the deficit is the backlog waiting in the queue, so a frame leaves the
   bucket when the deficit it left has been refilled. A frame that would make the backlog
   exceed ``queue`` bytes is dropped (tail drop), as a router's bounded buffer does.
3. **delay and jitter**: the frame is released at ``max(prev_release, sent + delay + U(-jitter,
   +jitter))``. The ``max`` keeps each directed link FIFO: jitter varies the spacing of
   frames, it never reorders them (a reordering link would make TCP retransmit spuriously,
   which real paths rarely do at this rate). Under heavy jitter this makes the delay's
   distribution skew upwards, since a frame waits behind a late predecessor.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

BURST_SECONDS = 0.005
"""The token bucket holds this many seconds' worth of bytes (at least :data:`MAX_FRAME`)."""
MAX_FRAME = 65_536
"""The largest frame a port reads (the switch's read size), in bytes."""
DEFAULT_QUEUE = 256 * 1024
"""Bytes of backlog a rate-limited link buffers before it drops at the tail."""
MAX_DELAY = 10.0
"""Upper bound for ``delay`` and ``jitter`` (seconds): a typo, not a network, beyond this."""


class LinkSpecError(ValueError):
    """A :class:`LinkSpec` field is out of range; the message names the field."""


@dataclass(frozen=True, slots=True)
class LinkSpec:
    """One direction of a link: ``delay`` and ``jitter`` in seconds, ``loss`` a fraction in
    [0, 1), ``rate`` in bytes/s (None: unlimited), ``queue`` the bytes a rate-limited link
    buffers before dropping (tail drop)."""

    delay: float = 0.0
    jitter: float = 0.0
    loss: float = 0.0
    rate: int | None = None
    queue: int = DEFAULT_QUEUE

    def __post_init__(self) -> None:
        for name in ("delay", "jitter", "loss"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise LinkSpecError(f"{name} must be a finite number, not {v!r}")
            if v < 0:
                raise LinkSpecError(f"{name} must be >= 0, not {v!r}")
        if self.delay > MAX_DELAY or self.jitter > MAX_DELAY:
            raise LinkSpecError(f"delay and jitter must be at most {MAX_DELAY:g} s")
        if self.jitter > self.delay:
            raise LinkSpecError(
                f"jitter ({self.jitter:g} s) must not exceed delay ({self.delay:g} s): "
                "a frame cannot leave before it arrived"
            )
        if self.loss >= 1:
            raise LinkSpecError(f"loss is a fraction in [0, 1), not {self.loss!r}")
        if self.rate is not None and (
            isinstance(self.rate, bool) or not isinstance(self.rate, int) or self.rate <= 0
        ):
            raise LinkSpecError(f"rate must be a positive int (bytes/s) or None, not {self.rate!r}")
        if isinstance(self.queue, bool) or not isinstance(self.queue, int) or self.queue <= 0:
            raise LinkSpecError(f"queue must be a positive int (bytes), not {self.queue!r}")

    def to_dict(self) -> dict[str, float | int | None]:
        return {
            "delay": self.delay,
            "jitter": self.jitter,
            "loss": self.loss,
            "rate": self.rate,
            "queue": self.queue,
        }

    @classmethod
    def from_dict(cls, d: object) -> LinkSpec:
        """The inverse of :meth:`to_dict`; unknown keys and wrong types raise LinkSpecError."""
        if not isinstance(d, dict):
            raise LinkSpecError(f"a link spec is an object, not {type(d).__name__}")
        unknown = set(d) - {"delay", "jitter", "loss", "rate", "queue"}
        if unknown:
            raise LinkSpecError(f"unknown link spec keys: {sorted(unknown)}")
        try:
            return cls(**d)
        except TypeError as exc:  # pragma: no cover - keys are checked above
            raise LinkSpecError(str(exc)) from None


PERFECT = LinkSpec()


@dataclass(slots=True)
class Decision:
    """What happens to one frame: ``release`` time, or a ``drop`` reason."""

    release: float | None
    drop: str | None = None  # "loss" | "queue"


@dataclass(slots=True)
class Shaper:
    """The state of one directed link (see the module docstring for the rules)."""

    spec: LinkSpec = PERFECT
    tokens: float = field(default=0.0)
    last: float | None = None  # the clock value the bucket was last refilled at
    prev_release: float = float("-inf")

    def set_spec(self, spec: LinkSpec) -> None:
        """Change the link; frames already scheduled keep their release times."""
        self.spec = spec
        self.tokens = min(self.tokens, self.burst)

    @property
    def burst(self) -> float:
        if self.spec.rate is None:
            return 0.0
        return max(float(MAX_FRAME), self.spec.rate * BURST_SECONDS)

    def offer(self, size: int, now: float, rng: random.Random) -> Decision:
        """A frame of ``size`` bytes arrives at ``now``: drop it or say when it leaves."""
        spec = self.spec
        if spec.loss and rng.random() < spec.loss:
            return Decision(None, "loss")
        sent = now
        if spec.rate is not None:
            if self.last is None:
                self.tokens = self.burst
            else:
                self.tokens = min(self.burst, self.tokens + (now - self.last) * spec.rate)
            self.last = now
            after = self.tokens - size
            if -after > spec.queue:
                return Decision(None, "queue")
            self.tokens = after
            if after < 0:
                sent = now + (-after) / spec.rate
        delay = spec.delay
        if spec.jitter:
            delay += rng.uniform(-spec.jitter, spec.jitter)
        release = max(self.prev_release, sent + delay)
        self.prev_release = release
        return Decision(release)
