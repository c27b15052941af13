"""The provider's side of ``/p2pnode/blob/1.0.0``: answer a fetcher's requests for manifests
and chunks this node holds (``p2pnode.blobs.wire`` describes the exchange).

Resources: a provider holds at most ``READ_AHEAD`` chunks read ahead per stream and ends a
stream idle for ``SERVE_IDLE``; a request frame is bounded (``MAX_BATCH_REQUEST``) before it is
buffered; it serves at most ``blobs.max_upload_rate`` MiB/s over all peers (readers wait,
nothing is refused).

Errors: a malformed request ends the stream (the handler's guard logs it); a chunk that is not
held, or cannot be read, is answered with size 0.
"""

from __future__ import annotations

import logging
from contextlib import suppress
from typing import Any

import trio
from libp2p.abc import IHost, INetStream

from p2pnode.blobs.store import BlobStore
from p2pnode.blobs.wire import (
    MAX_BATCH_REQUEST,
    MiB,
    Reader,
    batch_request,
    manifest_request,
    write,
)
from p2pnode.config import Config
from p2pnode.network.bulkwrite import bulk_writer
from p2pnode.network.host import PieceCutter
from p2pnode.network.ratelimit import Pacer
from p2pnode_protocols.blobs.manifest import decode_manifest
from p2pnode_protocols.framing import encode_frame

log = logging.getLogger(__name__)

READ_AHEAD = 2  # chunks a provider reads from disk while an earlier one is sent
SERVE_IDLE = 60.0  # seconds a provider waits for the next batch on a stream (> KEEP_FOR)
UPLOAD_BURST = 4 * MiB  # slack of the upload limit (blobs.max_upload_rate)


class BlobServer:
    """Serves blob streams from ``store`` (``serve`` is the protocol's stream handler)."""

    def __init__(self, host: IHost, store: BlobStore, cfg: Config) -> None:
        self.host = host
        self.store = store
        self.cfg = cfg
        rate = cfg.blobs.max_upload_rate * MiB
        self._upload = Pacer(rate=rate, burst=UPLOAD_BURST) if rate > 0 else None
        self.served_chunks = 0

    async def serve(self, stream: INetStream) -> None:
        """Answer requests on one stream until the fetcher closes it. Chunks are read from disk
        up to ``READ_AHEAD`` ahead of the one being written, so the disk's latency hides behind
        the network's."""
        peer = stream.muxed_conn.peer_id
        # (header, bytes after it, whether they are a chunk)
        send, recv = trio.open_memory_channel[tuple[dict[str, Any], bytes, bool]](READ_AHEAD)

        async def read_ahead() -> None:
            async with send:
                reader = Reader(
                    stream, self.cfg.blobs.chunk_timeout, MAX_BATCH_REQUEST, idle_timeout=SERVE_IDLE
                )
                while (frame := await reader.frame(idle_ok=True)) is not None:
                    if "key" in frame:
                        key, first = manifest_request(frame)
                        raw = self.store.manifest_bytes(key) or b""
                        await send.send(({"key": key, "size": len(raw)}, raw, False))
                        chunks = decode_manifest(raw).chunks[:first] if raw else []
                        hashes = [mh for mh, _ in chunks]
                    else:
                        hashes = batch_request(frame)
                    for mh in hashes:
                        data = await self._chunk_to_serve(mh)
                        await send.send(({"hash": mh, "size": len(data)}, data, True))

        # Chunks go out as one continuous run of full frames: a chunk's last few hundred bytes
        # wait for the next chunk's header when that chunk is already read, instead of
        # costing a short frame of their own (one Noise message per chunk fewer at both ends).
        cutter = PieceCutter()
        writer = bulk_writer(stream)
        host, cfg = self.host, self.cfg
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_ahead)
                async with recv:
                    async for head, data, is_chunk in recv:
                        if data and self._upload is not None:
                            wait = self._upload.reserve(len(data), trio.current_time())
                            if wait > 0:
                                await trio.sleep(wait)
                        header = encode_frame(head)
                        more = recv.statistics().current_buffer_used > 0
                        await write(
                            host,
                            cfg,
                            stream,
                            peer,
                            header,
                            data,
                            cutter=cutter,
                            flush=not more,
                            writer=writer,
                        )
                        if data and is_chunk:
                            self.served_chunks += 1
        finally:
            with trio.move_on_after(self.cfg.blobs.chunk_timeout, shield=True):
                with suppress(Exception):
                    await stream.close()

    async def _chunk_to_serve(self, mh: object) -> bytes:
        """The chunk's bytes, or b"" when it is not held (or cannot be read)."""
        if not isinstance(mh, bytes) or not self.store.has_chunk(mh):
            return b""
        try:
            return await self.store.read_chunk(mh)
        except Exception as exc:
            log.info("cannot serve chunk %s: %s", mh.hex(), exc)
            return b""
