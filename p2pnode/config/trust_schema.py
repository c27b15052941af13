"""The ``trust.*`` settings: the trust ledger's genesis and the trust service (docs/trust.md).

Genesis settings must be the same on every node of a swarm (like ``consensus.validators``): the
ledger every node folds starts from them. Parameters after genesis change only by governance.
"""

from __future__ import annotations

from typing import Any

from p2pnode.config.setting import Setting, _range

__all__ = ["TRUST_SCHEMA", "parse_genesis", "parse_params"]


def parse_genesis(v: list[str]) -> dict[str, float]:
    """``["PEER_ID=TOKENS", ...]`` as {peer id: tokens}; ValueError on a bad item."""
    from libp2p.peer.id import ID

    out: dict[str, float] = {}
    for item in v:
        peer, sep, amount = str(item).partition("=")
        if not sep:
            raise ValueError(f"{item!r} is not PEER_ID=TOKENS")
        ID.from_base58(peer)
        tokens = float(amount)
        if not 0 <= tokens <= 1e12:
            raise ValueError(f"{item!r}: tokens must be in 0..1e12")
        out[peer] = tokens
    return out


def parse_params(v: list[str]) -> dict[str, int | float]:
    """``["NAME=VALUE", ...]`` as trust parameters; ValueError naming what is wrong."""
    from p2pnode_protocols.trust import SPECS, check_param

    out: dict[str, int | float] = {}
    for item in v:
        name, sep, text = str(item).partition("=")
        if not sep or name not in SPECS:
            raise ValueError(f"{item!r}: not NAME=VALUE with a known parameter name")
        value: int | float = int(text) if SPECS[name].kind is int else float(text)
        reason = check_param(name, value)
        if reason:
            raise ValueError(reason)
        out[name] = value
    return out


def _checked(parse: Any) -> Any:
    def check(v: list[str]) -> str | None:
        try:
            parse(v)
        except Exception as exc:
            return str(exc)
        return None

    return check


TRUST_SCHEMA: tuple[Setting, ...] = (
    Setting(
        "trust.validator_stake",
        float,
        1000.0,
        "Tokens of stake each genesis validator (consensus.validators) starts with: the weight "
        "of its governance votes until stakes change. The same on every node.",
        _range(0, 1e12),
    ),
    Setting(
        "trust.genesis",
        list,
        [],
        'More genesis stake, as "PEER_ID=TOKENS" items. The same on every node.',
        _checked(parse_genesis),
    ),
    Setting(
        "trust.params",
        list,
        [],
        'Genesis values of trust parameters, as "NAME=VALUE" items (see docs/trust.md; '
        "governance changes them later). The same on every node.",
        _checked(parse_params),
    ),
    Setting(
        "trust.tick_interval",
        float,
        0.5,
        "Seconds between the empty entries a validator commits while a proposal is open or "
        "waits for its epoch boundary, so deadlines pass on a quiet log.",
        _range(0.05, 3600),
    ),
    Setting(
        "trust.commit_timeout",
        float,
        30.0,
        "Seconds a trust transaction (stake, proposal, vote) may wait for its commit.",
        _range(0.1, 3600),
    ),
)
