"""The IPC methods: parameter checking and the mapping onto the node's services.

Each method takes ``(params, session, request_id)`` and returns a CBOR-encodable result or
raises an :class:`~p2pnode.ipc.errors.IpcError`. docs/ipc.md documents every one.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

import trio
from libp2p.peer.id import ID

from p2pnode import __version__
from p2pnode.events import TOPICS
from p2pnode.ipc.errors import InvalidParams, NetworkError, NotFound
from p2pnode.ipc.server import Method, Session
from p2pnode.network.dht import KV_PREFIX, DhtError
from p2pnode.network.host import full_addrs
from protocols.dht.errors import LocalProtocolError

if TYPE_CHECKING:
    from p2pnode.node import Node

MAX_KEY_CHARS = 256


def _param(
    params: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any = ...
) -> Any:
    if name not in params:
        if default is ...:
            raise InvalidParams(f"missing parameter {name!r}")
        return default
    value = params[name]
    if isinstance(value, bool) and kind is not bool:
        raise InvalidParams(f"parameter {name!r} has the wrong type (bool)")
    if not isinstance(value, kind):
        expected = (
            kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        )
        raise InvalidParams(f"parameter {name!r} must be {expected}, got {type(value).__name__}")
    return value


def kv_key(name: str) -> str:
    """CLI/IPC key names live under /p2pnode/kv/; a full /p2pnode/ key is taken as given."""
    if not name:
        raise InvalidParams("key must not be empty")
    if len(name) > MAX_KEY_CHARS:
        raise InvalidParams(f"key longer than {MAX_KEY_CHARS} characters")
    return name if name.startswith("/p2pnode/") else KV_PREFIX + name


def build_methods(node: Node) -> dict[str, Method]:
    dht = node.dht
    host = node.host

    async def status(params: dict[str, Any], session: Session, rid: int) -> Any:
        return {
            "peer_id": node.peer_id,
            "addrs": full_addrs(host),
            "version": __version__,
            "uptime": round(time.monotonic() - node.started_at, 3),
            "pid": os.getpid(),
            "data_dir": str(node.cfg.data_dir),
            "connected_peers": len(host.get_connected_peers()),
            "routing_table_size": dht.table_size(),
            "records": dht.record_count(),
            "bootstrapped": dht.bootstrapped.is_set(),
            "private_network": node.cfg.psk_file is not None,
            "blobs": {
                "stored_bytes": node.blob_store.bytes_stored,
                "served_chunks": node.blobs.served_chunks,
                "fetched_chunks": node.blobs.fetched_chunks,
                "bad_chunks": node.blobs.bad_chunks,
                "streams_opened": node.blobs.streams_opened,
                "provider_lookups": node.blobs.provider_lookups,
            },
        }

    async def peers(params: dict[str, Any], session: Session, rid: int) -> Any:
        out = []
        for peer in sorted(host.get_connected_peers(), key=lambda p: p.to_base58()):
            addrs = [str(a) for a in dht.known_addrs(peer)]
            out.append({"peer_id": peer.to_base58(), "addrs": addrs})
        return {"peers": out}

    async def connect(params: dict[str, Any], session: Session, rid: int) -> Any:
        addr = _param(params, "addr", str)
        if "/p2p/" not in addr:
            raise InvalidParams(f"{addr!r} needs a /p2p/<peer id> part")
        try:
            peer = await dht.connect(addr)
        except DhtError as exc:
            if "bad multiaddr" in str(exc) or "ourselves" in str(exc):
                raise InvalidParams(str(exc)) from None
            raise NetworkError(str(exc)) from None
        return {"peer_id": peer.to_base58()}

    async def disconnect(params: dict[str, Any], session: Session, rid: int) -> Any:
        peer_text = _param(params, "peer_id", str)
        try:
            peer = ID.from_base58(peer_text)
        except Exception:
            raise InvalidParams(f"{peer_text!r} is not a peer id") from None
        was_connected = peer in host.get_connected_peers()
        with trio.move_on_after(node.cfg.network.connect_timeout):
            await host.disconnect(peer)
        return {"peer_id": peer_text, "was_connected": was_connected}

    async def dht_put(params: dict[str, Any], session: Session, rid: int) -> Any:
        key = kv_key(_param(params, "key", str))
        value = _param(params, "value", (bytes, str))
        if isinstance(value, str):
            value = value.encode()
        try:
            result = await dht.put(key, value)
        except LocalProtocolError as exc:
            raise InvalidParams(str(exc)) from None
        return {
            "key": result.key,
            "seq": result.seq,
            "replicas": result.replicas,
            "targets": result.targets,
        }

    async def dht_get(params: dict[str, Any], session: Session, rid: int) -> Any:
        key = kv_key(_param(params, "key", str))
        try:
            record = await dht.get(key)
        except LocalProtocolError as exc:
            raise InvalidParams(str(exc)) from None
        if record is None:
            raise NotFound(f"no record for {key}")
        return {
            "key": record.key,
            "value": record.value,
            "seq": record.seq,
            "publisher": record.publisher,
        }

    def _content_key(params: dict[str, Any]) -> str:
        key = _param(params, "key", str)
        if not key or len(key) > MAX_KEY_CHARS:
            raise InvalidParams(f"key must be 1 to {MAX_KEY_CHARS} characters")
        return key

    async def dht_provide(params: dict[str, Any], session: Session, rid: int) -> Any:
        key = _content_key(params)
        try:
            replicas = await dht.provide(key)
        except LocalProtocolError as exc:
            raise InvalidParams(str(exc)) from None
        return {"key": key, "replicas": replicas}

    async def dht_find_providers(params: dict[str, Any], session: Session, rid: int) -> Any:
        key = _content_key(params)
        limit = _param(params, "limit", int, 20)
        if not 1 <= limit <= 100:
            raise InvalidParams("limit must be between 1 and 100")
        found = await dht.find_providers(key, limit)
        return {"providers": [{"peer_id": p, "addrs": a} for p, a in found]}

    async def dht_find_peer(params: dict[str, Any], session: Session, rid: int) -> Any:
        peer_id = _param(params, "peer_id", str)
        try:
            info = await dht.find_peer(peer_id)
        except DhtError as exc:
            raise InvalidParams(str(exc)) from None
        if info is None:
            raise NotFound(f"peer {peer_id} not found")
        return {"peer_id": info.peer_id.to_base58(), "addrs": [str(a) for a in info.addrs]}

    async def subscribe(params: dict[str, Any], session: Session, rid: int) -> Any:
        topic = _param(params, "topic", str)
        if topic not in TOPICS:
            raise InvalidParams(f"unknown topic {topic!r}; topics: {', '.join(TOPICS)}")
        events = node.events.subscribe(topic)
        scope = trio.CancelScope()
        session.subscriptions[rid] = scope

        async def forward() -> None:
            with scope:
                try:
                    async for event in events:
                        await session.send({"id": rid, "event": event})
                finally:
                    node.events.unsubscribe(topic, events)
                    session.subscriptions.pop(rid, None)

        session.nursery.start_soon(forward)
        return {"subscription": rid, "topic": topic}

    async def unsubscribe(params: dict[str, Any], session: Session, rid: int) -> Any:
        sub = _param(params, "subscription", int)
        scope = session.subscriptions.get(sub)
        if scope is None:
            raise NotFound(f"no subscription {sub} on this connection")
        scope.cancel()
        return {"subscription": sub}

    return {
        "status": status,
        "peers": peers,
        "connect": connect,
        "disconnect": disconnect,
        "dht.put": dht_put,
        "dht.get": dht_get,
        "dht.provide": dht_provide,
        "dht.find_providers": dht_find_providers,
        "dht.find_peer": dht_find_peer,
        "subscribe": subscribe,
        "unsubscribe": unsubscribe,
    }
