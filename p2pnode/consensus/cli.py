"""``p2pnode consensus status|submit`` and ``p2pnode log [--follow]``.

``consensus status`` prints the role, view, primary, last committed seq, stable checkpoint and
the committee. ``consensus submit KEY VALUE`` commits a key/value transaction and prints its
seq and the lane that signed it. ``log`` prints committed entries (one line per transaction);
``--follow`` keeps printing new ones as they commit (it subscribes to the ``commits`` topic and
reads each new range). With ``--json`` every command prints the IPC result, and ``log`` one
JSON object per entry.

A transaction is signed not with the submitting node's identity but with one of its *lane*
keys (``consensus.client_lanes`` of them, derived from the node's private key, so nobody else
can tell which node a lane belongs to): ``log`` shows ``lane …<key tail>#<n>``, the lane key's
tail and the transaction's number on it, and ``submit`` prints the same words, so the node that
submitted an entry is the one whose ``submit`` printed that lane.
"""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("consensus", help="the PBFT commit log: status, submit")
    csub = p.add_subparsers(dest="consensus_command", required=True, metavar="ACTION")
    csub.add_parser("status", parents=[common], help="view, primary, last committed, committee")
    s = csub.add_parser(
        "submit", parents=[common], help="commit VALUE under KEY (two arguments; waits for it)"
    )
    s.add_argument("key", metavar="KEY", help="the key to write")
    # Optional here so that a lone KEY=VALUE gets a hint (p2pnode.cli checks it), not a usage.
    s.add_argument("value", metavar="VALUE", nargs="?", help="the value, as text")
    s.set_defaults(kv_parser=s)
    s.add_argument("--timeout", type=float, help="seconds to wait for the commit")

    lg = sub.add_parser("log", parents=[common], help="committed log entries")
    lg.add_argument(
        "--from",
        dest="first",
        type=_seq,
        default=1,
        metavar="N",
        help="first seq (default: %(default)s)",
    )
    lg.add_argument("--to", dest="last", type=_seq, metavar="M", help="last seq (default: the end)")
    lg.add_argument("--follow", action="store_true", help="keep printing new commits")


def _seq(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if n < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return n


def _short(peer: str | None) -> str:
    return "-" if not peer else "…" + peer[-10:]


def render_status(s: dict[str, Any]) -> str:
    epoch = f" epoch {s['epoch']}" if s.get("epoch") else ""
    committee = f"committee{epoch} (f={s['f']})"
    lines = [
        f"role               {s['role']}",
        f"view               {s['view'] if s['view'] is not None else '-'}"
        + ("  (changing view)" if s.get("in_view_change") else ""),
        f"primary            {s['primary'] or '-'}"
        + ("  (declared dead: a view change is on its way)" if s.get("primary_suspected") else ""),
        f"last committed     {s['last_committed']}",
        f"log                1..{s['log_last']} held here",
        f"stable checkpoint  {'-' if s['stable_checkpoint'] is None else s['stable_checkpoint']}",
        f"{committee:<18} " + "\n                   ".join(s["committee"]),
    ]
    pending = s.get("pending_committee")
    if pending:
        head = f"next (epoch {pending['epoch']}, from {pending['activate_seq']})"
        lines.append(f"{head:<18} " + "\n                   ".join(pending["validators"]))
    if s.get("dead_members"):
        lines.append("dead members       " + "\n                   ".join(s["dead_members"]))
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


def lane(client: str | None, request_id: int) -> str:
    """A transaction's signer as people read it: the lane key's tail and its number on it."""
    return f"lane {_short(client)}#{request_id & 0xFFFFFFFF}"


def render_submitted(r: dict[str, Any]) -> str:
    """One line for a committed ``consensus submit``, the same through any node. The status is
    the state machine's answer where this node executes (a validator); a follower only knows
    it committed."""
    line = (
        f"committed at seq {r['seq']}, view {r['certificate']['view']}, "
        f"as {lane(r.get('client'), r.get('request_id', 0))}"
    )
    if r.get("status") not in (None, "ok", "committed"):
        line += f" (state machine: {r['status']})"
    return line


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
            f"{e['seq']:>8}  view {view}  {lane(t['client'], t['request_id'])}"
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
            print(render_submitted(r))
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


__all__ = [
    "add_parsers",
    "cmd_consensus",
    "cmd_log",
    "lane",
    "render_entry",
    "render_status",
    "render_submitted",
]
