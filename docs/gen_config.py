"""Write docs/configuration.md from the config schema (p2pnode/config/schema.py, ``SCHEMA``).

Run after changing a setting: ``python docs/gen_config.py``. tests/unit/test_config_reference.py
fails while the committed file differs from this output.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "docs" / "configuration.md"


def main() -> None:
    # This checkout's schema, not that of whatever p2pnode happens to be installed.
    sys.path.insert(0, str(ROOT))
    from p2pnode.config import config_reference_markdown

    TARGET.write_text(config_reference_markdown())
    print(f"wrote {TARGET}")


if __name__ == "__main__":
    main()
