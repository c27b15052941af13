"""One daemon per data dir: an exclusive ``flock`` on ``<data dir>/daemon.lock``.

The daemon holds the lock for its whole life and takes it before it opens the store, the blob
store or the socket, because opening them changes things: the blob store sweeps chunk files
it has no row for, which, next to a running daemon, would delete chunks a transfer has
written but not recorded yet. A second start therefore fails at once, naming the holder's
pid (written into the file), and changes nothing.

The kernel drops the lock when the holding process ends, however it ends (``kill -9``
included), so there is no stale lock to clean up; the pid left in the file by a killed daemon
is never read, since it is only read when taking the lock fails. The file itself is never
deleted: unlinking a lock file lets two processes lock two different files.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_FILE = "daemon.lock"

# The holder writes its pid just after locking; a reader that loses the race retries this long.
PID_WAIT = 0.5


class DataDirError(Exception):
    """The data dir cannot be locked: missing, or in use. One line for people."""


class DataDirInUse(DataDirError):
    """Another process (a running daemon) holds the data dir's lock."""

    def __init__(self, data_dir: Path, pid: int | None) -> None:
        who = f"pid {pid}" if pid is not None else "pid unknown"
        super().__init__(f"data dir {data_dir} is in use by a running daemon ({who})")
        self.data_dir = data_dir
        self.pid = pid


@contextmanager
def lock_data_dir(data_dir: Path) -> Iterator[None]:
    """Hold ``data_dir``'s lock for the duration of the block, or raise :class:`DataDirInUse`.

    The lock file is created if needed and holds this process's pid while locked.
    """
    if not data_dir.is_dir():
        raise DataDirError(f"no data dir at {data_dir}: run 'p2pnode init' first")
    path = data_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DataDirInUse(data_dir, _read_pid(fd)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)  # a clean stop leaves no pid behind for people to misread
    finally:
        os.close(fd)  # closing the last descriptor releases the lock


def check_not_in_use(data_dir: Path) -> None:
    """Raise :class:`DataDirInUse` if a daemon holds ``data_dir``'s lock; change nothing.

    For launchers that prepare a dir before starting a daemon in it. The answer can be stale
    by the time the daemon starts; the daemon's own lock is what keeps two out.
    """
    try:
        fd = os.open(data_dir / LOCK_FILE, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return  # no daemon has ever run here
    try:
        try:
            # Shared: two checks at once must not see each other as a daemon.
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DataDirInUse(data_dir, _read_pid(fd)) from None
    finally:
        os.close(fd)


def _read_pid(fd: int) -> int | None:
    deadline = time.monotonic() + PID_WAIT
    while True:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        if text.isdigit():
            return int(text)
        if time.monotonic() > deadline:
            return None
        time.sleep(0.01)
