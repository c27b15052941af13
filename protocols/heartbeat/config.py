"""``HeartbeatConfig`` and the pure formulas of SWIM + Lifeguard (hashicorp/memberlist ``util.go``).

The constructors ``lan``, ``wan`` and ``local`` hold memberlist's ``DefaultLANConfig``,
``DefaultWANConfig`` and ``DefaultLocalConfig`` numbers; ``daemon`` holds the daemon's defaults
(the defaults of ``membership.*`` in p2pnode/config.py, plus the knobs the config file does not
name), tuned for the 3 s detection aim at a 1 s interval and documented in docs/membership.md.
The daemon and the simulator both start from ``daemon``, so they cannot drift apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from .errors import LocalProtocolError

__all__ = [
    "HeartbeatConfig",
    "remaining_suspicion_time",
    "retransmit_limit",
    "suspicion_timeout",
]


def suspicion_timeout(suspicion_mult: float, n: int, interval: float) -> float:
    """Minimum suspicion time: ``mult * max(1, log10(max(1, n))) * interval`` (memberlist).

    Rounded down to the millisecond, as memberlist's integer arithmetic does.
    """
    node_scale = max(1.0, math.log10(max(1.0, float(n))))
    return math.floor(node_scale * 1000) * suspicion_mult * interval / 1000


def retransmit_limit(retransmit_mult: int, n: int) -> int:
    """How many times each broadcast is sent: ``mult * ceil(log10(n + 1))``."""
    return retransmit_mult * math.ceil(math.log10(n + 1))


def remaining_suspicion_time(
    n: int, k: int, elapsed: float, min_timeout: float, max_timeout: float
) -> float:
    """Lifeguard: the suspicion timeout shrinks on a log scale from ``max`` toward ``min`` as
    ``n`` of the ``k`` expected independent confirmations arrive; minus the time elapsed.

    ``max - log(n+1)/log(k+1) * (max - min)``, floored to the millisecond and never below min.
    """
    if k < 1:
        raw = min_timeout
    else:
        frac = math.log(n + 1.0) / math.log(k + 1.0)
        raw = max_timeout - frac * (max_timeout - min_timeout)
    timeout = math.floor(1000.0 * raw) / 1000.0
    timeout = max(timeout, min_timeout)
    return timeout - elapsed


@dataclass(frozen=True, slots=True, kw_only=True)
class HeartbeatConfig:
    #: Seconds between two probes by this node (one member each, round robin over a shuffled
    #: order). Lifeguard stretches it to ``probe_interval * (awareness + 1)``.
    probe_interval: float = 1.0
    #: Seconds to wait for a direct ack before asking helpers (about the p99 RTT); also each
    #: helper's wait. Stretched by awareness like the interval.
    probe_timeout: float = 0.5
    #: Helpers asked to probe on our behalf when the direct probe times out (SWIM's k).
    indirect_checks: int = 3
    #: Every k-th probe goes to our successor on a ring of all members ordered by a hash of
    #: their ids (0: never, as in memberlist). Each member is then probed by its ring
    #: predecessor every k periods at a steady phase, besides the random round robin: the wait
    #: for a crashed member's first probe is at most k periods instead of an exponential tail
    #: (Rapid's monitoring ring, Suresh et al., ATC 2018, with one monitor).
    #:
    #: 1: *every* period probes the ring successor (the wait is at most one period), and the
    #: round robin gets a probe of its own every ``round_robin_every`` periods, half a period
    #: later (two probes may then be open at once). The round robin stays because the ring
    #: alone misses a member whose predecessor has not heard of it yet.
    ring_probe_every: int = 0
    #: With ``ring_probe_every`` 1: periods between two round-robin probes (time-bounded
    #: completeness: every member is reached within ``(N - 1) * round_robin_every`` periods).
    round_robin_every: int = 4
    #: Minimum suspicion = ``suspicion_mult * max(1, log10 N) * probe_interval``.
    suspicion_mult: float = 4.0
    #: Cap on the ``max(1, log10 N)`` factor of the minimum suspicion (None: no cap, as in
    #: memberlist). The factor gives gossip time to carry the accusation to the suspect; a
    #: suspect that is told directly (the accuser sends it the ``Suspect``) refutes in a round
    #: trip whatever N, so the daemon caps it at 1: minimum = ``suspicion_mult * interval``.
    suspicion_scale_cap: float | None = None
    #: Maximum suspicion = ``suspicion_max_timeout_mult * minimum``; with no confirmations the
    #: suspicion lasts this long.
    suspicion_max_timeout_mult: float = 6.0
    #: Independent confirmations that shrink the suspicion to its minimum (Lifeguard's k). None:
    #: memberlist's ``suspicion_mult - 2``. Set to 0 when fewer than k + 2 members exist.
    suspicion_confirmations: int | None = None
    #: Seconds between gossip rounds; a round sends only when broadcasts are queued.
    gossip_interval: float = 0.2
    #: Members each gossip round sends to.
    gossip_nodes: int = 3
    #: Each broadcast is sent ``retransmit_mult * ceil(log10(N + 1))`` times.
    retransmit_mult: int = 4
    #: Cap on the ``ceil(log10(N + 1))`` factor (None: no cap, as in memberlist). Push-pull's
    #: digests repair the rare member an epidemic misses, so past 10^cap members each update
    #: need not be sent more often: the daemon caps it at 4 (16 sends, enough to reach all of
    #: 10,000 members but ~0.003 of them per update at 5% loss), keeping per-node cost flat.
    retransmit_scale_cap: int | None = None
    #: Floor on the same factor (1: none, as in memberlist, where it is already >= 1). Below
    #: 10 members memberlist sends each update only ``retransmit_mult`` (4) times: among 8
    #: daemons a death then missed one survivor about once in 40 kills (6 declarers x 4 sends
    #: over 7 targets), which waited for its own timer (up to 3.4 s). A floor of 2 doubles
    #: that for small swarms only.
    retransmit_scale_floor: int = 1
    #: Before declaring a suspect dead on our own suspicion timer, ping it directly once more
    #: (twice, the second halfway) and wait ``probe_timeout``: a member that missed the
    #: suspect's refutation (an epidemic with a fixed retransmit count misses a few members)
    #: gets it in the ACK instead of declaring a live member dead. memberlist has no such
    #: check (False). Costs a ping only for suspicions that run out, i.e. real deaths.
    final_ping: bool = False
    #: Learning of a death brings the next gossip round forward (at most one round per half
    #: ``gossip_interval``): each hop of the death's epidemic then costs a network delay
    #: instead of a wait for the next round. Deaths are rare news, so the cost is a few
    #: packets per death. memberlist: False.
    eager_dead: bool = False
    #: Cap on Lifeguard's local-health score (timeouts are scaled by score + 1 < this).
    awareness_max_multiplier: int = 8
    #: Seconds after a member's death during which gossip rounds may still pick it (so a
    #: healed partition hears about itself).
    gossip_to_the_dead_time: float = 30.0
    #: Seconds between probes of one random dead member (Serf's reconnect): a member that
    #: was only cut off answers, learns it was declared dead and refutes.
    reconnect_interval: float = 5.0
    #: Seconds a dead member is remembered before it is forgotten.
    dead_retention: float = 600.0
    #: Largest packet we send or accept, in bytes (header + piggybacked updates).
    max_packet_bytes: int = 1400
    #: Seconds between push-pull exchanges with one random member (0: only when joining).
    push_pull_interval: float = 30.0
    #: Largest push-pull page, in bytes (bounded: a page is a sample, not the whole view). Sent
    #: on joining and when most digest buckets differ (a healed partition, a restart).
    max_sync_bytes: int = 32768
    #: Anti-entropy buckets: a steady-state push-pull sends ``8 * sync_buckets`` bytes of
    #: digests each way, whatever N, and records only for the buckets that differ.
    sync_buckets: int = 64
    #: Largest set of records sent for differing buckets in a steady-state push-pull, in bytes
    #: (most recently changed first; what does not fit waits for the next exchange).
    sync_diff_bytes: int = 4096
    #: Largest encoded node state (the heartbeat payload), in bytes.
    max_state_bytes: int = 512
    #: Members tracked at most; joins beyond it are refused (memory bound).
    max_members: int = 100_000
    #: Seconds between two broadcasts of our own changed state (changes in between coalesce).
    min_state_interval: float = 1.0
    #: Incarnation advances accepted per member in a burst; refilled one per
    #: ``min_state_interval``. Beyond it an update is refused as too frequent.
    alive_burst: int = 8
    #: Phi above which a member we have heard from regularly is probed next (Hayashibara).
    phi_threshold: float = 8.0
    #: Members whose arrival history feeds the phi accrual detector (most recently heard).
    phi_tracked: int = 32
    #: Half-life, in seconds, of the availability part of the reliability score.
    reliability_half_life: float = 600.0
    #: Weight of one probe outcome in the missed-probe EWMA of the reliability score.
    reliability_probe_alpha: float = 0.05

    def __post_init__(self) -> None:
        positive = ("probe_interval", "probe_timeout", "gossip_interval", "min_state_interval")
        for name in positive:
            v = getattr(self, name)
            if not (isinstance(v, int | float) and v > 0 and v == v):
                raise LocalProtocolError(f"{name} must be a positive number, got {v!r}")
        if self.probe_timeout >= self.probe_interval:
            raise LocalProtocolError("probe_timeout must be shorter than probe_interval")
        if self.indirect_checks < 0 or self.gossip_nodes < 1 or self.retransmit_mult < 1:
            raise LocalProtocolError(
                "indirect_checks >= 0, gossip_nodes >= 1, retransmit_mult >= 1"
            )
        if self.suspicion_mult <= 0 or self.suspicion_max_timeout_mult < 1:
            raise LocalProtocolError("suspicion_mult > 0 and suspicion_max_timeout_mult >= 1")
        cap = self.suspicion_scale_cap
        if cap is not None and not (isinstance(cap, int | float) and cap >= 1):
            raise LocalProtocolError("suspicion_scale_cap must be None or >= 1")
        if not 0 <= self.ring_probe_every <= 64 or not 1 <= self.round_robin_every <= 64:
            raise LocalProtocolError(
                "ring_probe_every must be in [0, 64] (0: off), round_robin_every in [1, 64]"
            )
        cap = self.retransmit_scale_cap
        if cap is not None and not (isinstance(cap, int) and cap >= 1):
            raise LocalProtocolError("retransmit_scale_cap must be None or an integer >= 1")
        floor = self.retransmit_scale_floor
        if not (isinstance(floor, int) and 1 <= floor <= (cap or floor)):
            raise LocalProtocolError("retransmit_scale_floor must be in [1, retransmit_scale_cap]")
        if self.awareness_max_multiplier < 1 or self.max_packet_bytes < 512:
            raise LocalProtocolError("awareness_max_multiplier >= 1, max_packet_bytes >= 512")
        if (
            not 1 <= self.sync_buckets <= 1024
            or not 0 < self.sync_diff_bytes <= self.max_sync_bytes
        ):
            raise LocalProtocolError(
                "sync_buckets in [1, 1024], sync_diff_bytes in (0, max_sync_bytes]"
            )

    # -- constructors: memberlist's defaults --------------------------------------------------

    @classmethod
    def lan(cls, **overrides: object) -> HeartbeatConfig:
        """memberlist ``DefaultLANConfig``."""
        return replace(cls(), **overrides)  # type: ignore[arg-type]

    @classmethod
    def wan(cls, **overrides: object) -> HeartbeatConfig:
        """memberlist ``DefaultWANConfig``."""
        base = cls(
            probe_interval=5.0,
            probe_timeout=3.0,
            suspicion_mult=6.0,
            gossip_interval=0.5,
            gossip_nodes=4,
        )
        return replace(base, **overrides)  # type: ignore[arg-type]

    @classmethod
    def local(cls, **overrides: object) -> HeartbeatConfig:
        """memberlist ``DefaultLocalConfig``."""
        base = cls(
            probe_timeout=0.2,
            indirect_checks=1,
            suspicion_mult=3.0,
            gossip_interval=0.1,
            retransmit_mult=2,
        )
        return replace(base, **overrides)  # type: ignore[arg-type]

    # -- the daemon's defaults ------------------------------------------------------------------

    @classmethod
    def daemon(cls, **overrides: object) -> HeartbeatConfig:
        """The daemon's defaults (docs/membership.md), tuned for the 3 s detection aim at a 1 s
        interval. The knobs the config file names (``membership.*`` in p2pnode/config.py,
        whose defaults must equal these: tests check it) are overridden from it by
        ``p2pnode.membership.settings.heartbeat_config``; the simulator runs these as they are.
        """
        base = cls(
            probe_interval=1.0,
            probe_timeout=0.4,
            indirect_checks=3,
            ring_probe_every=1,
            suspicion_mult=0.6,
            suspicion_scale_cap=1.0,
            suspicion_max_timeout_mult=2.0,
            suspicion_confirmations=3,
            gossip_interval=0.2,
            gossip_nodes=3,
            retransmit_mult=4,
            retransmit_scale_cap=3,
            push_pull_interval=30.0,
            # Not in the config file: on in every daemon, off in memberlist's constructors.
            round_robin_every=4,
            retransmit_scale_floor=2,
            final_ping=True,
            eager_dead=True,
        )
        return replace(base, **overrides) if overrides else base  # type: ignore[arg-type]

    # -- derived values ------------------------------------------------------------------------

    def expected_confirmations(self, n: int) -> int:
        """Lifeguard's k for a swarm of ``n`` members (including us)."""
        k = (
            int(self.suspicion_mult) - 2
            if self.suspicion_confirmations is None
            else self.suspicion_confirmations
        )
        # No confirmations from ourselves or from the suspect.
        return 0 if n - 2 < k else max(0, k)

    def retransmits(self, n: int) -> int:
        """How many times each update is sent in a swarm of ``n``: ``retransmit_limit`` with its
        log10 factor kept within [``retransmit_scale_floor``, ``retransmit_scale_cap``]."""
        limit = max(
            retransmit_limit(self.retransmit_mult, n),
            self.retransmit_mult * self.retransmit_scale_floor,
        )
        cap = self.retransmit_scale_cap
        return limit if cap is None else min(limit, self.retransmit_mult * cap)

    def suspicion_bounds(self, n: int) -> tuple[float, float]:
        """(min, max) suspicion for ``n`` members: ``suspicion_timeout`` with its log10 N
        factor capped at ``suspicion_scale_cap``."""
        lo = suspicion_timeout(self.suspicion_mult, n, self.probe_interval)
        if self.suspicion_scale_cap is not None:
            capped = self.suspicion_mult * self.suspicion_scale_cap * self.probe_interval
            lo = min(lo, math.floor(capped * 1000) / 1000)
        return lo, lo * self.suspicion_max_timeout_mult

    def detection_bound(self, n: int) -> float:
        """Worst case, with no loss and awareness at zero, from a silent crash to *every*
        survivor declaring it dead: a full round-robin pass before the first probe reaches it
        ((n - 1) intervals), the probe period, the maximum suspicion (plus the final ping's
        wait, if on), and dissemination of the death (the accuser sends it at the next gossip
        round; every other survivor runs its own timer anyway, so one more interval covers the
        last one)."""
        _, hi = self.suspicion_bounds(n)
        k = self.ring_probe_every
        if k == 1:
            # The round robin has its own probe every round_robin_every periods, offset by half
            # a period from the ring's.
            rr = ((n - 1) * self.round_robin_every + 0.5) * self.probe_interval
        else:
            # Ring probes take every k-th period from the round robin: it slows by k / (k - 1).
            rr = (n - 1) * self.probe_interval * (k / (k - 1) if k else 1.0)
        final = self.probe_timeout if self.final_ping else 0.0
        return rr + self.probe_interval + hi + final + self.probe_interval
