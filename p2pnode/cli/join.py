"""``p2pnode join-token`` and ``p2pnode join``: forming a swarm and a committee across machines.

``join-token`` asks the running daemon for its advertised addresses and prints a token
(:mod:`p2pnode.config.join`) that a new machine gives to ``p2pnode init --join TOKEN``. With
``--committee K`` the token also names a validator set: this node first, then the other K-1
members the node knows alive (by peer id order), so nobody collects peer ids by hand; every
validator then applies the same token with ``p2pnode join TOKEN`` (an initialised data dir)
and restarts. The token is the only thing that travels, so every node that applies it holds the
same ordered list; the fingerprint printed here, by ``join`` and by ``status`` shows it.

The token goes alone to stdout (``TOKEN=$(p2pnode join-token)``); what to do with it goes to
stderr.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from typing import Any

from p2pnode.cli.support import CliError, client, print_result
from p2pnode.config import load_config, resolve_data_dir
from p2pnode.config.join import JoinToken, decode_token, peer_of


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    jt = sub.add_parser(
        "join-token",
        parents=[common],
        help="print a token other machines join this swarm (and committee) with",
        description="Print a join token naming this node's advertised addresses; with "
        "--committee K, also a validator set of this node and K-1 other live members. "
        "Give it to `p2pnode init --join TOKEN` on a new machine, or `p2pnode join TOKEN` "
        "on an initialised one.",
    )
    jt.add_argument(
        "--committee",
        type=int,
        metavar="K",
        help="name K validators: this node, then K-1 live members in peer id order "
        "(4 tolerates one faulty validator)",
    )
    j = sub.add_parser(
        "join",
        parents=[common],
        help="apply a join token to this data dir's config.toml (then restart the daemon)",
    )
    j.add_argument("token", metavar="TOKEN", help="the token `p2pnode join-token` printed")


def _dialable(addrs: list[str]) -> list[str]:
    """``addrs`` without loopback ones, unless loopback is all there is (one machine)."""

    def loopback(a: str) -> bool:
        parts = a.split("/")
        try:
            return len(parts) > 2 and ipaddress.ip_address(parts[2]).is_loopback
        except ValueError:
            return False

    remote = [a for a in addrs if not loopback(a)]
    return remote or addrs


def _committee(me: str, members: list[dict[str, Any]], k: int) -> tuple[str, ...]:
    if k < 1:
        raise CliError("join-token: --committee needs at least 1 validator")
    others = sorted(m["peer_id"] for m in members if not m["self"] and m["state"] == "alive")
    if len(others) < k - 1:
        raise CliError(
            f"join-token: a committee of {k} needs {k - 1} other live member(s), this node knows "
            f"{len(others)} (see `p2pnode members`): start the other nodes with "
            "`p2pnode init --join TOKEN` (a token without --committee) first"
        )
    return (me, *others[: k - 1])


def cmd_join_token(args: argparse.Namespace) -> int:
    with client(args) as c:
        status = c.status()
        members = c.members()["members"] if args.committee is not None else []
    validators: tuple[str, ...] = ()
    if args.committee is not None:
        validators = _committee(status["peer_id"], members, args.committee)
    token = JoinToken(tuple(_dialable(status["addrs"])), validators)
    text = token.encode()
    result = {
        "token": text,
        "bootstrap": list(token.bootstrap),
        "validators": list(validators),
        "fingerprint": token.fingerprint,
    }
    print_result(args, result, text)
    if not args.json:
        lines = ["joins " + " ".join(token.bootstrap)]
        if validators:
            lines.append(f"committee of {len(validators)}, fingerprint {token.fingerprint}:")
            lines += [f"  {i}. {v}" for i, v in enumerate(validators, 1)]
            lines.append(
                "on every validator (this node too): p2pnode join TOKEN, then restart its daemon"
            )
        else:
            lines.append("on a new machine: p2pnode init --join TOKEN --listen ... --announce ...")
        print("\n".join(lines), file=sys.stderr)
    return 0


def cmd_join(args: argparse.Namespace) -> int:
    from p2pnode.config.edit import set_config_value
    from p2pnode.identity import load_identity_file, peer_id_of

    data_dir = resolve_data_dir(args.data_dir, os.environ)
    token = decode_token(args.token)
    key = data_dir / "identity.key"
    if not key.exists():
        raise CliError(f"{data_dir} is not initialised: run p2pnode init --join TOKEN")
    me = peer_id_of(load_identity_file(key)).to_base58()
    cfg = load_config(data_dir, env={})  # the file's values, not $P2PNODE_* overrides
    bootstrap = list(cfg.bootstrap)
    bootstrap += [a for a in token.bootstrap if peer_of(a) != me and a not in bootstrap]
    if bootstrap != list(cfg.bootstrap):
        set_config_value(data_dir, "bootstrap", bootstrap)
    if token.validators:
        set_config_value(data_dir, "consensus.validators", list(token.validators))
    role = None
    if token.validators:
        role = (
            f"validator {token.validators.index(me) + 1} of {len(token.validators)}"
            if me in token.validators
            else f"follower of {len(token.validators)} validators"
        )
    result = {
        "data_dir": str(data_dir),
        "peer_id": me,
        "bootstrap": bootstrap,
        "validators": list(token.validators),
        "fingerprint": token.fingerprint,
        "role": role,
    }
    lines = [f"{data_dir / 'config.toml'}: bootstrap = {' '.join(bootstrap) or '(none)'}"]
    if token.validators:
        lines.append(f"committee fingerprint {token.fingerprint}: this node is {role}")
    lines.append("restart the daemon to apply it")
    print_result(args, result, "\n".join(lines))
    return 0


def apply_to_new_config(token: JoinToken, values: dict[str, Any]) -> None:
    """Fold ``token`` into the settings ``p2pnode init`` writes into a new config.toml."""
    values["bootstrap"] = [*token.bootstrap, *values.get("bootstrap", [])]
    if token.validators:
        values["consensus.validators"] = list(token.validators)


__all__ = ["add_parsers", "apply_to_new_config", "cmd_join", "cmd_join_token"]
