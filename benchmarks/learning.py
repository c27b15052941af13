"""Benchmark of the learning library: compression size and accuracy, aggregation speed.

    python benchmarks/learning.py [--seeds 3] [--sizes 1000000 10000000] [--repeats 3]

Prints two markdown tables:

1. For each compression (none, fp16, int8, int4, top-1% + error feedback with float16 and with
   float32 values, random-1% + error feedback): bytes of one encoded update of the digits MLP
   (mean over all rounds and clients) and of 1M- and 10M-parameter vectors, the reduction
   against float32, and the test accuracy after 20 rounds of the in-process federated run
   (8 clients, Dirichlet 0.5, FedAvg), averaged over ``--seeds`` seeds, with its difference to
   no compression in points.
2. For each aggregation rule, plain and as ``make_rule`` builds it by default (nearest-neighbour
   mixing in front of the robust rules): seconds per aggregation of 8 updates of each size (the
   best of ``--repeats`` runs; one run at 10M and above, to spare the shared machine).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from p2pnode.training.aggregation import ClientUpdate, make_rule
from p2pnode.training.compression import Compressor, ErrorFeedback
from p2pnode_simulations.federated import FederatedConfig, run_federated

# (label, kind, ratio, sparsifier values)
COMPRESSIONS: list[tuple[str, str, float, str]] = [
    ("none", "none", 1.0, "float16"),
    ("fp16", "fp16", 1.0, "float16"),
    ("int8", "int8", 1.0, "float16"),
    ("int4", "int4", 1.0, "float16"),
    ("top-1% + EF", "topk", 0.01, "float16"),
    ("top-1% + EF, float32 values", "topk", 0.01, "float32"),
    ("random-1% + EF", "randk", 0.01, "float16"),
]
# (label, rule, mixing): the plain rules as their papers state them, then the robust rules as
# ``make_rule`` builds them by default (nearest-neighbour mixing in front).
RULES: list[tuple[str, str, bool]] = [
    ("fedavg", "fedavg", False),
    ("median, plain", "median", False),
    ("trimmed_mean (f=2), plain", "trimmed_mean", False),
    ("krum (f=2), plain", "krum", False),
    ("multi_krum (f=2), plain", "multi_krum", False),
    ("centered_clip, plain", "centered_clip", False),
    ("nnm + median (default)", "median", True),
    ("nnm + trimmed_mean (f=2) (default)", "trimmed_mean", True),
    ("nnm + krum (f=2) (default)", "krum", True),
    ("nnm + multi_krum (f=2) (default)", "multi_krum", True),
    ("nnm + centered_clip (default)", "centered_clip", True),
]


def encoded_size(kind: str, ratio: float, values: str, size: int) -> int:
    rng = np.random.default_rng(0)
    vec = rng.normal(size=size).astype(np.float32)
    comp = Compressor(kind, ratio=ratio, values=values)
    blob = (
        ErrorFeedback(comp).encode(vec, rng) if comp.needs_error_feedback else comp.encode(vec, rng)
    )
    return len(blob)


def compression_table(seeds: int) -> list[str]:
    rows = [
        "| compression | bytes/update (MLP, 9,610 params) | vs float32 | bytes/update (1M) "
        "| vs float32 | bytes/update (10M) | vs float32 | accuracy after 20 rounds "
        "| vs none (points) | per seed |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    baseline = None
    for label, kind, ratio, values in COMPRESSIONS:
        accs = []
        mlp_bytes = 0.0
        params = 0
        for seed in range(seeds):
            r = run_federated(
                FederatedConfig(compression=kind, ratio=ratio, sparse_values=values, seed=seed),
                centralized=False,
            )
            accs.append(r.accuracy)
            # Mean over all rounds and clients: what was really sent, not one round's size.
            mlp_bytes = float(np.mean([rec.bytes_per_update for rec in r.rounds]))
            params = r.params_count
        mean = float(np.mean(accs))
        baseline = mean if baseline is None else baseline
        sizes = [encoded_size(kind, ratio, values, n) for n in (1_000_000, 10_000_000)]
        rows.append(
            f"| {label} | {mlp_bytes:,.0f} | {4 * params / mlp_bytes:.1f}x "
            + "".join(
                f"| {b:,} | {4 * n / b:.1f}x "
                for b, n in zip(sizes, (1_000_000, 10_000_000), strict=True)
            )
            + f"| {mean:.4f} | {100 * (mean - baseline):+.2f} | "
            + " ".join(f"{a:.4f}" for a in accs)
            + " |"
        )
    return rows


def aggregation_table(sizes: list[int], repeats: int) -> list[str]:
    header = "| rule | " + " | ".join(f"8 x {s / 1e6:g}M params (s)" for s in sizes) + " |"
    rows = [header, "|---|" + "---:|" * len(sizes)]
    timings: dict[str, list[str]] = {label: [] for label, _, _ in RULES}
    for size in sizes:
        rng = np.random.default_rng(size)
        updates = [
            ClientUpdate(f"peer-{i}", rng.normal(0, 1, size).astype(np.float32), 100 + i)
            for i in range(8)
        ]
        # Two of eight are Byzantine-looking so robust rules take their real code paths.
        for i in (1, 5):
            updates[i] = ClientUpdate(updates[i].client_id, -10 * updates[i].delta, 100)
        runs = repeats if size < 10_000_000 else 1
        for label, name, mixing in RULES:
            rule = make_rule(name, f=2, mixing=mixing)
            best = float("inf")
            for _ in range(runs):
                t0 = time.perf_counter()
                rule.aggregate(updates)
                best = min(best, time.perf_counter() - t0)
            timings[label].append(f"{best:.3f}")
        del updates
    for label, _, _ in RULES:
        rows.append(f"| {label} | " + " | ".join(timings[label]) + " |")
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args(argv)
    print("## Compression (8 clients, Dirichlet alpha=0.5, MLP 64-128-10, FedAvg, 20 rounds)")
    print()
    print("\n".join(compression_table(a.seeds)))
    print()
    print("## Aggregation time, 8 updates (float32 in, float64 accumulation)")
    print()
    print("\n".join(aggregation_table(a.sizes, a.repeats)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
