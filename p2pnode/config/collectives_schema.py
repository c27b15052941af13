"""The ``collectives.*`` settings: groups and their operations (docs/collectives.md)."""

from __future__ import annotations

from p2pnode.config.setting import Setting, _range

__all__ = ["COLLECTIVES_SCHEMA"]

COLLECTIVES_SCHEMA: tuple[Setting, ...] = (
    Setting(
        "collectives.stall_timeout",
        float,
        10.0,
        "Seconds an operation may go without a part moving before it fails on this member "
        "(blaming the members that still owe parts) and the group re-forms without them.",
        _range(0.1, 3600),
    ),
    Setting(
        "collectives.op_timeout",
        float,
        300.0,
        "Seconds an operation may take at most, when its caller gives no timeout.",
        _range(0.1, 86400),
    ),
    Setting(
        "collectives.reform_wait",
        float,
        2.0,
        "Seconds a re-forming group's leader waits for the old members to rejoin before it "
        "forms the next generation with those that did.",
        _range(0.05, 600),
    ),
    Setting(
        "collectives.fault",
        str,
        "",
        "For tests only: make this node send bad parts (corrupt: a flipped byte; short: one "
        "element fewer than the part should hold).",
        lambda v: None if v in ("", "corrupt", "short") else "must be '', corrupt or short",
    ),
)
