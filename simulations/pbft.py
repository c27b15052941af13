"""Run the PBFT simulator over a range of seeds:
``python -m p2pnode_simulations.pbft --seeds 0..999``.

Each seed draws a whole scenario (``p2pnode_simulations.sim.config.draw_config``); the run passes
only if no correct replica breaks safety and the healed core commits every submitted request in
time. Failing seeds are printed with the command that replays one, verbosely:
``python -m p2pnode_simulations.pbft --seed 1234 -v``. A seed replays identically (same config, same
event order, same result), so a failure is a test case.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import sys
import time
from collections import Counter
from collections.abc import Iterable

from p2pnode_simulations.sim import RunResult, World

__all__ = ["main", "run_seed"]


def run_seed(seed: int, n: int | None = None) -> RunResult:
    return World(seed, n=n).run()


def _run_args(args: tuple[int, int | None]) -> RunResult:
    return run_seed(*args)


def _parse_range(text: str) -> range:
    if ".." in text:
        a, b = text.split("..", 1)
        return range(int(a), int(b) + 1)
    return range(int(text), int(text) + 1)


def _sweep(
    seeds: Iterable[int], sizes: list[int | None], jobs: int
) -> Iterable[tuple[RunResult, int | None]]:
    work = [(s, n) for s in seeds for n in sizes]
    if jobs <= 1:
        for s, n in work:
            yield run_seed(s, n), n
        return
    with multiprocessing.Pool(jobs) as pool:
        for (_, n), res in zip(work, pool.imap(_run_args, work, chunksize=4), strict=True):
            yield res, n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m p2pnode_simulations.pbft", description=__doc__)
    p.add_argument("--seeds", help="A..B (inclusive)")
    p.add_argument("--seed", type=int, help="replay one seed")
    p.add_argument(
        "--n",
        default="drawn",
        help="committee sizes: 'drawn' (from the seed), '4', '7' or '4,7' (each seed on each)",
    )
    p.add_argument("--jobs", type=int, default=1, help="worker processes")
    p.add_argument("-v", "--verbose", action="store_true", help="log the config and the run")
    args = p.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s"
    )
    if args.seed is not None:
        seeds: range = range(args.seed, args.seed + 1)
    elif args.seeds:
        seeds = _parse_range(args.seeds)
    else:
        p.error("give --seeds A..B or --seed S")
    sizes: list[int | None] = [None] if args.n == "drawn" else [int(x) for x in args.n.split(",")]
    started = time.monotonic()
    failures: list[tuple[RunResult, int | None]] = []
    by_n: Counter[int] = Counter()
    kinds: Counter[str] = Counter()
    runs = 0
    for res, n in _sweep(seeds, sizes, args.jobs):
        runs += 1
        by_n[res.config.n] += 1
        for _, kind in res.config.byzantine:
            kinds[kind] += 1
        if res.config.crashes:
            kinds["crash-restart"] += 1
        if res.stats.get("switches"):
            kinds["switched"] += 1
            kinds["switches"] += res.stats["switches"]
        if res.stats.get("evidence_txs"):
            kinds["evidence-tx"] += 1
        if args.verbose or not res.ok:
            flag = "" if n is None else f" --n {n}"
            status = "ok" if res.ok else f"FAIL {res.kind}"
            print(
                f"seed {res.seed}{flag}: {status}: {res.message} t={res.end_time:.1f} {res.stats}"
            )
            if args.verbose:
                print(f"  config: {res.config.describe()}")
        if not res.ok:
            failures.append((res, n))
            flag = "" if n is None else f" --n {n}"
            replay = f"python -m p2pnode_simulations.pbft --seed {res.seed}{flag} -v"
            print(f"  replay: {replay}", flush=True)
    took = time.monotonic() - started
    print(
        f"{runs} runs in {took:.0f}s; committees {dict(sorted(by_n.items()))}; "
        f"faults {dict(sorted(kinds.items()))}; failures {len(failures)}"
    )
    if failures:
        print("failing seeds: " + " ".join(str(r.seed) for r, _ in failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
