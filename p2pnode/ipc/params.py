"""Checking IPC request parameters, shared by every method adapter under :mod:`p2pnode.ipc`.

Each helper reads one parameter from a request's ``params`` map and either returns it, typed
and in range, or raises :class:`~p2pnode.ipc.errors.InvalidParams`: a bad request is refused
before any service sees it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from p2pnode.ipc.errors import InvalidParams
from p2pnode.network.dht import KV_PREFIX

MAX_KEY_CHARS = 256
MAX_PLAIN_SIZE = 1 << 24  # bytes of a value written out in full, shared references expanded
MAX_PLAIN_ITEMS = 1 << 18  # keeps the walk of a hostile value to a fraction of a second
MAX_PLAIN_DEPTH = 64

#: Stands for "no default": the parameter is required.
REQUIRED: Any = ...


def param(
    params: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any = REQUIRED
) -> Any:
    """``params[name]`` if it is a ``kind``; ``default`` when absent, unless it is required.

    A bool is refused where an int is asked for (``True`` is an ``int`` to ``isinstance``).
    """
    if name not in params:
        if default is REQUIRED:
            raise InvalidParams(f"missing parameter {name!r}")
        return default
    value = params[name]
    if isinstance(value, bool) and kind is not bool:
        raise InvalidParams(f"parameter {name!r} has the wrong type (bool)")
    if not isinstance(value, kind):
        expected = (
            kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        )
        raise InvalidParams(f"parameter {name!r} must be {expected}, got {type(value).__name__}")
    return value


def kv_key(name: str) -> str:
    """CLI/IPC key names live under /p2pnode/kv/; a full /p2pnode/ key is taken as given."""
    if not name:
        raise InvalidParams("key must not be empty")
    if len(name) > MAX_KEY_CHARS:
        raise InvalidParams(f"key longer than {MAX_KEY_CHARS} characters")
    return name if name.startswith("/p2pnode/") else KV_PREFIX + name


def content_key(params: dict[str, Any]) -> str:
    """The ``key`` of a provider record: any string of 1 to ``MAX_KEY_CHARS`` characters."""
    key = param(params, "key", str)
    if not key or len(key) > MAX_KEY_CHARS:
        raise InvalidParams(f"key must be 1 to {MAX_KEY_CHARS} characters")
    return key


def absolute_path(params: dict[str, Any], name: str = "path") -> Path | None:
    """An optional local path; it must be absolute, as the daemon's working dir is not the
    caller's."""
    raw = param(params, name, str, None)
    if raw is None:
        return None
    path = Path(raw)
    if not path.is_absolute():
        raise InvalidParams(f"{name} must be absolute (the daemon's working dir is not yours)")
    return path


def plain_value(value: Any, name: str) -> Any:
    """``value`` if it can be stored and encoded again as it came: no cycle, no nesting deeper
    than ``MAX_PLAIN_DEPTH``, and no more than ``MAX_PLAIN_SIZE`` bytes (``MAX_PLAIN_ITEMS``
    items) once written out in full. CBOR's shared references (tags 28/29) can build a cycle,
    or a few bytes that expand to terabytes when encoded again; such a value is the caller's
    error, not ours."""
    size = items = 0
    # Iterative walk: (item, depth, ids of the containers above it, to spot a cycle).
    stack: list[tuple[Any, int, frozenset[int]]] = [(value, 0, frozenset())]
    while stack:
        item, depth, above = stack.pop()
        items += 1
        size += len(item) if isinstance(item, (str, bytes)) else 1
        if size > MAX_PLAIN_SIZE or items > MAX_PLAIN_ITEMS:
            raise InvalidParams(
                f"{name} is over {MAX_PLAIN_SIZE} bytes or {MAX_PLAIN_ITEMS} items written out"
                " in full (shared references expanded)"
            )
        if not isinstance(item, (dict, list, tuple)):
            continue
        if id(item) in above:
            raise InvalidParams(f"{name} refers to itself (a CBOR shared reference cycle)")
        if depth >= MAX_PLAIN_DEPTH:
            raise InvalidParams(f"{name} is nested deeper than {MAX_PLAIN_DEPTH} levels")
        inner = above | {id(item)}
        children = [*item.keys(), *item.values()] if isinstance(item, dict) else list(item)
        stack.extend((child, depth + 1, inner) for child in children)
    return value
