"""``p2pnode group status [NAME]``: the collective groups this node is in (docs/collectives.md).

It prints the daemon's ``group.status`` result: per group its name, whether it is formed, its
generation, this node's rank, the world size and the members in rank order, the last error
(why it last broke or an operation failed) and this member's counters (operations, failures,
bytes sent and received, seconds spent in operations that succeeded). ``--json`` prints the
result as the daemon gives it. Joining and the operations are left to programs
(``Client.join_group``): every member must call the same operations in the same order, which
a command line cannot do.
"""

from __future__ import annotations

import argparse
from typing import Any

from p2pnode.cli.support import client, print_result

__all__ = ["add_parsers", "cmd_group", "render"]


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """``group status``."""
    group = sub.add_parser("group", help="collective groups (all-reduce): status")
    gsub = group.add_subparsers(dest="group_command", required=True, metavar="ACTION")
    st = gsub.add_parser(
        "status",
        parents=[common],
        help="the groups this node is in: members, rank, generation, counters",
    )
    st.add_argument("name", metavar="NAME", nargs="?", help="only this group (default: every one)")


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def render_group(g: dict[str, Any]) -> str:
    """One group for people: a summary, then its members in rank order."""
    stats = g.get("stats") or {}
    state = "formed" if g["formed"] else "forming"
    want = f"size {g['size']}" if g.get("size") else f"min_size {g.get('min_size')}"
    ops, failures = stats.get("ops", 0), stats.get("failures", 0)
    lines = [
        f"group        {g['name']} ({state}, generation {g['generation']}, {want})",
        f"rank         {g['rank']} of {g['world_size']}"
        if g["rank"] >= 0
        else "rank         - (not formed yet)",
        f"last error   {g.get('last_error') or '-'}",
        f"operations   {ops} ({failures} failed), {stats.get('seconds', 0.0):.2f} s in those"
        " that succeeded",
        f"bytes        sent {_bytes(stats.get('bytes_sent', 0))}, "
        f"received {_bytes(stats.get('bytes_received', 0))}",
        "members",
    ]
    for rank, peer in enumerate(g["members"]):
        me = "  (this node)" if rank == g["rank"] else ""
        lines.append(f"  {rank:>3}  {peer}{me}")
    if not g["members"]:
        lines.append("  (none yet)")
    return "\n".join(lines)


def render(result: dict[str, Any]) -> str:
    """``group status`` for people: one block per group, then this node's totals."""
    groups = result.get("groups") or []
    blocks = [render_group(g) for g in groups] or ["(this node is in no group)"]
    counters = " ".join(f"{k}={v}" for k, v in sorted((result.get("counters") or {}).items()) if v)
    blocks.append(
        f"node: data streams sent {_bytes(result.get('bytes_sent', 0))}, "
        f"received {_bytes(result.get('bytes_received', 0))}; counters {counters or '-'}"
    )
    return "\n\n".join(blocks)


def cmd_group(args: argparse.Namespace) -> int:
    params = {} if args.name is None else {"name": args.name}
    with client(args) as c:
        r = c.call("group.status", params)
    print_result(args, r, render(r))
    return 0
