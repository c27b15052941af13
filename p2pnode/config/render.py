"""The configuration written out for people: ``p2pnode init``'s commented ``config.toml`` and
the reference ``docs/configuration.md`` (checked against the code by a unit test), both from
:data:`~p2pnode.config.schema.SCHEMA`, so neither can disagree with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from p2pnode.config.load import _env_name
from p2pnode.config.schema import SCHEMA
from p2pnode.config.setting import Setting, _Range


def _toml_value(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(f'"{v}"' for v in value) + "]"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def render_config_template(values: Mapping[str, Any] | None = None) -> str:
    """A commented config.toml listing every setting; ``values`` are written uncommented."""
    values = dict(values or {})
    lines = [
        "# p2pnode configuration.",
        "# Precedence: command-line flags > P2PNODE_<KEY> environment variables > this file >",
        "# defaults. Commented lines show the defaults; remove the '#' to change one.",
        "",
    ]
    section = ""
    for s in SCHEMA:
        sec, _, name = s.key.rpartition(".")
        if sec != section:
            lines += ["", f"[{sec}]"]
            section = sec
        lines.append(f"# {s.doc}  (env: {_env_name(s.key)})")
        if s.key in values:
            lines.append(f"{name} = {_toml_value(values[s.key])}")
        elif s.default is None:
            lines.append(f"# {name} = <unset>")
        else:
            lines.append(f"# {name} = {_toml_value(s.default)}")
    return "\n".join(lines) + "\n"


# -- the configuration reference (docs/configuration.md) ---------------------------------------

REFERENCE_COMMAND = "python docs/gen_config.py"

_SECTION_TITLES = {
    "": "Top level",
    "dht": "`[dht]`: records and Kademlia",
    "network": "`[network]`: connections and requests",
    "blobs": "`[blobs]`: the blob store and exchange (docs/blobs.md)",
    "ipc": "`[ipc]`: the local socket (docs/ipc.md)",
    "membership": "`[membership]`: SWIM + Lifeguard heartbeats (docs/membership.md)",
    "consensus": '`[consensus]`: the PBFT commit log (docs/pbft.md, "In the daemon")',
}


def _number_text(n: float) -> str:
    return str(int(n)) if n == int(n) else f"{n:g}"


def _size_text(n: float) -> str:
    for unit, shift in (("PiB", 50), ("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{_number_text(n / (1 << shift))} {unit}"
    return f"{_number_text(n)} B"


def _reference_default(s: Setting) -> str:
    if s.default is None:
        return "unset"
    text = f"`{_toml_value(s.default)}`"
    return f"{text} ({_size_text(s.default)})" if s.size else text


def _reference_range(s: Setting) -> str:
    if not isinstance(s.check, _Range):
        return ""
    lo, hi = s.check.lo, s.check.hi
    if s.size:
        return f"{_size_text(lo)} to {_size_text(hi)}"
    return f"{_number_text(lo)} to {_number_text(hi)}"


def config_reference_markdown() -> str:
    """docs/configuration.md: every setting of :data:`SCHEMA`, its default, bounds and meaning.

    The committed file is checked against this by tests/unit/test_config_reference.py, so the
    reference cannot drift from the code; regenerate it with :data:`REFERENCE_COMMAND`.
    """
    import textwrap  # here, not at the top: only this generator needs it

    intro = (
        "Every setting of the daemon, with its default, its bounds and what it does. Values come"
        " from, highest first: flags of `p2pnode daemon` (`--listen`, `--bootstrap`,"
        " `--psk-file`, `--metrics-port`, `--log-level`), `P2PNODE_<KEY>` environment variables"
        " (dots become underscores, upper case: `dht.replication` is"
        " `P2PNODE_DHT_REPLICATION`; a list is comma-separated), `config.toml` in the data dir"
        " (`dht.replication` is `replication` under `[dht]`), then the defaults. The data dir"
        " itself comes from `--data-dir`, then `P2PNODE_DATA_DIR`, then `~/.p2pnode`."
        " `p2pnode init` writes a `config.toml` listing every setting below, commented out at"
        " its default (but for the `--listen` and `--bootstrap` given to it).",
        "An *unset* setting is off; in `config.toml` or the environment an empty string (or"
        " `off`, where the value is a number) unsets it. Besides each key's bounds, start-up"
        " checks that `listen` is not empty, that `dht.republish_interval` is shorter than"
        " `dht.record_ttl`, that `membership.probe_timeout` is shorter than"
        " `membership.probe_interval` and that `consensus.window` is a multiple of"
        " `consensus.checkpoint_interval`. A bad value stops start-up with one line naming the"
        " key, its source and the reason, for example `config key dht.replication (from"
        " /n/config.toml): must be between 1 and 20, got 99`.",
    )
    lines = [
        "# Configuration reference",
        "",
        f"<!-- Generated from p2pnode/config/schema.py (SCHEMA) by `{REFERENCE_COMMAND}`;",
        "     do not edit by hand. -->",
    ]
    for paragraph in intro:
        lines += ["", *textwrap.wrap(paragraph, 100, break_on_hyphens=False)]
    section = None
    for s in SCHEMA:
        sec = s.key.rpartition(".")[0]
        if sec != section:
            section = sec
            lines += [
                "",
                f"## {_SECTION_TITLES.get(sec, f'`[{sec}]`')}",
                "",
                "| key | default | bounds | meaning |",
                "|---|---|---|---|",
            ]
        # Escaped, or markdown would take "|" for a cell border and "<port>" for an HTML tag.
        doc = s.doc.replace("|", "\\|").replace("<", "\\<")
        lines.append(f"| `{s.key}` | {_reference_default(s)} | {_reference_range(s)} | {doc} |")
    return "\n".join(lines) + "\n"
