"""Reading and writing chunk files, around the page cache where the file system allows it.

A chunk is written once, read back when served, and rarely read again by this node soon after,
so caching it buys little, while filling fresh page-cache pages is the dearest part of storing
it: 1.7-3 ms of CPU per MiB on the 2-core VM we measure on (the hypervisor faults every new
page in), against 0.37 ms with ``O_DIRECT`` and 0.07 ms for a copy into a reused buffer. So
by default chunk files are written and read with ``O_DIRECT`` through one page-aligned buffer
per worker thread. Direct I/O needs an aligned address, length and offset: the aligned head of
a chunk goes direct, a short tail through the page cache on the same descriptor.

File systems that refuse ``O_DIRECT`` (tmpfs, some FUSE mounts) get plain buffered I/O: the first
refusal switches the whole store over, once, with a log line.

A deleted chunk file is kept as a spare (renamed into a directory of its own, up to
``MAX_SPARES``) and the next chunk written overwrites it before taking its name. Creating a file
and deleting one cost the file system an inode and extents to allocate and free (with the
``discard`` mount option, a TRIM too), and on ext4 without a journal each allocation scans past
every inode deleted in the last half minute, which a node that fetches and drops gradients round
after round always has (inode allocation was 15% of a writer thread's CPU in a profile).
Overwriting a spare's blocks needs none of it: a chunk's write fell from 0.6-1.1 to 0.33-0.39 ms
of CPU. Every function here blocks; the store calls them from worker threads
(and ``retire`` from the event loop, as it did ``unlink``).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import mmap
import os
import secrets
import threading
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger(__name__)

ALIGN = 4096  # a multiple of every logical block size Linux reports; also the page size
MAX_SPARES = 256  # deleted chunk files kept for reuse (at most 256 MiB of 1 MiB chunks)
_O_DIRECT = getattr(os, "O_DIRECT", 0)
_local = threading.local()


Buffer = bytes | bytearray | memoryview


def _aligned(size: int) -> int:
    return -(-size // ALIGN) * ALIGN


class StagingBuffer:
    """Page-aligned memory a received chunk is gathered into as its pieces arrive.

    The gathering is the one copy a chunk needs between the network and the disk: the hash
    reads it in place and a direct write goes straight from it. Reused chunk after chunk, so
    its pages are faulted in once. Owned by one task at a time; the owner gathers, a worker
    thread then reads it, and only after that may it be gathered into again.
    """

    __slots__ = ("_mem", "size")

    def __init__(self) -> None:
        self._mem = mmap.mmap(-1, ALIGN)
        self.size = 0

    def gather(self, parts: Sequence[Buffer]) -> None:
        size = sum(len(p) for p in parts)
        if size > len(self._mem):
            self._mem = mmap.mmap(-1, _aligned(size))
        with memoryview(self._mem) as view:
            _copy_into(view, parts)
        self.size = size

    def view(self) -> memoryview:
        """The gathered bytes (valid until the next :meth:`gather`)."""
        return memoryview(self._mem)[: self.size]


def _copy_into(view: memoryview, parts: Sequence[Buffer]) -> int:
    at = 0
    for part in parts:
        view[at : at + len(part)] = part
        at += len(part)
    return at


# A chunk as one buffer, or gathered into a staging buffer.
Data = Buffer | StagingBuffer


def as_buffer(data: Data) -> Buffer:
    return data.view() if isinstance(data, StagingBuffer) else data


def _thread_buffer(size: int) -> mmap.mmap:
    """This thread's page-aligned scratch buffer of at least ``size`` bytes (reused, so its
    pages are faulted in once, not once per chunk)."""
    buf: mmap.mmap | None = getattr(_local, "buf", None)
    if buf is None or len(buf) < size:
        if buf is not None:
            buf.close()
        buf = _local.buf = mmap.mmap(-1, _aligned(max(size, 1)))
    return buf


class ChunkFiles:
    """Whole-file writes (temporary name, then rename), reads and deletions of chunk files.

    With a ``spare_dir`` (on the same file system as the chunks), deleted files are kept there
    for reuse; spares found there at start (a previous run's) are adopted.
    """

    def __init__(self, *, direct: bool = True, spare_dir: Path | None = None) -> None:
        self.direct = bool(direct and _O_DIRECT)
        self._lock = threading.Lock()
        self._spare_dir = spare_dir
        self._spares: list[Path] = []  # list.pop/append are atomic: threads share it unlocked
        if spare_dir is not None:
            spare_dir.mkdir(exist_ok=True)
            for entry in sorted(os.scandir(spare_dir), key=lambda e: e.name):
                if len(self._spares) < MAX_SPARES and entry.is_file(follow_symlinks=False):
                    self._spares.append(Path(entry.path))
                else:
                    Path(entry.path).unlink(missing_ok=True)

    @property
    def spares(self) -> int:
        return len(self._spares)

    def retire(self, path: Path) -> None:
        """Delete the chunk file ``path`` (gone already is fine): keep it as a spare if there
        is room, else unlink it."""
        if self._spare_dir is None or len(self._spares) >= MAX_SPARES:
            path.unlink(missing_ok=True)
            return
        spare = self._spare_dir / secrets.token_hex(8)
        try:
            os.rename(path, spare)
        except FileNotFoundError:
            return
        self._spares.append(spare)

    def drop_spares(self) -> int:
        """Unlink every spare file (their space is wanted back); returns how many."""
        dropped = 0
        while (spare := self._take_spare()) is not None:
            spare.unlink(missing_ok=True)
            dropped += 1
        return dropped

    def _take_spare(self) -> Path | None:
        try:
            return self._spares.pop()
        except IndexError:
            return None

    def _refused(self, exc: OSError, path: Path) -> bool:
        """True (and direct I/O off from now on) if ``exc`` says the file system refuses it."""
        if exc.errno != errno.EINVAL or not self.direct:
            return False
        with self._lock:
            if self.direct:
                self.direct = False
                log.info("direct I/O refused under %s; chunk files use the page cache", path.parent)
        return True

    def write(self, path: Path, data: Data) -> None:
        """Write ``data`` (a buffer, or a staging buffer) as the file ``path``: whole or absent
        after a crash. The bytes go into a spare file when there is one, else a new temporary
        file; either is then renamed to ``path``."""
        tmp = self._take_spare()
        spare = tmp is not None
        if tmp is None:
            tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            if self.direct:
                try:
                    self._write_direct(tmp, data, spare=spare)
                except FileNotFoundError:
                    if not spare:
                        raise
                    self.write(path, data)  # the spare went (deleted by hand): take another
                    return
                except OSError as exc:
                    if not self._refused(exc, path):
                        raise
                    self._write_buffered(tmp, as_buffer(data))
            else:
                self._write_buffered(tmp, as_buffer(data))
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    @staticmethod
    def _write_buffered(tmp: Path, data: Buffer) -> None:
        with open(tmp, "wb") as f:
            f.write(data)

    @staticmethod
    def _write_direct(tmp: Path, data: Data, *, spare: bool = False) -> None:
        # Direct I/O needs aligned memory: a staging buffer is, anything else is gathered into
        # this thread's buffer first.
        if isinstance(data, StagingBuffer):
            view = data.view()
        else:
            view = memoryview(_thread_buffer(len(data)))
            view = view[: _copy_into(view, (data,))]
        size = len(view)
        head = size - size % ALIGN
        # A spare is overwritten in place (its blocks stay allocated) and cut to size after.
        flags = os.O_WRONLY | os.O_CLOEXEC | _O_DIRECT
        fd = os.open(tmp, flags if spare else flags | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            with view:
                done = 0
                while done < head:  # a short direct write ends on a block boundary
                    done += os.pwrite(fd, view[done:head], done)
                if head < size:
                    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
                    fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~_O_DIRECT)
                    while done < size:
                        done += os.pwrite(fd, view[done:size], done)
            if spare:
                os.ftruncate(fd, size)
        finally:
            os.close(fd)

    def read(self, path: Path) -> bytes:
        """The whole file at ``path`` (FileNotFoundError if it is gone)."""
        if self.direct:
            try:
                data = self._read_direct(path)
            except OSError as exc:
                if not self._refused(exc, path):
                    raise
            else:
                if data is not None:
                    return data
        return path.read_bytes()

    @staticmethod
    def _read_direct(path: Path) -> bytes | None:
        """The file's bytes, or None if it changed size under us (then read it buffered)."""
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | _O_DIRECT)
        try:
            size = os.fstat(fd).st_size
            buf = _thread_buffer(size)
            with memoryview(buf) as view:
                # Asking for the aligned length is allowed: the read stops at end of file.
                got = os.preadv(fd, [view[: _aligned(size)]], 0) if size else 0
                return bytes(view[:size]) if got == size else None
        finally:
            os.close(fd)
