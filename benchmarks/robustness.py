"""Robustness against attackers who hide among honest updates (issue 20).

    python benchmarks/robustness.py [--seeds 0 1 2 3 4] [--jobs 2] [--alternatives]

8 clients on Dirichlet(0.5) shards of the digits, the MLP, 20 rounds, 2 of the 8 clients
attacking with full knowledge of the round's honest updates: ALIE, IPM (epsilon 0.1, 0.5, 4),
min-max, min-sum, mimic (p2pnode.training.attacks), and a row with no attacker (what each rule
costs on a clean swarm). Every rule is in its library default configuration for f = 2 (robust
rules behind nearest-neighbour mixing); "screen + trimmed_mean" is the validation screen in
front of it (p2pnode.training.screening), the default defence. Prints:

1. per attack and rule: the accuracy on each seed, its drop in points against clean FedAvg on
   the same seed, and the worst drop;
2. the worst drop per attack x rule at a glance;
3. with ``--alternatives``: the defences measured and not kept (bucketing, CenteredClip with
   client momentum, NNM with a larger f, the screen in front of plain FedAvg).

Runs go to ``--jobs`` processes (each run is single-threaded numpy); the runtime is printed.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# One BLAS thread per run: the runs are the parallelism (--jobs), and more threads per run only
# oversubscribe the cores. Set before numpy loads.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from p2pnode_simulations.federated import FederatedConfig, run_federated  # noqa: E402

# (label, attack, epsilon/scale); "none" has no attacker.
ATTACKS: list[tuple[str, str, float]] = [
    ("none", "none", 0.0),
    ("alie", "alie", 0.0),
    ("ipm 0.1", "ipm", 0.1),
    ("ipm 0.5", "ipm", 0.5),
    ("ipm 4", "ipm", 4.0),
    ("min-max", "min_max", 0.0),
    ("min-sum", "min_sum", 0.0),
    ("mimic", "mimic", 0.0),
]
# (label, config overrides)
RULES: list[tuple[str, dict[str, object]]] = [
    ("fedavg", {"rule": "fedavg"}),
    ("median", {"rule": "median"}),
    ("trimmed_mean", {"rule": "trimmed_mean"}),
    ("krum", {"rule": "krum"}),
    ("multi_krum", {"rule": "multi_krum"}),
    ("centered_clip", {"rule": "centered_clip"}),
    ("screen + trimmed_mean (default)", {"rule": "trimmed_mean", "screen": True}),
]
ALTERNATIVES: list[tuple[str, dict[str, object]]] = [
    ("bucketing s=2 + trimmed_mean", {"rule": "trimmed_mean", "bucket": 2}),
    ("centered_clip + client momentum 0.9", {"rule": "centered_clip", "client_momentum": 0.9}),
    ("centered_clip + client momentum 0.5", {"rule": "centered_clip", "client_momentum": 0.5}),
    ("nnm f=3 + trimmed_mean", {"rule": "trimmed_mean", "mixing_f": 3}),
    ("screen + fedavg", {"rule": "fedavg", "screen": True}),
    ("screen + krum", {"rule": "krum", "screen": True}),
    (
        "screen, one pass + trimmed_mean",
        {"rule": "trimmed_mean", "screen": True, "screen_rescore": False},
    ),
    (
        "screen, best set + trimmed_mean",
        {"rule": "trimmed_mean", "screen": True, "screen_subset": True},
    ),
]


def config(attack: str, scale: float, overrides: dict[str, object], seed: int) -> FederatedConfig:
    base = FederatedConfig(seed=seed, byzantine=2)
    if attack != "none":
        base = replace(base, attackers=2, attack=attack, attack_scale=scale or 10.0)
    return replace(base, **overrides)  # type: ignore[arg-type]


def _accuracy(cfg: FederatedConfig) -> float:
    return run_federated(cfg, centralized=False).accuracy


def measure(
    rules: list[tuple[str, dict[str, object]]], seeds: list[int], pool: multiprocessing.pool.Pool
) -> tuple[dict[int, float], dict[tuple[str, str], list[float]]]:
    clean_cfgs = [FederatedConfig(seed=s) for s in seeds]
    jobs = [
        (a_label, r_label, config(attack, scale, over, s))
        for a_label, attack, scale in ATTACKS
        for r_label, over in rules
        for s in seeds
    ]
    accs = pool.map(_accuracy, clean_cfgs + [cfg for _, _, cfg in jobs], chunksize=1)
    clean = dict(zip(seeds, accs[: len(seeds)], strict=True))
    out: dict[tuple[str, str], list[float]] = {}
    for (a_label, r_label, _), acc in zip(jobs, accs[len(seeds) :], strict=True):
        out.setdefault((a_label, r_label), []).append(acc)
    return clean, out


def detail_table(
    rules: list[tuple[str, dict[str, object]]],
    seeds: list[int],
    clean: dict[int, float],
    accs: dict[tuple[str, str], list[float]],
) -> list[str]:
    rows = [
        "| attack | rule | " + " | ".join(f"seed {s}" for s in seeds) + " | worst drop (points) |",
        "|---|---|" + "---:|" * (len(seeds) + 1),
    ]
    for a_label, _, _ in ATTACKS:
        for r_label, _ in rules:
            a = accs[(a_label, r_label)]
            drops = [100 * (x - clean[s]) for x, s in zip(a, seeds, strict=True)]
            cells = " | ".join(f"{x:.4f} ({d:+.2f})" for x, d in zip(a, drops, strict=True))
            rows.append(f"| {a_label} | {r_label} | {cells} | {min(drops):+.2f} |")
    return rows


def glance_table(
    rules: list[tuple[str, dict[str, object]]],
    seeds: list[int],
    clean: dict[int, float],
    accs: dict[tuple[str, str], list[float]],
) -> list[str]:
    rows = [
        "| attack | " + " | ".join(r for r, _ in rules) + " |",
        "|---|" + "---:|" * len(rules),
    ]
    for a_label, _, _ in ATTACKS:
        cells = []
        for r_label, _ in rules:
            a = accs[(a_label, r_label)]
            cells.append(f"{min(100 * (x - clean[s]) for x, s in zip(a, seeds, strict=True)):+.2f}")
        rows.append(f"| {a_label} | " + " | ".join(cells) + " |")
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--alternatives", action="store_true", help="also the rejected defences")
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(a.jobs) as pool:
        clean, accs = measure(RULES, a.seeds, pool)
        print("## Clean FedAvg (the yardstick)")
        print()
        print("| " + " | ".join(f"seed {s}" for s in a.seeds) + " |")
        print("|" + "---:|" * len(a.seeds))
        print("| " + " | ".join(f"{clean[s]:.4f}" for s in a.seeds) + " |")
        print()
        print("## Worst drop over seeds (points against clean FedAvg, same seed)")
        print()
        print("\n".join(glance_table(RULES, a.seeds, clean, accs)))
        print()
        print("## Accuracy after 20 rounds (drop in points against clean FedAvg, same seed)")
        print()
        print("\n".join(detail_table(RULES, a.seeds, clean, accs)))
        print(flush=True)
        if a.alternatives:
            _, alt = measure(ALTERNATIVES, a.seeds, pool)
            print("## Measured and not kept: worst drop over seeds (points)")
            print()
            print("\n".join(glance_table(ALTERNATIVES, a.seeds, clean, alt)))
            print()
            print("\n".join(detail_table(ALTERNATIVES, a.seeds, clean, alt)))
            print()
    runs = (len(ATTACKS) * (len(RULES) + (len(ALTERNATIVES) if a.alternatives else 0)) + 1) * len(
        a.seeds
    )
    print(f"{runs} runs of 20 rounds in {time.perf_counter() - t0:.0f} s on {a.jobs} processes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
