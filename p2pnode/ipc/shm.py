"""Arrays between a client and its daemon through a shared-memory file, not the socket.

A collective operation on a 64 MiB array would cost four copies through the Unix socket
(encode, send, receive, decode) each way. Instead the client writes the array into a file under
``/dev/shm`` (tmpfs: memory, never disk) that only its user may open, passes its path, and the
daemon reads the array from it in place and writes the result back into it. The client keeps one
buffer per group and reuses it, so the pages are faulted in once.

Paths are checked on the daemon's side (:func:`open_shared`): ``/dev/shm/p2pnode-`` and 32 hex
digits, a regular file of this user, at least the size announced. Where ``/dev/shm`` does not
exist the clients send the bytes in the request instead.
"""

from __future__ import annotations

import mmap
import os
import re
import secrets
import stat
from contextlib import suppress
from pathlib import Path

SHM_DIR = Path("/dev/shm")
#: arrays at least this large go through shared memory when it is there
SHM_ABOVE = 256 * 1024
_NAME = re.compile(r"/dev/shm/p2pnode-[0-9a-f]{32}")


class SharedMemoryError(ValueError):
    """A shared-memory path that is not one of ours, or too small."""


def available() -> bool:
    return SHM_DIR.is_dir() and os.access(SHM_DIR, os.W_OK)


class SharedBuffer:
    """A client's reusable shared-memory file (grown as needed; removed by :meth:`close`)."""

    def __init__(self) -> None:
        self.path: str | None = None
        self.map: mmap.mmap | None = None
        self.size = 0

    def ensure(self, nbytes: int) -> mmap.mmap:
        if self.map is not None and self.size >= nbytes:
            return self.map
        self.close()
        path = str(SHM_DIR / f"p2pnode-{secrets.token_hex(16)}")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            size = max(nbytes, 1)
            os.ftruncate(fd, size)
            self.map = mmap.mmap(fd, size)
        except BaseException:
            os.unlink(path)
            raise
        finally:
            os.close(fd)
        self.path, self.size = path, size
        return self.map

    def close(self) -> None:
        if self.map is not None:
            with suppress(BufferError):  # an array still views it: the mapping goes with it
                self.map.close()
            self.map = None
        if self.path is not None:
            with suppress(FileNotFoundError):
                os.unlink(self.path)
            self.path = None
        self.size = 0

    def __del__(self) -> None:
        self.close()


def open_shared(path: str, nbytes: int) -> mmap.mmap:
    """The daemon's side: map a client's buffer, after checking it is one."""
    if not isinstance(path, str) or not _NAME.fullmatch(path):
        raise SharedMemoryError("shm must be a /dev/shm/p2pnode-<32 hex> path a client made")
    fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid():
            raise SharedMemoryError(f"{path} is not a regular file of this user")
        if st.st_size < nbytes:
            raise SharedMemoryError(f"{path} holds {st.st_size} bytes, not {nbytes}")
        return mmap.mmap(fd, max(nbytes, 1))
    finally:
        os.close(fd)
