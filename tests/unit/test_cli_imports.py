"""The CLI and the public client load without py-libp2p or multiaddr.

They only speak IPC, and importing libp2p costs about a second on every ``p2pnode`` command.
Each check runs in a fresh interpreter, since this test process has libp2p loaded already.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

HEAVY = ("libp2p", "multiaddr")


def _loaded_after(statement: str) -> list[str]:
    code = (
        f"{statement}\n"
        "import sys\n"
        f"print(' '.join(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env=os.environ.copy(),
        check=True,
    )
    return out.stdout.split()


@pytest.mark.parametrize(
    "statement",
    [
        "import p2pnode.cli",
        "from p2pnode import Client, AsyncClient",
        "import p2pnode.config, p2pnode.identity",
    ],
)
def test_no_libp2p_or_multiaddr(statement: str) -> None:
    assert _loaded_after(statement) == []


def test_help_runs_without_libp2p() -> None:
    code = (
        "import sys\n"
        "from p2pnode.cli import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "assert not any(m.startswith(('libp2p', 'multiaddr')) for m in sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60, check=True)
