"""Write docs/configuration.md from the config schema (p2pnode/config.py, ``SCHEMA``).

Run from the repository root after changing a setting: ``python docs/gen_config.py``.
tests/unit/test_config_reference.py fails while the committed file differs from this output.
"""

from __future__ import annotations

from pathlib import Path

from p2pnode.config import config_reference_markdown

TARGET = Path(__file__).resolve().parent / "configuration.md"

if __name__ == "__main__":
    TARGET.write_text(config_reference_markdown())
    print(f"wrote {TARGET}")
