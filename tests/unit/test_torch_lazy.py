"""p2pnode.torch imports without torch and says how to install it when used (runs without
torch too: torch is hidden from a child interpreter)."""

from __future__ import annotations

import subprocess
import sys

HIDE_TORCH_AND_USE = """
import sys
sys.modules["torch"] = None  # import torch now raises ImportError, installed or not
import p2pnode.torch as pt
assert pt.DiLoCo.__name__ == "DiLoCo"
try:
    pt.all_reduce_(None, [])
except ImportError as e:
    print(e)
else:
    raise SystemExit("no ImportError")
"""


def test_importing_without_torch_works_and_using_it_says_how_to_install() -> None:
    out = subprocess.run(
        [sys.executable, "-c", HIDE_TORCH_AND_USE], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert "pip install" in out.stdout and "torch" in out.stdout
