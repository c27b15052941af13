"""The data-dir lock (p2pnode.datadir): exclusive, names its holder, gone with the process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from p2pnode.datadir import (
    LOCK_FILE,
    DataDirError,
    DataDirInUse,
    check_not_in_use,
    lock_data_dir,
)

HOLD = """
import sys, time
from pathlib import Path
from p2pnode.datadir import lock_data_dir
with lock_data_dir(Path(sys.argv[1])):
    print("locked", flush=True)
    time.sleep(120)
"""


def test_lock_is_exclusive_and_names_the_holder(tmp_path: Path) -> None:
    with lock_data_dir(tmp_path):
        assert (tmp_path / LOCK_FILE).read_text() == f"{os.getpid()}\n"
        with pytest.raises(DataDirInUse) as info, lock_data_dir(tmp_path):
            pass
        assert info.value.pid == os.getpid()
        assert str(info.value) == (
            f"data dir {tmp_path} is in use by a running daemon (pid {os.getpid()})"
        )
        with pytest.raises(DataDirInUse):
            check_not_in_use(tmp_path)
        assert (tmp_path / LOCK_FILE).read_text() == f"{os.getpid()}\n"  # the loser wrote nothing
    assert (tmp_path / LOCK_FILE).read_text() == ""
    check_not_in_use(tmp_path)
    with lock_data_dir(tmp_path):  # free again
        pass


def test_check_changes_nothing(tmp_path: Path) -> None:
    check_not_in_use(tmp_path)
    check_not_in_use(tmp_path / "missing")
    assert list(tmp_path.iterdir()) == []


def test_missing_dir_says_what_to_do(tmp_path: Path) -> None:
    with (
        pytest.raises(DataDirError, match="run 'p2pnode init' first"),
        lock_data_dir(tmp_path / "missing"),
    ):
        pass


def test_kill_9_releases_the_lock(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(DataDirInUse) as info:
            check_not_in_use(tmp_path)
        assert info.value.pid == holder.pid
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=10)
    assert (tmp_path / LOCK_FILE).read_text() == f"{holder.pid}\n"  # stale pid, free lock
    check_not_in_use(tmp_path)
    with lock_data_dir(tmp_path):
        assert (tmp_path / LOCK_FILE).read_text() == f"{os.getpid()}\n"


def test_second_daemon_on_a_locked_dir_changes_nothing(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("P2PNODE_")}
    p2pnode = [sys.executable, "-m", "p2pnode", "--data-dir", str(tmp_path)]
    subprocess.run([*p2pnode, "init"], check=True, capture_output=True, env=env, timeout=60)
    with lock_data_dir(tmp_path):
        before = sorted(p.name for p in tmp_path.iterdir())
        r = subprocess.run(
            [*p2pnode, "daemon"], capture_output=True, text=True, env=env, timeout=60
        )
        assert r.returncode == 1
        assert r.stderr == (
            f"p2pnode: daemon failed to start: data dir {tmp_path} is in use by a running "
            f"daemon (pid {os.getpid()})\n"
        )
        assert sorted(p.name for p in tmp_path.iterdir()) == before  # no node.db, no blobs/
