"""The blob service's errors, the check of a blob key's syntax that raises one, and the
recognition of a full disk (an OSError or an SQLite error) as :class:`NoSpace`."""

from __future__ import annotations

import errno
import shutil
import sqlite3
from pathlib import Path

from p2pnode_protocols.blobs.cid import CidError, parse_cid

_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_SQLITE_FULL = 13


class BlobError(Exception):
    """A blob could not be stored or fetched; the message says why."""


class BlobNotFound(BlobError):
    """No provider answered for the blob within the fetch timeout."""


class NoSpace(BlobError):
    """The file system of the data dir is full (or the user's quota on it is spent)."""


def check_key(key: str) -> None:
    try:
        parse_cid(key)
    except CidError as exc:
        raise BlobError(str(exc)) from None


def is_no_space(exc: BaseException) -> bool:
    """Whether ``exc`` says the disk is full: ENOSPC/EDQUOT, or SQLite's SQLITE_FULL."""
    if isinstance(exc, OSError):
        return exc.errno in _FULL_ERRNOS
    if isinstance(exc, sqlite3.OperationalError):
        code = getattr(exc, "sqlite_errorcode", None)
        return code == _SQLITE_FULL or "disk is full" in str(exc)
    return False


def free_bytes(path: Path) -> int:
    """Bytes free for this user on the file system of ``path`` (-1 if it cannot be told)."""
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return -1


def no_space(data_dir: Path, what: str) -> NoSpace:
    """The error for a full disk met while doing ``what``, naming the data dir and its free
    space, so an operator knows which file system to clear."""
    free = free_bytes(data_dir)
    told = "unknown" if free < 0 else f"{free} bytes ({free / (1 << 20):.1f} MiB)"
    return NoSpace(
        f"no space left on device: cannot {what}; data dir {data_dir} has {told} free "
        "(remove or unpin blobs, lower blobs.max_store_bytes, or free the disk)"
    )
