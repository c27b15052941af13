"""The swarm's trust parameters: their defaults, their bounds, and how governance may change them.

Amounts are integers in *units* (one token is ``UNIT`` units), so balances add up exactly and a
replay reproduces them bit for bit. Multipliers and rates are floats; the ledger only multiplies
and divides them (IEEE-754 results are the same on every machine) and floors the product to units.

Every parameter a ``param`` proposal may change is in :data:`SPECS` with its type and range; a
proposal naming anything else, or a value outside the range, is refused when it is submitted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["DEFAULTS", "SPECS", "UNIT", "ParamSpec", "check_param"]

#: units in one token.
UNIT = 1_000_000


@dataclass(frozen=True, slots=True)
class ParamSpec:
    kind: type
    lo: float
    hi: float
    help: str


SPECS: Mapping[str, ParamSpec] = {
    # rewards (docs/trust.md: reward = base_reward x quality x reliability)
    "base_reward": ParamSpec(
        int, 0, 1_000 * UNIT, "units paid per useful update, before multipliers"
    ),
    "quality_multiplier": ParamSpec(float, 0.0, 10.0, "weight of the contribution score share"),
    "reliability_bonus": ParamSpec(float, 0.0, 10.0, "weight of the node's reliability"),
    "validator_reward": ParamSpec(
        int, 0, 1_000 * UNIT, "units per attestation of a committed round"
    ),
    # penalties
    "slashing_rate": ParamSpec(float, 0.0, 1.0, "share of holdings taken per proven offence"),
    "outlier_limit": ParamSpec(
        int, 1, 1_000, "outlier flags within outlier_window rounds that slash"
    ),
    "outlier_window": ParamSpec(int, 1, 1_000, "committed rounds the outlier count looks back"),
    "evidence_ttl": ParamSpec(int, 1, 1 << 40, "log entries an evidence record is kept"),
    # admission and roles
    "min_stake": ParamSpec(int, 0, 1 << 60, "stake a trainer needs (units)"),
    "reputation_threshold": ParamSpec(float, 0.0, 1.0, "reliability a trainer needs"),
    "min_proposal_stake": ParamSpec(int, 1, 1 << 60, "stake a proposer needs (units)"),
    # swarm-wide floors the rounds ledger applies to every job
    "min_participants": ParamSpec(int, 0, 1_000, "floor on every job's min_participants"),
    # rate limits (enforced where the time is known: selectors, membership)
    "max_tasks_per_node_per_hour": ParamSpec(int, 0, 1 << 20, "0: unlimited"),
    "max_heartbeats_per_minute": ParamSpec(int, 0, 1 << 20, "0: unlimited"),
    # governance
    "voting_period": ParamSpec(int, 1, 1 << 30, "log entries a proposal is open for votes"),
    "epoch_length": ParamSpec(
        int, 1, 1 << 30, "log entries per epoch; changes apply at a boundary"
    ),
    "gov_quorum": ParamSpec(float, 0.0, 1.0, "share of all stake that must vote"),
    "gov_threshold": ParamSpec(float, 0.0, 1.0, "share of the voted stake that must say yes"),
}

DEFAULTS: Mapping[str, int | float] = {
    "base_reward": 10 * UNIT,
    "quality_multiplier": 1.0,
    "reliability_bonus": 0.5,
    "validator_reward": 2 * UNIT,
    "slashing_rate": 0.1,
    "outlier_limit": 3,
    "outlier_window": 10,
    "evidence_ttl": 100_000,
    "min_stake": 0,
    "reputation_threshold": 0.0,
    "min_proposal_stake": 1,
    "min_participants": 0,
    "max_tasks_per_node_per_hour": 0,
    "max_heartbeats_per_minute": 0,
    "voting_period": 32,
    "epoch_length": 16,
    "gov_quorum": 0.5,
    "gov_threshold": 0.5,
}


def check_param(name: object, value: object) -> str:
    """ "" if ``name = value`` is a valid parameter setting, else why not."""
    if type(name) is not str or name not in SPECS:
        return f"unknown parameter {name!r}"
    spec = SPECS[name]
    if spec.kind is int and type(value) is not int:
        return f"{name} must be an integer"
    if spec.kind is float and type(value) not in (int, float):
        return f"{name} must be a number"
    v = float(value)  # type: ignore[arg-type]
    if not spec.lo <= v <= spec.hi:
        return f"{name} must be in {spec.lo:g}..{spec.hi:g}"
    return ""
