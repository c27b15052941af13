"""Data dirs are private whatever the umask, and daemons start whatever the working dir holds
(issue 21, item 6): under umask 000, every file ``init``, the swarm launcher and a daemon
create is 0600 and every directory 0700; a swarm started from a directory holding a
``p2pnode/`` that is not our package still starts."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from p2pnode.swarm import prepare, start, stop, wait_ready
from tests.integration.harness import LocalSwarm

pytestmark = pytest.mark.timeout(120)


@contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def loose_modes(root: Path) -> list[str]:
    """Paths under ``root`` (and root) open to group or others: dirs not 0700, files not 0600."""
    bad = []
    for path in [root, *root.rglob("*")]:
        st = path.lstat()
        if stat.S_ISDIR(st.st_mode):
            want = 0o700
        elif stat.S_ISREG(st.st_mode) or stat.S_ISSOCK(st.st_mode):
            want = 0o600
        else:
            continue
        if stat.S_IMODE(st.st_mode) != want:
            bad.append(f"{path.relative_to(root)} {oct(stat.S_IMODE(st.st_mode))}")
    return bad


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("P2PNODE_")}


def test_init_under_umask_000_writes_a_private_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "node"
    with umask(0):
        r = subprocess.run(
            [sys.executable, "-m", "p2pnode", "--data-dir", str(data_dir), "init"],
            capture_output=True,
            text=True,
            timeout=60,
            env=_env(),
        )
    assert r.returncode == 0, r.stderr
    assert loose_modes(data_dir) == []


def test_a_daemon_under_umask_000_keeps_every_file_private(tmp_path: Path) -> None:
    with umask(0):
        swarm = LocalSwarm(tmp_path, 1)
        try:
            swarm.start()
            with swarm.client(1) as c:
                key = c.blob_put(os.urandom(3 << 20))["key"]
                c.dht_put("k", b"v")
                assert c.blob_stat(key)["complete"]
        finally:
            swarm.stop()
    data_dir = swarm.node(1).data_dir
    assert (data_dir / "node.db").exists() and (data_dir / "daemon.log").exists()
    assert loose_modes(data_dir) == []


def test_a_daemon_tightens_modes_left_loose_by_an_older_version(tmp_path: Path) -> None:
    swarm = LocalSwarm(tmp_path, 1)
    data_dir = swarm.node(1).data_dir
    (data_dir / "config.toml").chmod(0o644)
    (data_dir / "leftover").mkdir(mode=0o755)
    (data_dir / "leftover" / "chunk").write_bytes(b"x")
    (data_dir / "leftover" / "chunk").chmod(0o644)
    try:
        swarm.start()
    finally:
        swarm.stop()
    assert loose_modes(data_dir) == []


def test_a_swarm_starts_from_a_directory_holding_another_p2pnode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shadow = tmp_path / "checkout"
    (shadow / "p2pnode").mkdir(parents=True)
    (shadow / "p2pnode" / "__init__.py").write_text("raise ImportError('not the package')\n")
    monkeypatch.chdir(shadow)
    nodes = prepare(tmp_path / "swarm", 1)
    try:
        start(nodes)
        wait_ready(nodes, timeout=60)
    finally:
        stop(nodes)
