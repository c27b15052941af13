"""IPC methods of the DHT service: ``dht.put``, ``dht.get``, ``dht.provide``,
``dht.find_providers``, ``dht.find_peer`` (docs/ipc.md).

User key names are mapped under ``/p2pnode/kv/`` here (:func:`~p2pnode.ipc.params.kv_key`);
the DHT's own refusals of a key or value are the caller's fault, so they become
``invalid_params``.
"""

from __future__ import annotations

from typing import Any

from p2pnode.ipc.errors import InvalidParams, NotFound
from p2pnode.ipc.params import content_key, kv_key, param
from p2pnode.ipc.server import Method, Session
from p2pnode.network.dht import Dht, DhtError
from p2pnode_protocols.dht.errors import LocalProtocolError

MAX_PROVIDERS = 100


def build_dht_methods(*, dht: Dht) -> dict[str, Method]:
    async def dht_put(params: dict[str, Any], session: Session, rid: int) -> Any:
        key = kv_key(param(params, "key", str))
        value = param(params, "value", (bytes, str))
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
        key = kv_key(param(params, "key", str))
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

    async def dht_provide(params: dict[str, Any], session: Session, rid: int) -> Any:
        key = content_key(params)
        try:
            replicas = await dht.provide(key)
        except LocalProtocolError as exc:
            raise InvalidParams(str(exc)) from None
        return {"key": key, "replicas": replicas}

    async def dht_find_providers(params: dict[str, Any], session: Session, rid: int) -> Any:
        key = content_key(params)
        limit = param(params, "limit", int, 20)
        if not 1 <= limit <= MAX_PROVIDERS:
            raise InvalidParams(f"limit must be between 1 and {MAX_PROVIDERS}")
        found = await dht.find_providers(key, limit)
        return {"providers": [{"peer_id": p, "addrs": a} for p, a in found]}

    async def dht_find_peer(params: dict[str, Any], session: Session, rid: int) -> Any:
        peer_id = param(params, "peer_id", str)
        try:
            info = await dht.find_peer(peer_id)
        except DhtError as exc:
            raise InvalidParams(str(exc)) from None
        if info is None:
            raise NotFound(f"peer {peer_id} not found")
        return {"peer_id": info.peer_id.to_base58(), "addrs": [str(a) for a in info.addrs]}

    return {
        "dht.put": dht_put,
        "dht.get": dht_get,
        "dht.provide": dht_provide,
        "dht.find_providers": dht_find_providers,
        "dht.find_peer": dht_find_peer,
    }
