"""Job specs in TOML: parsing, defaults and one-line errors that name the key.

A spec file has top-level ``name``, ``rounds`` and ``priority`` and the tables ``[model]``,
``[data]``, ``[local]``, ``[outer]``, ``[aggregation]``, ``[compression]``, ``[sync]``,
``[participants]`` and ``[capabilities]`` (docs/jobs.md lists every key). :func:`parse_spec`
turns it into a :class:`p2pnode_protocols.rounds.JobSpec` whose ``learning`` map holds the learning
part in the flat form :mod:`p2pnode.rounds.compute` reads; unknown keys are errors, as typos are the
commonest mistake in a spec.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from p2pnode.training.aggregation import RULE_NAMES, make_rule
from p2pnode.training.compression import COMPRESSION_KINDS
from p2pnode_protocols.rounds import Capabilities, JobSpec
from p2pnode_protocols.rounds.spec import MAX_PARTICIPANTS

__all__ = [
    "DEFAULT_LEARNING",
    "SpecError",
    "load_spec",
    "loads_toml",
    "parse_spec",
    "spec_from_options",
]

OUTER_OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "cosine")
ATTACKS = ("", "sign_flip", "scaled", "gaussian", "alie", "ipm", "min_max", "min_sum", "mimic")


class SpecError(ValueError):
    """A job spec is invalid; the message is one line naming the key."""


#: The learning part's keys, their defaults and the table and key a spec file gives them by.
DEFAULT_LEARNING: dict[str, Any] = {
    "model": "mlp",
    "hidden": [128],
    "init_seed": 0,
    "init_key": "",
    "data": "digits",
    "data_path": "",
    "shard": "dirichlet",
    "alpha": 0.5,
    "seed": 0,
    "test_fraction": 0.2,
    "epochs": 5,
    "batch_size": 32,
    "local_lr": 0.1,
    "local_momentum": 0.9,
    "local_optimizer": "sgd",
    "local_schedule": "cosine",
    "outer": "sgd",
    "outer_lr": 1.0,
    "outer_momentum": 0.0,
    "nesterov": False,
    "outer_schedule": "constant",
    "rule": "fedavg",
    "f": 1,
    "mixing": "default",
    "screen": "default",
    "compression": "none",
    "ratio": 0.01,
    "error_feedback": "default",
}

_TABLES: dict[str, dict[str, str]] = {
    "model": {
        "kind": "model",
        "hidden": "hidden",
        "init_seed": "init_seed",
        "init_key": "init_key",
    },
    "data": {
        "source": "data",
        "path": "data_path",
        "shards": "shard",
        "alpha": "alpha",
        "seed": "seed",
        "test_fraction": "test_fraction",
    },
    "local": {
        "epochs": "epochs",
        "batch_size": "batch_size",
        "lr": "local_lr",
        "momentum": "local_momentum",
        "optimizer": "local_optimizer",
        "schedule": "local_schedule",
    },
    "outer": {
        "optimizer": "outer",
        "lr": "outer_lr",
        "momentum": "outer_momentum",
        "nesterov": "nesterov",
        "schedule": "outer_schedule",
    },
    "aggregation": {"rule": "rule", "f": "f", "mixing": "mixing", "screen": "screen"},
    "compression": {"kind": "compression", "ratio": "ratio", "error_feedback": "error_feedback"},
}
_SCHED = {
    "sync": {
        "policy": "sync",
        "deadline": "round_deadline",
        "stragglers": "stragglers",
        "min_updates": "min_updates",
        "staleness": "staleness",
    },
    "participants": {"min": "min_participants", "max": "max_participants", "shards": "shards"},
    "verify": {
        "spot_check": "spot_check",
        "commit_reveal": "commit_reveal",
        "commit_window": "commit_window",
    },
}
_TOP = {"name", "rounds", "priority", "capabilities", *_TABLES, *_SCHED}


def load_spec(path: str | Path) -> JobSpec:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise SpecError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    return parse_spec(loads_toml(text, str(path)))


def loads_toml(text: str, source: str) -> dict[str, Any]:
    """The TOML document ``text``, or :class:`SpecError` naming ``source``. tomllib parses
    nested arrays and inline tables by recursion, so a few kilobytes of ``[[[[`` exhaust the
    stack, and it hands integer literals to ``int()``, which refuses more than 4300 digits:
    that too is text that is not a spec, not a failure of ours."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{source}: not TOML: {exc}") from None
    except RecursionError:
        raise SpecError(f"{source}: not TOML: nested too deeply") from None
    except ValueError as exc:  # an integer of more than 4300 digits, which int() refuses
        raise SpecError(f"{source}: not TOML: {exc}") from None


def parse_spec(doc: Mapping[str, Any]) -> JobSpec:
    """A validated spec from a parsed TOML document, or :class:`SpecError`."""
    for key in doc:
        if key not in _TOP:
            raise SpecError(f"unknown key {key!r} (known: {', '.join(sorted(_TOP))})")
    learning = dict(DEFAULT_LEARNING)
    for table, keys in _TABLES.items():
        for k, v in _table(doc, table).items():
            if k not in keys:
                raise SpecError(f"unknown key {table}.{k} (known: {', '.join(keys)})")
            learning[keys[k]] = v
    sched: dict[str, Any] = {}
    for table, keys in _SCHED.items():
        for k, v in _table(doc, table).items():
            if k not in keys:
                raise SpecError(f"unknown key {table}.{k} (known: {', '.join(keys)})")
            sched[keys[k]] = v
    caps = _table(doc, "capabilities")
    for k in caps:
        if k not in ("min_cpu_cores", "min_memory_mb", "gpu"):
            raise SpecError(f"unknown key capabilities.{k}")
    check_learning(learning)
    _rule_minimum(learning, sched)
    try:
        return JobSpec(
            name=doc.get("name", "job"),
            rounds=doc.get("rounds", 20),
            priority=doc.get("priority", 0),
            capabilities=Capabilities(**caps),
            learning=learning,
            **sched,
        )
    except (ValueError, TypeError) as exc:
        raise SpecError(str(exc)) from None


def spec_from_options(**options: Any) -> JobSpec:
    """A spec from flat learning keys (DEFAULT_LEARNING's names) and scheduling keywords, as
    the demo and tests build them."""
    learning = dict(DEFAULT_LEARNING)
    sched = {}
    for k, v in options.items():
        if k in learning:
            learning[k] = v
        else:
            sched[k] = v
    check_learning(learning)
    _rule_minimum(learning, sched)
    try:
        return JobSpec(learning=learning, **sched)
    except (ValueError, TypeError) as exc:
        raise SpecError(str(exc)) from None


def rule_minimum(learning: Mapping[str, Any]) -> int:
    """The fewest updates the job's rule can aggregate while tolerating its ``f`` (1 for
    FedAvg; 5 for trimmed mean with f = 2; 7 for Krum with f = 2)."""
    if learning["rule"] == "fedavg":
        return 1
    mixing = learning["mixing"]
    rule = make_rule(
        str(learning["rule"]),
        f=int(learning["f"]),
        mixing=None if mixing == "default" else bool(mixing),
    )
    for n in range(1, 4 * MAX_PARTICIPANTS + 1):
        if rule.max_byzantine(n) >= int(learning["f"]):
            return n
    return 4 * MAX_PARTICIPANTS + 1


def _rule_minimum(learning: Mapping[str, Any], sched: dict[str, Any]) -> None:
    """A round must gather enough updates for the rule: ``sync.min_updates`` defaults to the
    rule's minimum, and a smaller one given by the user is an error naming both keys."""
    need = rule_minimum(learning)
    given = sched.get("min_updates")
    where = f"aggregation.rule = {learning['rule']!r} with f = {learning['f']}"
    if given is not None and type(given) is int and given < need:
        raise SpecError(f"sync.min_updates must be at least {need} for {where}")
    if need > sched.get("max_participants", 8):
        raise SpecError(f"participants.max must be at least {need} for {where}")
    if given is None and need > 1:
        sched["min_updates"] = need


def _table(doc: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    t = doc.get(name, {})
    if not isinstance(t, Mapping):
        raise SpecError(f"{name} must be a table")
    return t


def check_learning(lr: dict[str, Any]) -> None:
    """Checks the learning part in place (normalising ints given for floats)."""

    def choice(key: str, where: str, options: tuple[str, ...]) -> None:
        if lr[key] not in options:
            raise SpecError(f"{where} must be one of {', '.join(map(repr, options))}")

    def number(key: str, where: str, lo: float, hi: float) -> None:
        v = lr[key]
        if type(v) not in (int, float) or not lo <= v <= hi:
            raise SpecError(f"{where} must be a number in {lo}..{hi}")
        lr[key] = float(v)

    def integer(key: str, where: str, lo: int, hi: int) -> None:
        v = lr[key]
        if type(v) is not int or not lo <= v <= hi:
            raise SpecError(f"{where} must be an integer in {lo}..{hi}")

    model = lr["model"]
    if not isinstance(model, str) or not (model in ("mlp", "softmax") or ":" in model):
        raise SpecError("model.kind must be 'mlp', 'softmax' or 'module:factory'")
    hidden = lr["hidden"]
    if not isinstance(hidden, list) or not all(type(h) is int and 1 <= h <= 4096 for h in hidden):
        raise SpecError("model.hidden must be a list of layer widths (1..4096)")
    integer("init_seed", "model.init_seed", 0, 2**31)
    if not isinstance(lr["init_key"], str) or len(lr["init_key"]) > 128:
        raise SpecError("model.init_key must be a blob key (or absent: weights from init_seed)")
    choice("data", "data.source", ("digits", "path"))
    if lr["data"] == "path" and not (isinstance(lr["data_path"], str) and lr["data_path"]):
        raise SpecError("data.path is needed with data.source = 'path'")
    choice("shard", "data.shards", ("iid", "dirichlet"))
    number("alpha", "data.alpha", 1e-3, 1e6)
    integer("seed", "data.seed", 0, 2**31)
    number("test_fraction", "data.test_fraction", 0.01, 0.9)
    integer("epochs", "local.epochs", 1, 1000)
    integer("batch_size", "local.batch_size", 1, 1 << 16)
    number("local_lr", "local.lr", 1e-9, 100)
    number("local_momentum", "local.momentum", 0, 0.9999)
    choice("local_optimizer", "local.optimizer", ("sgd", "adam", "lamb"))
    choice("local_schedule", "local.schedule", SCHEDULES)
    choice("outer", "outer.optimizer", OUTER_OPTIMIZERS)
    number("outer_lr", "outer.lr", 1e-9, 100)
    number("outer_momentum", "outer.momentum", 0, 0.9999)
    if type(lr["nesterov"]) is not bool:
        raise SpecError("outer.nesterov must be true or false")
    choice("outer_schedule", "outer.schedule", SCHEDULES)
    choice("rule", "aggregation.rule", RULE_NAMES)
    integer("f", "aggregation.f", 0, 32)
    if not (lr["mixing"] == "default" or type(lr["mixing"]) is bool):
        raise SpecError("aggregation.mixing must be true, false or 'default'")
    if not (lr["screen"] == "default" or type(lr["screen"]) is bool):
        raise SpecError("aggregation.screen must be true, false or 'default'")
    choice("compression", "compression.kind", COMPRESSION_KINDS)
    number("ratio", "compression.ratio", 1e-6, 1.0)
    if not (lr["error_feedback"] == "default" or type(lr["error_feedback"]) is bool):
        raise SpecError("compression.error_feedback must be true, false or 'default'")
