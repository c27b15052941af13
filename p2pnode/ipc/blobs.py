"""IPC methods of the blob service: blobs and pointers (documented in docs/ipc.md).

Large bytes move in pieces of at most ``MAX_PIECE`` per frame: ``blob.upload.*`` streams a
blob in from a client, ``blob.read`` reads a range back; ``path`` parameters let the daemon
read or write a local file itself (:mod:`p2pnode.blobs.files`), with no copy through the
socket. This module only checks parameters and turns the blob service's errors into IPC ones.
"""

from __future__ import annotations

import itertools
from typing import Any

from libp2p.peer.id import ID

from p2pnode.blobs.files import FileAccessError, get_file, put_file
from p2pnode.blobs.ingest import Ingest
from p2pnode.blobs.policy import KINDS
from p2pnode.blobs.service import BlobError, BlobNotFound, BlobService, NoSpace, check_key
from p2pnode.blobs.store import BlobStat, BlobStore, BlobStoreError
from p2pnode.ipc import errors
from p2pnode.ipc.errors import InvalidParams, NetworkError, NotFound
from p2pnode.ipc.params import absolute_path, param, plain_value
from p2pnode.ipc.server import DataResult, Method, Session
from p2pnode.network.dht import Dht
from p2pnode_protocols.blobs.pointers import pointer_key
from p2pnode_protocols.dht.errors import LocalProtocolError

MAX_PIECE = 8 << 20
MAX_UPLOADS_PER_CLIENT = 16
DEFAULT_MEDIA_TYPE = "application/octet-stream"
MAX_FETCH_TIMEOUT = 86400.0  # the bound of blobs.fetch_timeout


def _key(params: dict[str, Any]) -> str:
    key = param(params, "key", str)
    try:
        check_key(key)
    except BlobError as exc:
        raise InvalidParams(str(exc)) from None
    return key


def _timeout(params: dict[str, Any]) -> float | None:
    """A caller's bound on a fetch, in seconds (absent: the configured timeouts)."""
    timeout = param(params, "timeout", (int, float), None)
    if timeout is not None and not 0 < timeout <= MAX_FETCH_TIMEOUT:
        raise InvalidParams(f"timeout must be in (0, {MAX_FETCH_TIMEOUT:g}] seconds")
    return None if timeout is None else float(timeout)


def _media(params: dict[str, Any]) -> tuple[str, dict[str, Any], bool]:
    media_type = param(params, "media_type", str, DEFAULT_MEDIA_TYPE)
    meta = plain_value(param(params, "meta", dict, {}), "meta")
    pin = param(params, "pin", bool, True)
    return media_type, meta, pin


def _labels(params: dict[str, Any], default_kind: str | None) -> dict[str, Any]:
    """The storage policy's labels (docs/blobs.md): kind, job, round."""
    labels = {
        "kind": param(params, "kind", str, default_kind),
        "job": param(params, "job", str, None),
        "round": param(params, "round", int, None),
    }
    if labels["kind"] is not None and labels["kind"] not in KINDS:
        raise InvalidParams(f"kind must be one of {', '.join(KINDS)}")
    if labels["round"] is not None and labels["round"] < 0:
        raise InvalidParams("round must be >= 0")
    return labels


def _no_space(exc: NoSpace) -> errors.NoSpace:
    return errors.NoSpace(str(exc))


