"""docs/configuration.md is generated from the config schema and must match it exactly."""

from __future__ import annotations

import tomllib
from pathlib import Path

from p2pnode.config import (
    REFERENCE_COMMAND,
    SCHEMA,
    config_reference_markdown,
    render_config_template,
)

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_committed_reference_matches_the_schema() -> None:
    expected = config_reference_markdown()
    committed = REFERENCE.read_text() if REFERENCE.exists() else ""
    assert committed == expected, (
        f"{REFERENCE} differs from the config schema (p2pnode/config/schema.py): "
        f"run `{REFERENCE_COMMAND}` and commit the result"
    )


def test_reference_lists_every_setting_with_its_default() -> None:
    text = config_reference_markdown()
    rows = {line.split("|")[1].strip(" `"): line for line in text.splitlines() if "| `" in line}
    assert set(rows) == {s.key for s in SCHEMA}
    assert "| `membership.ring_probe_every` | `1` | 0 to 64 |" in text
    assert "| `ipc.max_frame` | `16777216` (16 MiB) | 1 KiB to 1 GiB |" in text
    assert "| `metrics_port` | unset | 1 to 65535 |" in text


def test_init_template_carries_the_same_descriptions() -> None:
    template = render_config_template()
    tomllib.loads(template)
    for s in SCHEMA:
        assert f"# {s.doc}  (env: " in template, s.key
