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


# -- spare files -------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    old=st.binary(max_size=3 * ALIGN + 100),
    new=st.binary(max_size=3 * ALIGN + 100),
    direct=st.booleans(),
)
def test_a_retired_file_is_reused_and_holds_exactly_the_new_bytes(
    tmp_path_factory: pytest.TempPathFactory, old: bytes, new: bytes, direct: bool
) -> None:
    root = tmp_path_factory.mktemp("c")
    files = ChunkFiles(direct=direct, spare_dir=root / "spare")
    files.write(root / "a", old)
    inode = (root / "a").stat().st_ino
    files.retire(root / "a")
    assert not (root / "a").exists() and files.spares == 1
    files.write(root / "b", new)
    assert files.read(root / "b") == new, "longer or shorter than the spare, nothing else left"
    assert files.spares == 0 and not list((root / "spare").iterdir())
    if direct:
        assert (root / "b").stat().st_ino == inode, "the spare's inode was reused"


def test_a_spare_deleted_by_hand_is_skipped(tmp_path: Path) -> None:
    files = ChunkFiles(spare_dir=tmp_path / "spare")
    for name in ("a", "b"):
        files.write(tmp_path / name, name.encode() * 5000)
        files.retire(tmp_path / name)
    for spare in (tmp_path / "spare").iterdir():
        spare.unlink()
    files.write(tmp_path / "c", b"c" * 7000)
    assert files.read(tmp_path / "c") == b"c" * 7000
    assert files.spares == 0


def test_spares_are_bounded_and_adopted_by_the_next_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("p2pnode.blobs.chunkio.MAX_SPARES", 3)
    files = ChunkFiles(spare_dir=tmp_path / "spare")
    for i in range(5):
        files.write(tmp_path / str(i), os.urandom(ALIGN))
    for i in range(5):
        files.retire(tmp_path / str(i))
    assert files.spares == 3, "past the bound, a retired file is deleted"
    assert len(list((tmp_path / "spare").iterdir())) == 3
    files.retire(tmp_path / "never-written")  # gone already: nothing to do
    (tmp_path / "spare" / "stray").write_bytes(b"x")  # one more than the bound, found at start
    again = ChunkFiles(spare_dir=tmp_path / "spare")
    assert again.spares == 3 and len(list((tmp_path / "spare").iterdir())) == 3
    again.write(tmp_path / "reused", b"fresh")
    assert again.read(tmp_path / "reused") == b"fresh" and again.spares == 2
