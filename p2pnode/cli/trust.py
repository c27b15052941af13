"""``p2pnode ledger``, ``stake``, ``transfer``, ``gov`` and ``evidence``: the trust ledger from
the command line (docs/trust.md).

Amounts are typed and shown in tokens (a token is 1,000,000 units; the daemon speaks units).
A parameter value of a proposal may be given in tokens with the suffix ``tok`` (``min_stake=5tok``).
"""

from __future__ import annotations

import argparse
from typing import Any

from p2pnode.cli.support import CliError, client, print_result
from p2pnode_protocols.trust import KINDS, SPECS, UNIT

__all__ = ["COMMANDS", "add_parsers"]


def _tokens(units: int) -> str:
    return f"{units / UNIT:,.6f}".rstrip("0").rstrip(".")


def _units(text: str) -> int:
    try:
        tokens = float(text)
    except ValueError:
        raise CliError(f"{text!r} is not an amount of tokens") from None
    units = round(tokens * UNIT)
    if units <= 0:
        raise CliError("the amount must be more than zero")
    return units


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    led = sub.add_parser(
        "ledger",
        parents=[common],
        help="balances, stakes, rewards and penalties (this node, a PEER, or --all)",
    )
    led.add_argument("peer", metavar="PEER", nargs="?", help="a peer id (default: this node)")
    led.add_argument("--all", action="store_true", help="every account, one line each")
    led.add_argument("--limit", type=int, default=20, help="journal entries (default: 20)")
    st = sub.add_parser("stake", parents=[common], help="put TOKENS of the balance at stake")
    st.add_argument("amount", metavar="TOKENS", help="how many tokens")
    st.add_argument("--remove", action="store_true", help="take TOKENS of stake back")
    tr = sub.add_parser("transfer", parents=[common], help="pay TOKENS to PEER")
    tr.add_argument("to", metavar="PEER", help="the peer id to pay")
    tr.add_argument("amount", metavar="TOKENS", help="how many tokens")
    gov = sub.add_parser("gov", help="governance: propose, vote, list, params")
    gsub = gov.add_subparsers(dest="gov_command", required=True, metavar="ACTION")
    pr = gsub.add_parser(
        "propose",
        parents=[common],
        help="propose a change: param NAME=VALUE..., committee PEER..., admission KEY=VALUE...",
    )
    pr.add_argument("kind", choices=KINDS, help="what the proposal changes")
    pr.add_argument(
        "items",
        metavar="ITEM",
        nargs="+",
        help="param: NAME=VALUE (tokens with the suffix tok); committee: peer ids; "
        "admission: allowlist=PEER,PEER min_stake=VALUE reputation_threshold=X",
    )
    pr.add_argument("--title", default="", help="a line saying why")
    vo = gsub.add_parser("vote", parents=[common], help="vote on a proposal with this node's stake")
    vo.add_argument("proposal", metavar="ID", help="the proposal's id (gov list)")
    vo.add_argument("choice", choices=("yes", "no"), help="the vote")
    li = gsub.add_parser("list", parents=[common], help="proposals and their tallies")
    li.add_argument(
        "--status",
        choices=("open", "passed", "rejected", "expired", "enacted"),
        help="only proposals in this state",
    )
    gsub.add_parser("params", parents=[common], help="the parameters in force")
    ev = sub.add_parser("evidence", help="evidence of misbehaviour the ledger keeps")
    esub = ev.add_subparsers(dest="evidence_command", required=True, metavar="ACTION")
    el = esub.add_parser("list", parents=[common], help="evidence records and their penalties")
    el.add_argument("--peer", metavar="PEER", help="only against this peer")


def render_account(r: dict[str, Any]) -> str:
    roles = ["validator"] if r["validator"] else []
    roles.append("trainer" if r["trainer"] == "admitted" else f"not a trainer ({r['trainer']})")
    lines = [
        f"peer         {r['peer']}",
        f"balance      {_tokens(r['balance'])}",
        f"stake        {_tokens(r['stake'])}",
        f"earned       {_tokens(r['earned'])}   slashed {_tokens(r['slashed'])}",
        f"reliability  {r['reliability']:.3f} ({r['flagged']} flagged)",
        f"roles        {', '.join(roles)}",
    ]
    if r.get("entries"):
        lines.append("entries (seq, what, balance, stake, about)")
        for e in r["entries"]:
            about = e["ref"] + (f"  {e['detail']}" if e["detail"] else "")
            lines.append(
                f"  {e['seq']:>7}  {e['reason']:<16} {_tokens(e['balance']):>12} "
                f"{_tokens(e['stake']):>12}  {about}"
            )
    return "\n".join(lines)


