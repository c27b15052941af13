"""A bound on what a decoded CBOR value costs to write out again, found without writing it.

CBOR's shared references (tags 28/29) let a few bytes decode to a tree of millions of items,
or to a cycle. Decoders here check canonical form by encoding what they decoded and comparing
the bytes: on such a value that encode would take seconds, exhaust memory or raise an error
that is not the decoder's own. :func:`fits` walks the value first and stops as soon as it is
past its budget, so a cycle ends too. Canonical CBOR never uses shared references, so a value
that does not fit in the bytes it came from is never canonical.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import cbor2


def fits(value: Any, limit: int) -> bool:
    """Whether ``value`` may encode to at most ``limit`` bytes. Every item costs at least a
    byte and every string its length, so a value refused here encodes to more than ``limit``."""
    budget = limit
    stack = [value]
    while stack:
        v = stack.pop()
        budget -= 1 + (len(v) if isinstance(v, str | bytes) else 0)
        if budget < 0:
            return False
        if isinstance(v, list | tuple | set | frozenset):
            stack.extend(v)
        elif isinstance(v, Mapping):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, cbor2.CBORTag):
            stack.append(v.value)
    return True
