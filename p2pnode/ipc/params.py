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
