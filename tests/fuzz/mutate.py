"""A structure-aware mutator for decoders of CBOR: half of the mutations edit the decoded
value (one node replaced by a boundary value of another type, a list item dropped or repeated,
a map key removed or borrowed from elsewhere, a container repeated by shared references, CBOR
inside a byte string mutated in turn) and encode it again; the other half are libFuzzer's
byte-level mutations.

Byte flips alone rarely turn an integer into a 400-digit bignum or a map value into NaN, yet
those are the values a hostile peer sends first. This module imports nothing of p2pnode.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any

import cbor2

ByteMutator = Callable[[bytes, int], bytes]

#: Values a hostile encoder reaches for: integer and float edges, bignums, empty and long
#: strings, other types where one is expected.
BOUNDARY: tuple[Any, ...] = (
    0,
    1,
    -1,
    2**31,
    2**32,
    2**63 - 1,
    2**63,
    2**64,
    -(2**64),
    10**400,
    -(10**400),
    # Past Python's limit on int-to-str conversion (4300 digits): an error message that
    # formats the peer's number raises ValueError instead of the decoder's own error.
    10**4400,
    0.0,
    -0.0,
    0.5,
    1e308,
    math.inf,
    -math.inf,
    math.nan,
    True,
    False,
    None,
    b"",
    b"\x00" * 32,
    b"\xff" * 300,
    "",
    "\x00",
    "x" * 300,
    "/p2pnode/kv/x",
    [],
    {},
    [[[[[[[[[[[]]]]]]]]]]],
)
_MAX_NODES = 2000


def _nodes(value: Any, out: list[tuple[Any, Any]], keys: list[Any]) -> None:
    """(container, index or key) of every node under ``value``, iteratively and bounded."""
    stack = [value]
    while stack and len(out) < _MAX_NODES:
        v = stack.pop()
        if isinstance(v, list):
            for i, item in enumerate(v):
                out.append((v, i))
                stack.append(item)
        elif isinstance(v, dict):
            for k, item in v.items():
                out.append((v, k))
                keys.append(k)
                stack.append(item)


def _replacement(rng: random.Random, old: Any, keys: list[Any], depth: int) -> Any:
    roll = rng.random()
    if isinstance(old, bytes) and depth < 3 and roll < 0.5:
        try:
            inner = cbor2.loads(old)
        except Exception:
            inner = None
        else:  # CBOR inside bytes (an op, a result, a snapshot): mutate it in place
            return _mutate_value(rng, inner, depth + 1)
    if roll < 0.55:
        return rng.choice(BOUNDARY)
    if roll < 0.65 and isinstance(old, int) and not isinstance(old, bool):
        return old + rng.choice((-1, 1, 2**32, -(2**32)))
    if roll < 0.7 and isinstance(old, bytes | str):
        return old[: rng.randrange(len(old) + 1)] if old else old * 2
    if roll < 0.8 and keys:
        return rng.choice(keys)
    if roll < 0.85 and isinstance(old, list | dict):
        # The same container many times over: written with shared references (tags 28/29)
        # a few bytes decode to a tree a decoder may walk or encode again at full size.
        return [old] * rng.choice((2, 16, 255))
    if roll < 0.9:
        return [old] if rng.random() < 0.5 else {rng.choice(keys) if keys else "k": old}
    if roll < 0.93 and isinstance(old, list | dict):
        # A container holding itself: shared references can write a cycle, which a decoder
        # that walks or encodes again what it decoded must refuse, not loop on or crash.
        if isinstance(old, list):
            old.append(old)
        else:
            old[rng.choice(keys) if keys else "k"] = old
        return old
    return old


_PLAIN = (int, float, str, bytes, bool, type(None), list, tuple, dict)


def _small(value: Any, max_size: int) -> bool:
    """Whether ``value`` is made of plain CBOR types and, written out in full, stays near
    ``max_size`` bytes. CBOR's shared
    references (tags 28/29) let a few bytes stand for a tree of exponential size: encoding
    that again would hang the mutator, where libFuzzer's per-input timeout does not reach."""
    budget = max(max_size, 1024)
    stack = [value]
    while stack:
        v = stack.pop()
        budget -= len(v) if isinstance(v, bytes | str) else 1
        if budget < 0:
            return False
        if isinstance(v, list | tuple):
            stack.extend(v)
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, cbor2.CBORTag):
            stack.append(v.value)
        elif not isinstance(v, _PLAIN):
            # A semantic type cbor2 decoded a tag into (a decimal, a MIME message, a regex,
            # a set...): encoding some of those again has taken minutes. Left to libFuzzer.
            return False
    return True


def _mutate_value(rng: random.Random, value: Any, depth: int = 0) -> Any:
    nodes: list[tuple[Any, Any]] = []
    keys: list[Any] = []
    _nodes(value, nodes, keys)
    if not nodes:
        return _replacement(rng, value, keys, depth)
    container, at = rng.choice(nodes)
    action = rng.random()
    if isinstance(container, list) and action < 0.15:
        del container[at]
    elif isinstance(container, list) and action < 0.25:
        container.insert(at, container[at])
    elif isinstance(container, dict) and action < 0.15:
        del container[at]
    elif isinstance(container, dict) and action < 0.25 and keys:
        container[rng.choice(keys)] = container[at]
    else:
        container[at] = _replacement(rng, container[at], keys, depth)
    return value


def mutate(data: bytes, max_size: int, seed: int, *, at: int, fallback: ByteMutator) -> bytes:
    """Mutate ``data`` whose bytes from ``at`` on are one CBOR item (see the module doc)."""
    rng = random.Random(seed)
    if rng.random() < 0.5:
        return fallback(data, max_size)
    try:
        value = cbor2.loads(data[at:])
    except Exception:
        return fallback(data, max_size)
    if not _small(value, max_size):
        return fallback(data, max_size)
    for _ in range(rng.randint(1, 3)):
        value = _mutate_value(rng, value)
    try:
        # Written out in full, a value that repeats a container could be huge: such a value
        # is always written with shared references (a few bytes, whatever it expands to).
        sharing = rng.random() < 0.3 or not _small(value, max_size)
        body = cbor2.dumps(
            value, canonical=not sharing and rng.random() < 0.8, value_sharing=sharing
        )
    except Exception:  # a key that cannot be one (a list as a map key): leave it to libFuzzer
        return fallback(data, max_size)
    out = data[:at] + body
    return out if len(out) <= max_size else fallback(data, max_size)
