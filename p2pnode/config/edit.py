"""Changing one setting in an existing ``config.toml`` (``p2pnode config set KEY VALUE...``).

The file ``p2pnode init`` writes is commented, and people edit it: the change rewrites only the
line of that key (uncommenting the template's ``# name = default`` line, or adding one under its
``[section]``) and keeps every other line. The value is checked by the schema, and the whole file
must still load, or nothing is written.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from p2pnode.config.load import _coerce, load_config
from p2pnode.config.render import _toml_value
from p2pnode.config.schema import _BY_KEY, CONFIG_FILE, ConfigError


def parse_setting(key: str, raw: list[str]) -> Any:
    """``raw`` (command-line words) as ``key``'s typed value; None means "off" (unset)."""
    setting = _BY_KEY.get(key)
    if setting is None:
        near = sorted(k for k in _BY_KEY if key.split(".")[-1] in k)
        hint = f" (did you mean {', '.join(near[:4])}?)" if near else ""
        raise ConfigError(f"config key {key}: unknown setting{hint}; see docs/configuration.md")
    if setting.kind is list:
        words = [p.strip() for w in raw for p in w.split(",") if p.strip()]
        return _coerce(setting, words, "command line")
    if len(raw) != 1:
        raise ConfigError(f"config key {key}: takes one value, got {len(raw)}")
    return _coerce(setting, raw[0], "command line")


def set_config_value(data_dir: Path, key: str, raw: list[str]) -> Any:
    """Write ``key = raw`` into ``data_dir``'s config.toml; returns the typed value written.

    Raises :class:`ConfigError` (nothing written) for an unknown key, a bad value, or a file that
    would not load afterwards.
    """
    value = parse_setting(key, raw)
    path = data_dir / CONFIG_FILE
    try:
        before = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist: run p2pnode init first") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    after = _with_line(before, key, value)
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(after)
    try:
        os.replace(tmp, path)
        load_config(data_dir, env={})
    except ConfigError:
        path.write_text(before)
        raise
    finally:
        tmp.unlink(missing_ok=True)
    return value


def _with_line(text: str, key: str, value: Any) -> str:
    section, _, name = key.rpartition(".")
    line = f"# {name} = <unset>" if value is None else f"{name} = {_toml_value(value)}"
    lines = text.splitlines()
    assign = re.compile(rf"^\s*#?\s*{re.escape(name)}\s*=")
    header = re.compile(r"^\s*\[([^\]]*)\]\s*(#.*)?$")
    current = ""
    start, end = (0, None) if not section else (None, None)  # the section's lines: [start, end)
    for i, text_line in enumerate(lines):
        m = header.match(text_line)
        if m:
            if start is not None and end is None and current == section:
                end = i
            current = m.group(1).strip()
            if current == section and start is None:
                start = i + 1
    if start is None:  # no such section yet
        return "\n".join([*lines, "", f"[{section}]", line]) + "\n"
    end = len(lines) if end is None else end
    found = [i for i in range(start, end) if assign.match(lines[i])]
    # An uncommented line wins over the template's commented default; a second one is dropped.
    live = [i for i in found if not lines[i].lstrip().startswith("#")]
    target = live[0] if live else (found[0] if found else None)
    if target is None:
        insert = end
        while insert > start and not lines[insert - 1].strip():
            insert -= 1
        lines.insert(insert, line)
    else:
        lines[target] = line
        for i in reversed(live[1:]):
            del lines[i]
    return "\n".join(lines) + "\n"
