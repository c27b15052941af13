"""``p2pnode consensus status|submit`` and ``p2pnode log [--follow]``.

``consensus status`` prints the role, view, primary, last committed seq, stable checkpoint and
the committee. ``consensus submit KEY VALUE`` commits a key/value transaction and prints its
seq. ``log`` prints committed entries (one line per transaction); ``--follow`` keeps printing
new ones as they commit (it subscribes to the ``commits`` topic and reads each new range).
With ``--json`` every command prints the IPC result, and ``log`` one JSON object per entry.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("consensus", help="the PBFT commit log: status, submit")
    csub = p.add_subparsers(dest="consensus_command", required=True, metavar="ACTION")
    csub.add_parser("status", parents=[common], help="view, primary, last committed, committee")
    s = csub.add_parser("submit", parents=[common], help="commit KEY=VALUE (waits for it)")
    s.add_argument("key")
    s.add_argument("value")
    s.add_argument("--timeout", type=float, help="seconds to wait for the commit")

    lg = sub.add_parser("log", parents=[common], help="committed log entries")
    lg.add_argument("--from", dest="first", type=int, default=1, help="first seq (default 1)")
    lg.add_argument("--to", dest="last", type=int, help="last seq (default: the end)")
    lg.add_argument("--follow", action="store_true", help="keep printing new commits")


def _short(peer: str | None) -> str:
    return "-" if not peer else "…" + peer[-10:]


def render_status(s: dict[str, Any]) -> str:
    lines = [
        f"role               {s['role']}",
        f"view               {s['view'] if s['view'] is not None else '-'}"
        + ("  (changing view)" if s.get("in_view_change") else ""),
        f"primary            {s['primary'] or '-'}",
        f"last committed     {s['last_committed']}",
        f"log                1..{s['log_last']} held here",
        f"stable checkpoint  {'-' if s['stable_checkpoint'] is None else s['stable_checkpoint']}",
        f"committee (f={s['f']})  " + "\n                   ".join(s["committee"]),
    ]
    if s.get("error"):
        lines.append(f"ERROR              {s['error']}")
    return "\n".join(lines)


def _value(v: Any) -> str:
    if isinstance(v, bytes):
        try:
            return v.decode()
        except UnicodeDecodeError:
            return "0x" + v.hex()
    return str(v)


def render_entry(e: dict[str, Any]) -> list[str]:
    out = []
    view = e["certificate"]["view"]
    if not e["txs"]:
        out.append(f"{e['seq']:>8}  view {view}  (empty batch)  {e['digest'][:12]}")
    for t in e["txs"]:
        tx = t["tx"]
        what = tx["type"]
        if what == "kv_put":
            what = f"kv_put {tx['key']}={_value(tx['value'])[:40]}"
        status = t.get("status", "")
        out.append(
            f"{e['seq']:>8}  view {view}  {_short(t['client'])}#{t['request_id'] & 0xFFFFFFFF}"
            f"  {what}  {status}".rstrip()
        )
    return out


def _emit(args: argparse.Namespace, entries: list[dict[str, Any]]) -> None:
    for e in entries:
        if args.json:
            print(json.dumps(e, default=_json_default), flush=True)
        else:
            print("\n".join(render_entry(e)), flush=True)


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return {"hex": value.hex()}
    raise TypeError(type(value).__name__)


def cmd_consensus(args: argparse.Namespace, client_factory: Any) -> int:
    with client_factory(args) as c:
        if args.consensus_command == "status":
            s = c.consensus_status()
            print(json.dumps(s, indent=2, default=_json_default) if args.json else render_status(s))
            return 0
        r = c.consensus_submit(
            {"type": "kv_put", "key": args.key, "value": args.value.encode()},
            timeout=args.timeout,
        )
        if args.json:
            print(json.dumps(r, indent=2, default=_json_default))
        else:
            print(f"committed at seq {r['seq']} ({r['status']}), view {r['certificate']['view']}")
        return 0


def _read_range(c: Any, first: int, last: int | None, args: argparse.Namespace) -> int:
    """Print entries first..last (or to the end); returns the next seq to read."""
    while last is None or first <= last:
        page = c.consensus_log(first, last)["entries"]
        if not page:
            break
        _emit(args, page)
        first = page[-1]["seq"] + 1
    return first


def cmd_log(args: argparse.Namespace, client_factory: Any) -> int:
    if args.first < 1:
        print("p2pnode: --from must be at least 1", file=sys.stderr)
        return 2
    with client_factory(args) as c, client_factory(args) as reader:
        if not args.follow:
            _read_range(c, args.first, args.last, args)
            return 0
        # Subscribe first (that connection is then the subscription's), then print what is
        # there with the other one: no commit can fall between the two.
        events = c.subscribe("commits")
        nxt = _read_range(reader, args.first, args.last, args)
        if args.last is not None and nxt > args.last:
            return 0
        for ev in events:
            if ev.get("event") != "commit" or ev["seq"] < nxt:
                continue
            nxt = _read_range(reader, nxt, args.last, args)
            if args.last is not None and nxt > args.last:
                return 0
    return 0


__all__ = ["add_parsers", "cmd_consensus", "cmd_log", "render_entry", "render_status"]
