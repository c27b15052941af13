"""Serving peers' ``/p2pnode/dht/1.0.0`` requests: store, find_value, find_node, add_prov, get_prov.

Every answer but a store's names up to ``replication`` peers from our routing table closer to
the key (with at most 8 addresses each), which is what lets a lookup move on.

Errors: a request that does not parse is answered with the error's reply hint and counted
against the peer; a record or provider key our validators refuse is answered with the reason.

Resources: a peer may make us store at most ``dht.max_stores_per_second`` records and provider
entries a second (burst five times that); beyond it the request is refused and counted against
the peer. A ``get_prov`` answer carries at most 20 providers.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from libp2p.abc import IHost
from libp2p.kad_dht.kad_dht import KadDHT
from libp2p.peer.id import ID

from p2pnode.config import Config
from p2pnode.network.dht.peers import known_addrs
from p2pnode.network.dht.records import RecordStore
from p2pnode.network.ratelimit import TokenBuckets
from p2pnode_protocols.dht.errors import RecordInvalid, RemoteProtocolError
from p2pnode_protocols.dht.messages import PeerEntry, Response, parse_request
from p2pnode_protocols.dht.validators import Validators

MAX_PROVIDERS_ANSWERED = 20


class RequestHandler:
    """The RPC handler of one node's DHT: :meth:`handle` is what ``RpcService`` calls."""

    def __init__(
        self,
        host: IHost,
        kad: KadDHT,
        records: RecordStore,
        validators: Validators,
        cfg: Config,
        *,
        max_record: int,
        learn_peer: Callable[[ID, list[str]], Awaitable[None]],
        bad_peer: Callable[[ID, str], None],
    ) -> None:
        self.host = host
        self.kad = kad
        self.records = records
        self.validators = validators
        self.cfg = cfg
        self.max_record = max_record
        self._learn_peer = learn_peer
        self._bad_peer = bad_peer
        self._store_budget = TokenBuckets(
            rate=cfg.dht.max_stores_per_second, burst=5 * cfg.dht.max_stores_per_second
        )

    async def handle(self, peer: ID, frame: dict[str, Any]) -> dict[str, Any]:
        """Answer one request frame from ``peer``."""
        try:
            req = parse_request(frame, max_record=self.max_record)
        except RemoteProtocolError as exc:
            self._bad_peer(peer, str(exc))
            return {"ok": False, "err": exc.reply_hint}
        if not self.kad.routing_table.peer_in_table(peer):
            await self._learn_peer(peer, [])
        if req.op in ("store", "add_prov") and not self._store_budget.allow(peer, time.monotonic()):
            self._bad_peer(peer, "store rate exceeded")
            return {"ok": False, "err": "rate limited: too many stores from this peer"}
        if req.op == "store":
            assert req.record is not None
            try:
                self.records.accept(req.record, owned=False, now=time.time())
            except RecordInvalid as exc:
                return Response(id=req.id, ok=False, err=str(exc)).to_frame()
            return {"ok": True}
        closer = self.closer_entries(req.key, exclude=peer)
        if req.op == "find_value":
            held = self.records.local(req.key, time.time())
            return Response(
                id=req.id, ok=True, record=held.raw if held else None, closer=closer
            ).to_frame()
        if req.op == "find_node":
            return Response(id=req.id, ok=True, closer=closer).to_frame()
        if req.op == "add_prov":
            try:
                self.validators.check_key(req.key)
            except RecordInvalid as exc:
                return {"ok": False, "err": str(exc)}
            ttl = min(req.ttl, self.cfg.dht.record_ttl)
            self.records.add_provider(req.key, peer.to_base58(), list(req.addrs), time.time() + ttl)
            return {"ok": True}
        # get_prov
        providers = tuple(
            self.records.providers(req.key, time.time(), limit=MAX_PROVIDERS_ANSWERED)
        )
        return Response(id=req.id, ok=True, providers=providers, closer=closer).to_frame()

    def closer_entries(self, key: str, *, exclude: ID | None) -> tuple[PeerEntry, ...]:
        """Up to ``replication`` peers of our routing table nearest ``key`` that we have
        addresses for, ``exclude`` (the asker) left out."""
        peers = self.kad.routing_table.find_local_closest_peers(
            key.encode(), self.cfg.dht.replication + 1
        )
        out = []
        for p in peers:
            if p == exclude:
                continue
            addrs = [str(a) for a in known_addrs(self.host, p)][:8]
            if addrs:
                out.append((p.to_base58(), addrs))
        return tuple(out[: self.cfg.dht.replication])
