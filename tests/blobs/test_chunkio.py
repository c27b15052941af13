"""Chunk files: direct and buffered I/O give back exactly what was written, at every size
around the alignment boundary, and a file system that refuses O_DIRECT falls back once."""

import errno
import hashlib
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pnode.blobs.chunkio import ALIGN, ChunkFiles, StagingBuffer
from p2pnode.blobs.store import chunk_hash

EDGES = [0, 1, ALIGN - 1, ALIGN, ALIGN + 1, 3 * ALIGN + 17, 1 << 20, (1 << 20) + 5]


@pytest.mark.parametrize("direct", [True, False])
@pytest.mark.parametrize("size", EDGES)
def test_round_trip_at_alignment_edges(tmp_path: Path, direct: bool, size: int) -> None:
    files = ChunkFiles(direct=direct)
    data = os.urandom(size)
    path = tmp_path / "chunk"
    files.write(path, data)
    assert path.stat().st_size == size
    assert files.read(path) == data
    assert path.read_bytes() == data, "a plain reader sees the same bytes"
    assert [p.name for p in tmp_path.iterdir()] == ["chunk"], "no temporary file is left"


@settings(max_examples=40, deadline=None)
@given(data=st.binary(max_size=3 * ALIGN + 100), direct=st.booleans())
def test_rewrite_replaces_whole_file(
    tmp_path_factory: pytest.TempPathFactory, data: bytes, direct: bool
) -> None:
    path = tmp_path_factory.mktemp("c") / "chunk"
    files = ChunkFiles(direct=direct)
    files.write(path, b"\xff" * (4 * ALIGN))  # longer than anything written next
    files.write(path, data)
    assert files.read(path) == data


def test_memoryview_input(tmp_path: Path) -> None:
    data = os.urandom(2 * ALIGN + 9)
    ChunkFiles().write(tmp_path / "c", memoryview(data))
    assert (tmp_path / "c").read_bytes() == data


@settings(max_examples=30, deadline=None)
@given(
    pieces=st.lists(st.binary(max_size=2 * ALIGN), max_size=6),
    direct=st.booleans(),
    staged=st.booleans(),
)
def test_staged_chunks_write_and_hash_as_their_joined_bytes(
    tmp_path_factory: pytest.TempPathFactory, pieces: list[bytes], direct: bool, staged: bool
) -> None:
    joined = b"".join(pieces)
    path = tmp_path_factory.mktemp("c") / "chunk"
    data: object = joined
    if staged:
        buf = StagingBuffer()
        buf.gather([b"\xee" * (3 * ALIGN)])  # a bigger earlier chunk must not leak through
        buf.gather(pieces)
        data = buf
    assert chunk_hash(data)[2:] == hashlib.sha256(joined).digest()  # type: ignore[arg-type]
    ChunkFiles(direct=direct).write(path, data)  # type: ignore[arg-type]
    assert path.read_bytes() == joined


def test_staging_buffer_grows_and_stays_aligned() -> None:
    import ctypes

    buf = StagingBuffer()
    for size in (10, ALIGN + 1, 1 << 20, 5):
        chunk = os.urandom(size)
        buf.gather([chunk[:3], chunk[3:]])
        view = buf.view()
        assert bytes(view) == chunk
        address = ctypes.addressof(ctypes.c_char.from_buffer(view))
        assert address % ALIGN == 0, "direct I/O reads straight from it"
        view.release()


def test_read_of_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        ChunkFiles().read(tmp_path / "absent")


@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="needs a tmpfs at /dev/shm")
def test_tmpfs_round_trip() -> None:
    # Older kernels refuse O_DIRECT on tmpfs (EINVAL at open), newer ones accept it: either way
    # the bytes come back.
    with tempfile.TemporaryDirectory(dir="/dev/shm") as shm:
        files = ChunkFiles(direct=True)
        data = os.urandom(ALIGN + 3)
        files.write(Path(shm) / "c", data)
        assert files.read(Path(shm) / "c") == data


def test_a_refusal_switches_to_buffered_io_once(tmp_path: Path) -> None:
    files = ChunkFiles(direct=True)
    refusal = OSError(errno.EINVAL, "Invalid argument")
    was_direct = files.direct
    assert files._refused(refusal, tmp_path / "c") is was_direct
    assert not files.direct
    assert not files._refused(refusal, tmp_path / "c"), "already buffered: the error is real"
    assert not ChunkFiles(direct=True)._refused(OSError(errno.ENOSPC, "full"), tmp_path / "c")
    data = os.urandom(ALIGN + 3)
    files.write(tmp_path / "c", data)
    assert files.read(tmp_path / "c") == data
