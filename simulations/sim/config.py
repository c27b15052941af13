"""``SimConfig``: one scenario, drawn swarm-style from a seed (TigerBeetle's ``options_swarm``).

Every knob is drawn, so different seeds exercise different corners: committee size, batching and
window, timing, loss, duplication, partitions, crashes, and which replicas are Byzantine and how.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, replace

__all__ = ["BYZANTINE_KINDS", "SimConfig", "draw_config"]

#: silent: sends nothing. equivocate: conflicting pre-prepares/votes/checkpoints to different
#: peers. forge: messages under other senders' names, bad signatures, garbage bytes.
#: stale: replays old (validly signed) messages and lies in its status.
BYZANTINE_KINDS = ("silent", "equivocate", "forge", "stale")


@dataclass(frozen=True, slots=True, kw_only=True)
class SimConfig:
    seed: int
    n: int
    #: "keyed" (fast keyed-hash signatures) or "ed25519" (real libp2p keys).
    signer: str
    #: Round-trip every message through the CBOR codec (encode at send, decode at delivery).
    wire: bool
    checkpoint_interval: int
    window: int
    max_batch: int
    max_inflight: int
    request_timeout: float
    view_change_timeout: float
    status_interval: float
    delay_min: float
    delay_mean: float
    drop_p: float
    dup_p: float
    partitions: int
    crashes: int
    byzantine: tuple[tuple[int, str], ...]
    clients: int
    requests_per_client: int
    client_retry: float
    clock_drift: float
    safety_time: float
    liveness_budget: float
    #: Committee switches: (virtual time the honest members vote, pool indices of the next
    #: committee in primary order). The pool is the genesis committee (0..n-1) and n more nodes.
    switches: tuple[tuple[float, tuple[int, ...]], ...] = ()
    #: Byzantine nodes among the extra n of the pool (index, kind).
    extra_byzantine: tuple[tuple[int, str], ...] = ()
    #: At most this many evidence transactions (observed equivocations) are submitted.
    evidence_txs: int = 0

    @property
    def pool(self) -> int:
        return 2 * self.n if self.switches else self.n

    @property
    def f(self) -> int:
        return (self.n - 1) // 3

    def describe(self) -> str:
        return " ".join(f"{k}={v}" for k, v in asdict(self).items())


def draw_config(seed: int, *, n: int | None = None) -> SimConfig:
    rng = random.Random(seed)
    n = n if n is not None else rng.choice((4, 7))
    f = (n - 1) // 3
    k = rng.choice((2, 4, 8))
    # Mostly the full f: the interesting runs have as many Byzantine replicas as PBFT allows.
    b = f if rng.random() < 0.6 else rng.randint(0, f)
    byz_ids = rng.sample(range(n), b)
    byzantine = tuple(sorted((i, rng.choice(BYZANTINE_KINDS)) for i in byz_ids))
    lossy = rng.random() < 0.7
    cfg = SimConfig(
        seed=seed,
        n=n,
        signer="ed25519" if rng.random() < 0.2 else "keyed",
        wire=rng.random() < 0.25,
        checkpoint_interval=k,
        window=k * rng.choice((2, 3)),
        max_batch=rng.choice((1, 3, 16)),
        max_inflight=rng.choice((1, 2, 4)),
        request_timeout=rng.choice((0.5, 1.0, 2.0)),
        view_change_timeout=rng.choice((0.5, 1.0, 2.0)),
        status_interval=rng.choice((0.2, 0.4)),
        delay_min=rng.uniform(0.0005, 0.005),
        delay_mean=rng.choice((0.002, 0.01, 0.05, 0.2)),
        drop_p=rng.choice((0.01, 0.05, 0.15, 0.3)) if lossy else 0.0,
        dup_p=rng.choice((0.0, 0.02, 0.1)),
        partitions=rng.randint(0, 3),
        crashes=rng.randint(0, 6),
        byzantine=byzantine,
        clients=rng.randint(1, 4),
        requests_per_client=rng.randint(3, 25),
        client_retry=rng.choice((1.0, 2.0)),
        clock_drift=rng.choice((0.0, 0.01, 0.05)),
        safety_time=rng.uniform(3.0, 12.0),
        liveness_budget=0.0,
    )
    # Clients submit one request at a time, so the work left at the heal grows with them.
    # (Set after the draws so that adding a knob never changes what an old seed means.)
    budget = 60.0 + 1.0 * cfg.clients * cfg.requests_per_client
    cfg = replace(cfg, liveness_budget=budget)
    return _draw_switches(rng, cfg)


def _draw_switches(rng: random.Random, cfg: SimConfig) -> SimConfig:
    """Committee switches, drawn after everything else (old seeds keep their other knobs):
    overlapping or disjoint committees of n from a pool of 2n, each with at most f Byzantine."""
    n, f = cfg.n, cfg.f
    count = rng.choice((0, 1, 1, 2, 3))
    extra = rng.sample(range(n, 2 * n), rng.randint(0, f))
    extra_byz = tuple(sorted((i, rng.choice(BYZANTINE_KINDS)) for i in extra))
    byz = {i for i, _ in cfg.byzantine} | set(extra)
    times = sorted(rng.uniform(0.5, cfg.safety_time) for _ in range(count))
    prev = set(range(n))
    switches = []
    for at in times:
        disjoint = rng.random() < 0.4
        cands = [x for x in range(2 * n) if not (disjoint and x in prev)]
        good = [x for x in cands if x not in byz]
        bad = [x for x in cands if x in byz]
        k = min(len(bad), rng.randint(0, f))
        k = max(k, n - len(good))
        if k > min(f, len(bad)):
            continue  # not enough honest candidates for this shape: skip the switch
        members = rng.sample(good, n - k) + rng.sample(bad, k)
        rng.shuffle(members)
        switches.append((at, tuple(members)))
        prev = set(members)
    evidence = rng.choice((0, 2, 4))
    return replace(
        cfg,
        switches=tuple(switches),
        extra_byzantine=extra_byz if switches else (),
        evidence_txs=evidence,
        liveness_budget=cfg.liveness_budget + 15.0 * len(switches),
    )