def render_accounts(r: dict[str, Any]) -> str:
    lines = [f"{'peer':<54} {'balance':>14} {'stake':>14} {'slashed':>10}  reliability"]
    for a in r["accounts"]:
        lines.append(
            f"{a['peer']:<54} {_tokens(a['balance']):>14} {_tokens(a['stake']):>14} "
            f"{_tokens(a['slashed']):>10}  {a['reliability']:.3f}"
        )
    lines.append(
        f"total stake {_tokens(r['total_stake'])}, burned {_tokens(r['burned'])}, "
        f"at entry {r['seq']}, digest {r['digest'][:16]}"
    )
    return "\n".join(lines)


def render_proposals(r: dict[str, Any]) -> str:
    if not r["proposals"]:
        return "(no proposals)"
    lines = []
    for p in r["proposals"]:
        change = ", ".join(
            f"{k}={' '.join(v) if isinstance(v, list) else v}" for k, v in p["change"].items()
        )
        when = f"deadline {p['deadline']}"
        if p["activates_at"] is not None:
            when += f", activates at {p['activates_at']}"
        lines.append(
            f"{p['id']}  {p['status']:<8} {p['kind']}: {change}  "
            f"(yes {_tokens(p['yes'])}, no {_tokens(p['no'])}; {when})"
            + (f"  {p['title']}" if p["title"] else "")
        )
    return "\n".join(lines)


def render_evidence(r: dict[str, Any]) -> str:
    if not r["evidence"]:
        return "(no evidence)"
    return "\n".join(
        f"{e['id']}  seq {e['seq']:>7}  {e['kind']:<14} {e['peer']}  penalty "
        f"{_tokens(e['penalty'])}  {e['ref']}: {e['detail']}"
        for e in r["evidence"]
    )


def _value(name: str, text: str) -> Any:
    if text.endswith("tok"):
        return _units(text[:-3])
    spec = SPECS.get(name)
    try:
        return int(text) if spec is not None and spec.kind is int else float(text)
    except ValueError:
        raise CliError(f"{name}: {text!r} is not a number") from None


def _change(kind: str, items: list[str]) -> dict[str, Any]:
    if kind == "committee":
        return {"validators": items}
    change: dict[str, Any] = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep:
            raise CliError(f"{item!r}: give NAME=VALUE")
        change[name] = (
            [p for p in text.split(",") if p] if name == "allowlist" else _value(name, text)
        )
    return change


def cmd_ledger(args: argparse.Namespace) -> int:
    with client(args) as c:
        if args.all:
            r = c.call("ledger.accounts", {})
            print_result(args, r, render_accounts(r))
            return 0
        params: dict[str, Any] = {"limit": args.limit}
        if args.peer:
            params["peer"] = args.peer
        r = c.call("ledger.account", params)
    print_result(args, r, render_account(r))
    return 0


def cmd_stake(args: argparse.Namespace) -> int:
    with client(args) as c:
        r = c.call("ledger.stake", {"amount": _units(args.amount), "remove": args.remove})
    print_result(
        args, r, f"{'unstaked' if args.remove else 'staked'} {args.amount} at entry {r['seq']}"
    )
    return 0


def cmd_transfer(args: argparse.Namespace) -> int:
    with client(args) as c:
        r = c.call("ledger.transfer", {"to": args.to, "amount": _units(args.amount)})
    print_result(args, r, f"paid {args.amount} to {args.to} at entry {r['seq']}")
    return 0


def cmd_gov(args: argparse.Namespace) -> int:
    with client(args) as c:
        if args.gov_command == "propose":
            params = {
                "kind": args.kind,
                "change": _change(args.kind, args.items),
                "title": args.title,
            }
            r = c.call("gov.propose", params)
            p = r["proposal"]
            human = f"proposal {p['id']} open until entry {p['deadline']}" if p else "proposed"
        elif args.gov_command == "vote":
            r = c.call("gov.vote", {"proposal": args.proposal, "yes": args.choice == "yes"})
            p = r["proposal"]
            human = (
                f"voted {args.choice} on {p['id']}: yes {_tokens(p['yes'])}, no {_tokens(p['no'])}"
            )
        elif args.gov_command == "list":
            r = c.call("gov.list", {"status": args.status} if args.status else {})
            human = render_proposals(r)
        else:
            r = c.call("gov.params", {})
            human = "\n".join(
                [f"{k:<28} {v:<14} {r['help'].get(k, '')}" for k, v in r["params"].items()]
                + [f"{'allowlist':<28} {' '.join(r['allowlist']) or '(everyone)'}"]
            )
    print_result(args, r, human)
    return 0


def cmd_evidence(args: argparse.Namespace) -> int:
    with client(args) as c:
        r = c.call("evidence.list", {"peer": args.peer} if args.peer else {})
    print_result(args, r, render_evidence(r))
    return 0


COMMANDS = {
    "ledger": cmd_ledger,
    "stake": cmd_stake,
    "transfer": cmd_transfer,
    "gov": cmd_gov,
    "evidence": cmd_evidence,
}
