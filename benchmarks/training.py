"""Benchmark of training over the swarm: 8 real daemons (a committee of 4) against the same job
in process.

    python benchmarks/training.py [--nodes 8] [--validators 4] [--rounds 20]
                                  [--compressions none fp16 int8 topk] [--seed 0]

For each compression it starts a fresh local swarm (the daemons of ``p2pnode swarm``, on
127.0.0.1), creates the digits job (MLP 128, 8 Dirichlet(0.5) shards, 5 local epochs, FedAvg)
and measures, from the committed history and the nodes' own timings:

- seconds per round (median and p90 of the commit-to-commit times seen by a validator),
  seconds from the daemons' launch to the first committed round, and the whole run;
- time per round split into phases: fetch (the round's model), train, upload (store the update),
  collect (fetch the updates), aggregate (rule, optimizer, validation, store the model) as the
  nodes timed them (means), and commit (the proposal's broadcast to the round's commit);
- bytes of updates per node per round;
- test accuracy after the last round, and the RSS of all daemons together at the end;

and beside it the same job in process (``p2pnode_simulations.federated``: same model, shards, seed
and local training) for the network's cost per round as a ratio. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from p2pnode.consensus.genesis import genesis_validators
from p2pnode.ipc.client import Client
from p2pnode.swarm import prepare, start, stop, wait_ready
from p2pnode_simulations.federated import FederatedConfig, run_federated

PHASES = ("fetch", "train", "upload", "collect", "aggregate", "commit")


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _spec(rounds: int, compression: str, seed: int) -> str:
    return (
        f'name = "bench"\nrounds = {rounds}\n[participants]\nmax = 8\n'
        f"[data]\nseed = {seed}\n[model]\ninit_seed = {seed}\n"
        f'[compression]\nkind = "{compression}"\n[sync]\ndeadline = 20\n'
    )


def run_swarm(args: argparse.Namespace, compression: str) -> dict[str, Any]:
    parent = Path(tempfile.mkdtemp(prefix="p2pnode-bench-"))
    try:
        ids = genesis_validators(parent, args.validators)
        nodes = prepare(parent, args.nodes, {"consensus.validators": ids})
        t_launch = time.monotonic()
        start(nodes)
        wait_ready(nodes)
        with Client(socket_path=nodes[0].socket, timeout=120) as c:
            job = c.call("job.create", {"spec": _spec(args.rounds, compression, args.seed)})["job"]
            first_round_at = None
            while True:
                st = c.call("job.status", {"job": job})
                if st["rounds_done"] >= 1 and first_round_at is None:
                    first_round_at = time.monotonic()
                if st["status"] != "running":
                    break
                time.sleep(0.2)
            total = time.monotonic() - t_launch
        per_node = []
        for n in nodes:
            with Client(socket_path=n.socket, timeout=60) as c:
                per_node.append(c.call("job.status", {"job": job})["history"])
        rss = sum(_rss_mb(n.process.pid) for n in nodes if n.process is not None)
    finally:
        stop(nodes)
        shutil.rmtree(parent, ignore_errors=True)
    hist = per_node[1]  # a validator's view (node-2)
    keys_agree = all(
        [h["model_key"] for h in h2] == [h["model_key"] for h in hist] for h2 in per_node
    )
    round_secs = [h["phases"].get("total", 0.0) for h in hist]
    work: dict[str, list[float]] = {p: [] for p in PHASES}
    for h2 in per_node:
        for h in h2:
            for k, v in h["work"].items():
                work[k].append(v)
    for h in hist:
        if "validation" in h["phases"]:
            work["commit"].append(h["phases"]["validation"])
    return {
        "compression": compression,
        "median": statistics.median(round_secs),
        "p90": sorted(round_secs)[int(0.9 * (len(round_secs) - 1))],
        "first": (first_round_at or t_launch) - t_launch,
        "total": total,
        "phases": {p: statistics.mean(v) if v else 0.0 for p, v in work.items()},
        "bytes_per_node": statistics.mean(h["update_bytes"] / max(1, h["updates"]) for h in hist),
        "accuracy": hist[-1]["accuracy"],
        "rss_mb": rss,
        "keys_agree": keys_agree,
    }


def run_inprocess(args: argparse.Namespace, compression: str) -> tuple[float, float]:
    cfg = FederatedConfig(clients=8, rounds=args.rounds, compression=compression, seed=args.seed)
    t0 = time.perf_counter()
    res = run_federated(cfg, centralized=False)
    return time.perf_counter() - t0, res.accuracy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", type=int, default=8)
    ap.add_argument("--validators", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--compressions", nargs="+", default=["none", "fp16", "int8", "topk"])
    args = ap.parse_args()
    rows = []
    for comp in args.compressions:
        r = run_swarm(args, comp)
        r["sim_seconds"], r["sim_accuracy"] = run_inprocess(args, comp)
        rows.append(r)
        print(f"# {comp}: {r}", flush=True)
    print()
    print(
        f"{args.nodes} daemons, committee of {args.validators}, {args.rounds} rounds, "
        f"seed {args.seed}"
    )
    print()
    print(
        "| compression | round median s | p90 s | launch to round 1 s | whole run s | "
        + " | ".join(f"{p} s" for p in PHASES)
        + " | update bytes/node/round | accuracy | in-process s (all rounds) | in-process acc "
        "| swarm/in-process per round | RSS MB (all) | keys agree |"
    )
    print("|---" * (13 + len(PHASES)) + "|")
    for r in rows:
        ratio = r["median"] / (r["sim_seconds"] / args.rounds)
        print(
            f"| {r['compression']} | {r['median']:.2f} | {r['p90']:.2f} | {r['first']:.1f} | "
            f"{r['total']:.1f} | "
            + " | ".join(f"{r['phases'][p]:.3f}" for p in PHASES)
            + f" | {r['bytes_per_node']:.0f} | {r['accuracy']:.4f} | {r['sim_seconds']:.2f} | "
            f"{r['sim_accuracy']:.4f} | {ratio:.1f}x | {r['rss_mb']:.0f} | {r['keys_agree']} |"
        )


if __name__ == "__main__":
    main()
