"""``python -m p2pnode_simulations.chaos``: one chaos run, or the schedule a seed makes.

    python -m p2pnode_simulations.chaos run --seed 7 --minutes 10 --dir /tmp/chaos
    python -m p2pnode_simulations.chaos run --schedule /tmp/chaos/schedule.json --dir /tmp/again
    python -m p2pnode_simulations.chaos show --seed 7 --minutes 10

``run`` needs root for the testbed (network namespaces); ``--loopback`` runs the process faults
only (kills and stops) on 127.0.0.1 without it. Exit status 0 when every checker held, 1 when
one did not (the violations are printed and in DIR/summary.json), 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from .clusters import Cluster, LoopbackCluster, TestbedCluster
from .runner import ChaosRun
from .schedule import Links, Schedule, load, make_schedule

COMMITTEE = 4
NODES = 8


def _schedule(args: argparse.Namespace) -> Schedule:
    if args.schedule:
        return load(Path(args.schedule))
    return make_schedule(
        args.seed,
        args.minutes * 60,
        NODES,
        tuple(range(1, COMMITTEE + 1)),
        base=Links(0.0, 0.0, 0.0) if args.loopback else Links(args.delay, args.jitter, args.loss),
        mean_gap=args.mean_gap,
        partitions=not args.loopback,
        link_changes=not args.loopback,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m p2pnode_simulations.chaos")
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("run", "show"):
        s = sub.add_parser(name)
        s.add_argument("--seed", type=int, default=1)
        s.add_argument("--minutes", type=float, default=10.0)
        s.add_argument("--mean-gap", type=float, default=12.0, help="mean seconds between faults")
        s.add_argument("--delay", type=float, default=0.04, help="base link delay, seconds")
        s.add_argument("--jitter", type=float, default=0.01, help="base link jitter, seconds")
        s.add_argument("--loss", type=float, default=0.01, help="base link loss, 0..1")
        s.add_argument("--loopback", action="store_true", help="process faults only, no root")
        s.add_argument("--schedule", help="replay this schedule.json instead of a seed")
    r = sub.choices["run"]
    r.add_argument("--dir", help="run directory (default: a new temporary one)")
    r.add_argument("--rounds", type=int, default=12, help="rounds per job")
    r.add_argument("--finish-timeout", type=float, default=300.0)
    args = p.parse_args(argv)
    sched = _schedule(args)
    if args.cmd == "show":
        print(f"seed {sched.seed}: {sched.duration:.0f} s, {sched.counts()}")
        for e in sched.events:
            print(f"{e.at:8.1f}s  {e.describe()}")
        return 0
    out = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="p2pnode-chaos-"))
    cluster: Cluster
    if args.loopback:
        lc = LoopbackCluster(out / "nodes", sched.nodes, len(sched.committee))
        lc.start()
        cluster = lc
    else:
        from p2pnode_simulations.testbed import testbed_unavailable

        why = testbed_unavailable()
        if why:
            print(f"the testbed cannot run here: {why} (try --loopback)", file=sys.stderr)
            return 2
        tc = TestbedCluster(out / "nodes", len(sched.committee), seed=sched.seed, base=sched.base)
        try:
            tc.start()
        except BaseException:
            tc.close()
            raise
        cluster = tc
    print(f"chaos run, seed {sched.seed}, {sched.duration:.0f} s of faults, dir {out}")
    try:
        result = ChaosRun(
            cluster, sched, out, rounds=args.rounds, finish_timeout=args.finish_timeout
        ).run()
    finally:
        cluster.close()
    print(json.dumps(result.summary, indent=1))
    print("all checkers held" if result.ok else "VIOLATIONS:\n  " + "\n  ".join(result.violations))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
