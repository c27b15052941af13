"""What one setting is: the record :data:`p2pnode.config.schema.SCHEMA` is made of, its range
check, and the error every bad value raises."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["ConfigError", "Setting", "_Range", "_range"]


class ConfigError(Exception):
    """A configuration value is missing, malformed or out of range (one line, names the key)."""


@dataclass(frozen=True, slots=True)
class Setting:
    key: str
    kind: type  # int, float, str, bool or list (of str)
    default: Any
    doc: str
    check: Callable[[Any], str | None] | None = None  # returns a reason when the value is bad
    optional: bool = False  # None, "" (or "off" for a non-string) means "off"
    size: bool = False  # a size in bytes: the reference shows it in KiB, MiB or GiB too


@dataclass(frozen=True, slots=True)
class _Range:
    """The check "between lo and hi", kept as data so that the reference can show the bounds."""

    lo: float
    hi: float

    def __call__(self, v: Any) -> str | None:
        return None if self.lo <= v <= self.hi else f"must be between {self.lo:g} and {self.hi:g}"


def _range(lo: float, hi: float) -> Callable[[Any], str | None]:
    return _Range(lo, hi)
