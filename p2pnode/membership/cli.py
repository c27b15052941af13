"""``p2pnode members [--json] [--watch]``: the membership view of one daemon.

Without ``--watch`` it prints one table (or the ``members`` result as JSON). With ``--watch``
on a terminal it redraws the table every second; with ``--watch --json`` it prints one JSON
line per membership event (join, suspect, dead, recovered, state) as they happen.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

STATE_MARK = {"alive": "alive", "suspect": "SUSPECT", "dead": "DEAD"}


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("members", parents=[common], help="membership: who is alive, and how")
    p.add_argument("--watch", action="store_true", help="live table (or JSON events with --json)")
    p.add_argument(
        "--interval",
        type=float,
        default=1.0,
        help="seconds between redraws (default: %(default)s)",
    )


def _age(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.1f}s" if x < 100 else f"{x / 60:.0f}m"


def _phi(m: dict[str, Any]) -> str:
    """Suspicion only where it means something: a dead member's detector is dropped (its phi
    reads 0), and this node does not suspect itself."""
    if m["self"] or m["state"] == "dead":
        return "-"
    return f"{m['suspicion']:.1f}"


def render(result: dict[str, Any]) -> str:
    rows = result["members"]
    header = (
        f"{'PEER':<14} {'STATE':<8} {'INC':>13} {'HEARD':>6} {'PHI':>6} {'REL':>5} "
        f"{'CPU':>3} {'MEM GiB':>7} {'GPU':<10} {'SLOTS':>5} {'TASKS':>5} MODELS"
    )
    lines = [header]
    for m in rows:
        cap, load = m["capabilities"], m["load"]
        peer = ("*" if m["self"] else " ") + "…" + m["peer_id"][-11:]
        lines.append(
            f"{peer:<14} {STATE_MARK.get(m['state'], m['state']):<8} {m['incarnation']:>13} "
            f"{_age(None if m['self'] else m['last_heard']):>6} {_phi(m):>6} "
            f"{m['reliability']:>5.2f} "
            f"{cap['cpu_cores']:>3} {cap['memory_mb'] / 1024:>7.1f} {(cap['gpu'] or '-')[:10]:<10} "
            f"{load['free_slots']:>5} {load['tasks_running']:>5} {','.join(m['models']) or '-'}"
        )
    counts: dict[str, int] = {}
    for m in rows:
        counts[m["state"]] = counts.get(m["state"], 0) + 1
    summary = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
    counters = " ".join(f"{k}={v}" for k, v in sorted(result.get("counters", {}).items()) if v)
    lines.append(f"{summary}; awareness {result.get('awareness', 0)}; counters {counters or '-'}")
    return "\n".join(lines)


def cmd_members(args: argparse.Namespace, client_factory: Any) -> int:
    as_json = bool(getattr(args, "json", False))
    with client_factory(args) as c:
        if not args.watch:
            result = c.call("members")
            if as_json:
                print(json.dumps(result, indent=2))
            else:
                print(render(result))
            return 0
        if as_json:
            for event in c.subscribe("members"):
                print(json.dumps(event), flush=True)
            return 0
        tty = sys.stdout.isatty()
        while True:
            text = render(c.call("members"))
            if tty:
                sys.stdout.write("\x1b[H\x1b[2J")
            print(time.strftime("%H:%M:%S"), text, sep="\n", flush=True)
            time.sleep(max(0.1, args.interval))
