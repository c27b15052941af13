"""Where node attackers' contribution scores rank, in process, as validators compute them.

    python benchmarks/attacker_scores.py [--seeds 0 1 2 3 4] [--rounds 10] [--attacks alie ipm]

The demo's job (p2pnode.demo.job_spec: MLP on the digits, Dirichlet(0.5) shards, trimmed mean
f = 2 behind the validation screen) with 8 trainers, the last 2 node attackers that recompute
every shard and craft from those (JobCompute._craft, as ``training.attack`` does in a daemon),
aggregated by JobCompute.aggregate with the shards known and the spot-checks the swarm would
draw (25%). Node ids come from the seed; each round gives the shards out in a seeded order. For
each attack and seed it prints the attackers' ranks (0 = lowest) by score in every round and by
the sum over rounds (the ledger's), how many rounds each attacker was flagged, how many honest
flags there were (0 is the only right answer), how many honest updates were re-run for
resembling another (nearest-neighbour ratio below DUPLICATE_RATIO: a cost, not a flag), the
smallest honest and largest attacker nearest-neighbour ratio (p2pnode.training.redundancy)
and the final accuracy against the same job with no attacker. ``none`` runs the job with no
attacker (the honest ratios, and flags).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
import tomllib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

from p2pnode.demo import DemoOptions, job_spec  # noqa: E402
from p2pnode.jobs.spec import parse_spec  # noqa: E402
from p2pnode.rounds.compute import JobCompute, node_seed  # noqa: E402
from p2pnode.training.compression import decode  # noqa: E402
from p2pnode.training.redundancy import DUPLICATE_RATIO, pairwise_sq_distances  # noqa: E402
from p2pnode_protocols.rounds import UpdateRef  # noqa: E402
from p2pnode_protocols.rounds.verify import spot_checked  # noqa: E402

NODES, ATTACKERS = 8, 2


def run(attack: str, seed: int, rounds: int) -> dict[str, object]:
    """One job: per-round attacker ranks and the figures the module docstring lists."""
    o = DemoOptions(rounds=rounds, nodes=NODES, attackers=ATTACKERS, attack="alie", seed=seed)
    c = JobCompute.build("bench", parse_spec(tomllib.loads(job_spec(o))))
    rng = np.random.default_rng([seed, 7])
    nodes = [bytes(rng.integers(0, 256, 38, dtype=np.uint8)) for _ in range(NODES)]
    bad = set(nodes[NODES - ATTACKERS :]) if attack != "none" else set()
    model = c.initial_tensors()
    totals = {n: 0.0 for n in nodes}
    ranks: list[list[int]] = []
    flagged = {n: 0 for n in nodes}
    ratios: dict[str, list[float]] = {"honest": [], "attacker": []}
    acc = 0.0
    for r in range(1, rounds + 1):
        perm = np.random.default_rng([seed, r]).permutation(NODES)
        ups, shards, rows = [], {}, []
        for i, n in enumerate(nodes):
            eps = 0.5 if attack == "ipm" else 10.0
            out = c.train_task(
                model, r, int(perm[i]), node_seed(n), attack if n in bad else "", eps
            )
            key = hashlib.sha256(out.update).hexdigest()
            ref = UpdateRef(node=n, round=r, key=key, size=1, samples=out.samples, sig=b"-")
            ups.append((ref, out.update))
            shards[n] = int(perm[i])
            rows.append(decode(out.update))
        spot = spot_checked("bench", r, "b", [u for u, _ in ups], c.spec.spot_check)
        model, res = c.aggregate(model, "b", r, ups, shards, spot)
        acc = res.accuracy
        scores = dict(res.scores)
        order = sorted(nodes, key=lambda n: scores[n])
        ranks.append(sorted(order.index(n) for n in bad))
        for n in nodes:
            totals[n] += scores[n]
        for f in res.flags:
            flagged[f.node] += 1
        d = np.sqrt(pairwise_sq_distances(np.stack(rows)))
        np.fill_diagonal(d, np.inf)
        nearest = d.min(axis=1)
        med = float(np.median(nearest))
        for i, n in enumerate(nodes):
            ratios["attacker" if n in bad else "honest"].append(float(nearest[i]) / med)
    order = sorted(nodes, key=lambda n: totals[n])
    return {
        "ranks": ranks,
        "total_ranks": sorted(order.index(n) for n in bad),
        "attacker_flags": [flagged[n] for n in nodes if n in bad],
        "honest_flags": sum(flagged[n] for n in nodes if n not in bad),
        "honest_min_ratio": min(ratios["honest"]),
        "honest_reruns": sum(1 for x in ratios["honest"] if x < DUPLICATE_RATIO),
        "attacker_max_ratio": max(ratios["attacker"], default=float("nan")),
        "accuracy": acc,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument(
        "--attacks", nargs="+", default=["none", "alie", "ipm", "min_max", "min_sum", "mimic"]
    )
    a = p.parse_args()
    t0 = time.perf_counter()
    print(
        "| attack | seed | attacker ranks per round | summed: ranks | attackers flagged "
        "(rounds) | honest flags | honest re-runs | honest min ratio | attacker max ratio "
        "| accuracy (clean) |"
    )
    print("|---|---:|---|---|---|---:|---:|---:|---:|---|")
    clean: dict[int, float] = {}
    for attack in a.attacks:
        for seed in a.seeds:
            if seed not in clean:
                clean[seed] = float(run("none", seed, a.rounds)["accuracy"])  # type: ignore[arg-type]
            r = run(attack, seed, a.rounds)
            per = " ".join("".join(str(x) for x in rk) or "-" for rk in r["ranks"])  # type: ignore[union-attr]
            print(
                f"| {attack} | {seed} | {per} | {r['total_ranks']} | {r['attacker_flags']} "
                f"| {r['honest_flags']} | {r['honest_reruns']} | {r['honest_min_ratio']:.3f} "
                f"| {r['attacker_max_ratio']:.3f} | {r['accuracy']:.4f} ({clean[seed]:.4f}) |",
                flush=True,
            )
    print(f"took {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
