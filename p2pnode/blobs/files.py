"""Local files in and out of the blob store: a file stored as a blob, a blob written to a path.

The daemon reads or writes the file itself, so a caller on the same machine (the CLI, a
training job) moves no bytes through the IPC socket. File I/O runs on worker threads (trio's
async files), a piece at a time, so a large file never sits in memory whole.

Errors: a file that cannot be read or written raises :class:`FileAccessError` (the caller's
path is at fault, nothing is stored or left behind); fetching raises what
:meth:`~p2pnode.blobs.service.BlobService.fetch` raises.

Cancellation: an export writes to a temporary file next to the target and renames it into
place at the end, so a cancelled or failed export leaves no partial file under the target's
name.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import trio

from p2pnode.blobs.ingest import Ingest
from p2pnode.blobs.service import BlobService
from p2pnode.blobs.store import BlobStat, BlobStore, BlobStoreError

#: Bytes read from a file per worker-thread hop.
FILE_PIECE = 1 << 20


class FileAccessError(Exception):
    """A local file could not be read or written."""


async def ingest_file(ingest: Ingest, path: Path) -> None:
    """Write the bytes of the file at ``path`` into ``ingest``."""
    try:
        f = await trio.open_file(path, "rb")
    except OSError as exc:
        raise FileAccessError(f"cannot read {path}: {exc.strerror}") from None
    async with f:
        while True:
            try:
                piece = await f.read(FILE_PIECE)
            except OSError as exc:
                raise FileAccessError(f"cannot read {path}: {exc.strerror}") from None
            if not piece:
                return
            await ingest.write(piece)


async def put_file(
    blobs: BlobService,
    store: BlobStore,
    path: Path,
    *,
    media_type: str,
    meta: dict[str, Any],
    pin: bool,
    **labels: Any,
) -> tuple[BlobStat, int]:
    """Store the file at ``path`` as a blob and announce it; return its stat and the number of
    peers that stored the provider record (as :meth:`BlobService.commit`, whose ``kind``,
    ``job`` and ``round`` keywords ``labels`` passes on)."""
    ingest = Ingest(store)
    try:
        await ingest_file(ingest, path)
    except BaseException:
        ingest.abort()  # a failed put leaves no chunks behind
        raise
    return await blobs.commit(ingest, media_type=media_type, meta=meta, pin=pin, **labels)


async def export_blob(store: BlobStore, key: str, path: Path) -> None:
    """Write the complete local blob ``key`` to ``path``, replacing it atomically.

    Raises :class:`FileAccessError` when ``path`` cannot be written and
    :class:`~p2pnode.blobs.store.BlobStoreError` when a chunk went missing meanwhile (garbage
    collection of an unpinned blob).
    """
    manifest = store.manifest(key)
    if manifest is None:
        raise BlobStoreError(f"blob {key} is not held here")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        async with await trio.Path(tmp).open("wb") as f:
            for mh, _ in manifest.chunks:
                await f.write(await store.read_chunk(mh))
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise FileAccessError(f"cannot write {path}: {exc.strerror}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


async def get_file(
    blobs: BlobService, store: BlobStore, key: str, path: Path, *, timeout: float | None = None
) -> BlobStat:
    """Fetch the blob ``key`` (from providers if it is not complete here, within ``timeout``
    if given), then write it to ``path``; return its stat."""
    stat = await blobs.fetch(key, timeout=timeout)
    await export_blob(store, key, path)
    return stat
