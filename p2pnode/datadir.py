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

Privacy: everything in a data dir is for its owner only (files 0600, directories 0700),
whatever the umask. The daemon and the CLI run under :data:`PRIVATE_UMASK`, so what they
create is born private; :func:`secure_data_dir` tightens what an older version (or a file
written under another umask) left looser, at daemon start-up.
"""

from __future__ import annotations

import fcntl
import os
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_FILE = "daemon.lock"
PRIVATE_UMASK = 0o077

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


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only, whatever the umask."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(fd, 0o600)  # the file may have existed with looser bits
        f.write(text)


def open_private_log(path: Path) -> int:
    """An append descriptor on ``path``, created or tightened to 0600 (a daemon's log)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    os.fchmod(fd, 0o600)
    return fd


def secure_data_dir(data_dir: Path) -> int:
    """Make every directory under ``data_dir`` (itself included) 0700 and every regular file
    0600; returns how many were changed. Symbolic links are left alone, neither followed nor
    changed. One ``lstat`` per entry: a blob store of a million chunks costs about a second
    at start-up, paid so that no file of an older version stays readable to others."""
    changed = 0
    for root, dirs, files in os.walk(data_dir):
        for name, want in [(root, 0o700)] + [(os.path.join(root, f), 0o600) for f in files]:
            try:
                st = os.lstat(name)
            except FileNotFoundError:
                continue  # removed meanwhile (a socket of a daemon that just left)
            is_dir = stat.S_ISDIR(st.st_mode)
            if not (is_dir or stat.S_ISREG(st.st_mode) or stat.S_ISSOCK(st.st_mode)):
                continue
            if stat.S_IMODE(st.st_mode) != want:
                os.chmod(name, want)
                changed += 1
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(root, d))]
    return changed