def build_blob_methods(
    *, blobs: BlobService, blob_store: BlobStore, dht: Dht, peer_id: str
) -> dict[str, Method]:
    """``dht`` and ``peer_id`` serve the pointer methods (records this node signs).

    Long as a table of one short closure per method, sharing the open uploads.
    """
    store = blob_store
    ids = itertools.count(1)

    def stat_or_404(key: str) -> dict[str, Any]:
        stat = store.stat(key)
        if stat is None:
            raise NotFound(f"blob {key} is not held here")
        return stat.as_dict()

    async def put(params: dict[str, Any], session: Session, rid: int) -> Any:
        media_type, meta, pin = _media(params)
        labels = _labels(params, "user")
        data = param(params, "data", bytes, None)
        path = absolute_path(params)
        if (data is None) == (path is None):
            raise InvalidParams("give exactly one of 'data' or 'path'")
        try:
            if path is not None:
                stat, announced = await put_file(
                    blobs, store, path, media_type=media_type, meta=meta, pin=pin, **labels
                )
            else:
                stat, announced = await blobs.put(
                    [data], media_type=media_type, meta=meta, pin=pin, **labels
                )
        except FileAccessError as exc:
            raise InvalidParams(str(exc)) from None
        except NoSpace as exc:
            raise _no_space(exc) from None
        except BlobError as exc:
            raise InvalidParams(str(exc)) from None
        return {**stat.as_dict(), "announced": announced}

    Upload = tuple[Ingest, str, dict[str, Any], bool, dict[str, Any]]
    uploads: dict[tuple[int, int], Upload] = {}

    def end_upload(session: Session, upload: int) -> Upload | None:
        """Forget an upload; its chunks go unless a blob (its commit) names them."""
        entry = uploads.pop((id(session), upload), None)
        if entry is not None:
            entry[0].abort()
        return entry

    async def upload_begin(params: dict[str, Any], session: Session, rid: int) -> Any:
        media_type, meta, pin = _media(params)
        labels = _labels(params, "user")
        mine = [k for k in uploads if k[0] == id(session)]
        if len(mine) >= MAX_UPLOADS_PER_CLIENT:
            raise InvalidParams(f"at most {MAX_UPLOADS_PER_CLIENT} open uploads per connection")
        upload = next(ids)
        uploads[(id(session), upload)] = (Ingest(store), media_type, meta, pin, labels)
        session.on_close.append(lambda: end_upload(session, upload))  # a client gone mid-upload
        return {"upload": upload}

    def _upload(params: dict[str, Any], session: Session):  # type: ignore[no-untyped-def]
        upload = param(params, "upload", int)
        entry = uploads.get((id(session), upload))
        if entry is None:
            raise NotFound(f"no upload {upload} on this connection")
        return upload, entry

    async def upload_write(params: dict[str, Any], session: Session, rid: int) -> Any:
        _, (ingest, *_rest) = _upload(params, session)
        data = param(params, "data", bytes)
        if len(data) > MAX_PIECE:
            raise InvalidParams(f"pieces are at most {MAX_PIECE} bytes")
        upload = param(params, "upload", int)
        try:
            await ingest.write(data)
        except NoSpace as exc:  # the upload cannot go on: it ends, its chunks released
            end_upload(session, upload)
            raise _no_space(exc) from None
        return {"received": ingest.size}

    async def upload_commit(params: dict[str, Any], session: Session, rid: int) -> Any:
        upload, (ingest, media_type, meta, pin, labels) = _upload(params, session)
        del uploads[(id(session), upload)]
        try:
            stat, announced = await blobs.commit(
                ingest, media_type=media_type, meta=meta, pin=pin, **labels
            )
        except NoSpace as exc:
            raise _no_space(exc) from None
        return {**stat.as_dict(), "announced": announced}

    async def upload_abort(params: dict[str, Any], session: Session, rid: int) -> Any:
        upload, _ = _upload(params, session)
        end_upload(session, upload)
        return {"upload": upload}

    async def fetch(key: str, timeout: float | None, labels: dict[str, Any]) -> BlobStat:
        try:
            return await blobs.fetch(key, timeout=timeout, **labels)
        except BlobNotFound as exc:
            raise NotFound(str(exc)) from None
        except NoSpace as exc:
            raise _no_space(exc) from None
        except BlobError as exc:
            raise NetworkError(str(exc)) from None

    async def blob_fetch(params: dict[str, Any], session: Session, rid: int) -> Any:
        key, timeout = _key(params), _timeout(params)
        return (await fetch(key, timeout, _labels(params, None))).as_dict()

    async def blob_get(params: dict[str, Any], session: Session, rid: int) -> Any:
        key = _key(params)
        path = absolute_path(params)
        timeout = _timeout(params)
        if path is None:
            stat = (await fetch(key, timeout, {})).as_dict()
            if stat["size"] > MAX_PIECE:
                raise InvalidParams(
                    f"blob is {stat['size']} bytes: give 'path', or read it with blob.read"
                )
            return {**stat, "data": await store.read_range(key, 0, stat["size"])}
        try:
            got = await get_file(blobs, store, key, path, timeout=timeout)
        except BlobNotFound as exc:
            raise NotFound(str(exc)) from None
        except NoSpace as exc:
            raise _no_space(exc) from None
        except BlobError as exc:
            raise NetworkError(str(exc)) from None
        except FileAccessError as exc:
            raise InvalidParams(str(exc)) from None
        except BlobStoreError as exc:
            raise NotFound(str(exc)) from None
        return {**got.as_dict(), "path": str(path)}

    async def blob_read(params: dict[str, Any], session: Session, rid: int) -> Any:
        key = _key(params)
        offset = param(params, "offset", int, 0)
        length = param(params, "length", int, MAX_PIECE)
        if offset < 0 or not 0 < length <= MAX_PIECE:
            raise InvalidParams(f"offset >= 0 and 0 < length <= {MAX_PIECE}")
        if not store.is_complete(key):
            raise NotFound(f"blob {key} is not complete here: fetch it first")
        try:
            return DataResult(await store.read_range_parts(key, offset, length))
        except BlobStoreError as exc:
            raise NotFound(str(exc)) from None

    async def blob_stat(params: dict[str, Any], session: Session, rid: int) -> Any:
        return stat_or_404(_key(params))

    async def blob_pin(params: dict[str, Any], session: Session, rid: int) -> Any:
        key = _key(params)
        if not store.set_pinned(key, True):
            raise NotFound(f"blob {key} is not held here")
        return stat_or_404(key)

    async def blob_unpin(params: dict[str, Any], session: Session, rid: int) -> Any:
        key = _key(params)
        if not store.set_pinned(key, False):
            raise NotFound(f"blob {key} is not held here")
        return stat_or_404(key)

    async def blob_remove(params: dict[str, Any], session: Session, rid: int) -> Any:
        key = _key(params)
        if store.stat(key) is None:
            raise NotFound(f"blob {key} is not held here")
        try:
            freed = store.remove(key)
        except NoSpace as exc:
            raise _no_space(exc) from None
        return {"key": key, "freed": freed}

    async def blob_stats(params: dict[str, Any], session: Session, rid: int) -> Any:
        return blobs.stats()

    async def blob_transfers(params: dict[str, Any], session: Session, rid: int) -> Any:
        return {"transfers": blobs.transfers()}

    async def blob_gc(params: dict[str, Any], session: Session, rid: int) -> Any:
        try:
            freed = blobs.collect()
        except NoSpace as exc:
            raise _no_space(exc) from None
        return {"freed": freed, **blobs.stats()}

    async def ptr_set(params: dict[str, Any], session: Session, rid: int) -> Any:
        name = param(params, "name", str)
        key = _key(params)
        seq = param(params, "seq", int, None)
        try:
            dht_key = pointer_key(peer_id, name)
            result = await dht.put(dht_key, key.encode(), seq=seq)
        except LocalProtocolError as exc:
            raise InvalidParams(str(exc)) from None
        return {
            "pointer": dht_key,
            "key": key,
            "seq": result.seq,
            "replicas": result.replicas,
        }

    async def ptr_get(params: dict[str, Any], session: Session, rid: int) -> Any:
        name = param(params, "name", str)
        owner = param(params, "owner", str, peer_id)
        try:
            ID.from_base58(owner)
        except Exception:
            raise InvalidParams(
                f"owner {owner!r} is not a peer id: give the peer id of the node that set the "
                "pointer (the CLI also takes a node's name in a swarm dir)"
            ) from None
        try:
            dht_key = pointer_key(owner, name)
            record = await dht.get(dht_key)
        except LocalProtocolError as exc:
            raise InvalidParams(str(exc)) from None
        if record is None:
            if owner == peer_id:
                # The usual slip: reading on node B a pointer that node A set.
                raise NotFound(
                    f"no pointer {name!r} set by this node ({dht_key}): a pointer is found under "
                    "its owner's peer id; add owner=<peer id of the node that set it> "
                    "(CLI: --owner PEER_ID or --owner node-N)"
                )
            raise NotFound(f"no pointer {dht_key}: has {owner} set {name!r}?")
        return {
            "pointer": dht_key,
            "key": record.value.decode(),
            "seq": record.seq,
            "owner": record.publisher,
        }

    return {
        "blob.put": put,
        "blob.upload.begin": upload_begin,
        "blob.upload.write": upload_write,
        "blob.upload.commit": upload_commit,
        "blob.upload.abort": upload_abort,
        "blob.fetch": blob_fetch,
        "blob.get": blob_get,
        "blob.read": blob_read,
        "blob.stat": blob_stat,
        "blob.pin": blob_pin,
        "blob.unpin": blob_unpin,
        "blob.remove": blob_remove,
        "blob.stats": blob_stats,
        "blob.transfers": blob_transfers,
        "blob.gc": blob_gc,
        "ptr.set": ptr_set,
        "ptr.get": ptr_get,
    }
