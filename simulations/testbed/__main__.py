"""``python -m p2pnode_simulations.testbed``: bring a named topology up with a daemon per host.

- ``up TOPOLOGY --dir D [--seed N] [--set KEY=VALUE ...]``: build the topology, start
  ``p2pnode daemon`` on each of its hosts (data dirs ``D/node-i``), print how to reach each one,
  wait for Ctrl-C or SIGTERM, then stop the daemons and delete every namespace.
- ``list``: the topologies.
- ``cleanup [--prefix P]``: delete namespaces left behind by a killed run.

Needs root (see docs/testbed.md).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

from p2pnode_simulations.testbed.swarm import SwarmError, TestbedSwarm
from p2pnode_simulations.testbed.testbed import Testbed, TestbedError, testbed_unavailable
from p2pnode_simulations.testbed.topologies import TOPOLOGIES


def _settings(pairs: list[str]) -> dict[str, object]:
    out: dict[str, object] = {}
    for p in pairs:
        key, sep, value = p.partition("=")
        if not sep or not key:
            raise TestbedError(f"--set wants KEY=VALUE, not {p!r}")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value  # a bare string
    return out


def up(topology: str, parent: Path, seed: int, settings: dict[str, object]) -> int:
    topo = TOPOLOGIES[topology]
    tb = topo.build("tb", seed)
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    swarm: TestbedSwarm | None = None
    try:
        tb.up()
        swarm = TestbedSwarm(tb, parent, list(topo.daemons), settings)
        if topo.bootstrap is None:
            took = swarm.start(no_bootstrap=True)
        else:
            took = swarm.start(bootstrap=topo.daemons.index(topo.bootstrap) + 1)
        rows = []
        for i, host in enumerate(swarm.hosts, start=1):
            n = swarm.node(i)
            where = host.ip if host.behind is None else f"{host.ip} (behind {host.behind})"
            rows.append((n.name, host.name, host.netns, where, n.addr, str(n.socket)))
        heads = ("NODE", "HOST", "NAMESPACE", "IP", "MULTIADDR", "IPC SOCKET")
        widths = [max(len(h), *(len(r[k]) for r in rows)) for k, h in enumerate(heads)]
        print("  ".join(h.ljust(w) for h, w in zip(heads, widths, strict=True)))
        for r in rows:
            print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
        print()
        for i in range(1, len(rows) + 1):
            print(f"p2pnode --socket {swarm.node(i).socket} status")
        print(
            f"\n{topology}: {len(rows)} daemons ready in {took:.1f} s (seed {seed}); "
            "Ctrl-C stops them and removes the namespaces.",
            flush=True,
        )
        while not stopping:
            for i in range(1, len(rows) + 1):
                p = swarm.node(i).process
                if p is not None and p.poll() is not None:
                    print(f"node-{i} exited with code {p.returncode}", file=sys.stderr)
                    swarm.node(i).process = None
            time.sleep(0.2)
        print("stopping...", flush=True)
        return 0
    finally:
        if swarm is not None:
            swarm.stop()
        tb.down()
        for s, handler in old.items():
            signal.signal(s, handler)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m p2pnode_simulations.testbed")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("up", help="bring a topology up with a daemon per host")
    p.add_argument("topology", choices=sorted(TOPOLOGIES))
    p.add_argument("--dir", type=Path, required=True, help="parent of the nodes' data dirs")
    p.add_argument("--seed", type=int, default=0, help="seed of the switch's loss and jitter")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="a daemon config setting"
    )
    sub.add_parser("list", help="the topologies")
    c = sub.add_parser("cleanup", help="delete namespaces left by a killed run")
    c.add_argument("--prefix", default="tb")
    a = ap.parse_args(argv)
    if a.cmd == "list":
        for name, t in TOPOLOGIES.items():
            boot = t.bootstrap or "none (mDNS)"
            print(f"{name:<8} {t.description}; daemons on {', '.join(t.daemons)}; bootstrap {boot}")
        return 0
    reason = testbed_unavailable()
    if reason:
        print(f"error: {reason}", file=sys.stderr)
        return 2
    try:
        if a.cmd == "cleanup":
            for ns in Testbed.cleanup_stale(a.prefix):
                print(f"deleted {ns}")
            return 0
        return up(a.topology, a.dir.expanduser().absolute(), a.seed, _settings(a.set))
    except (TestbedError, SwarmError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
