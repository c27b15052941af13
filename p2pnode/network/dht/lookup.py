"""Iterative Kademlia lookups over ``/p2pnode/dht/1.0.0``, and the sends to the peers they find.

A lookup starts from the ``bucket_size`` peers of the local routing table nearest the key and
asks ``alpha`` of the nearest not yet asked at a time; each answer names ``closer`` peers,
whose addresses go into the peerstore. It ends when the ``replication`` nearest peers known
have all been asked (Kademlia's stop rule), at the first wave carrying a value when asked to,
or after ``MAX_LOOKUP_STEPS`` waves.

Cancellation: each request is bounded by ``network.request_timeout``, so a lookup is bounded by
that figure times ``MAX_LOOKUP_STEPS``.

Errors: a peer that times out or fails is skipped (logged at debug); one whose answer does not
parse is skipped and counted through ``bad_peer``. Nothing here raises for a peer's fault.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio
from libp2p.abc import IHost
from libp2p.kad_dht.kad_dht import KadDHT
from libp2p.peer.id import ID

from p2pnode.config import Config
from p2pnode.network.dht.keys import key_point, peer_point
from p2pnode.network.dht.peers import add_addrs
from p2pnode.network.host import advertised_addrs
from p2pnode.network.rpc import RpcError, RpcService
from p2pnode_protocols.dht.errors import RemoteProtocolError
from p2pnode_protocols.dht.messages import Request, Response, parse_response

log = logging.getLogger(__name__)

MAX_LOOKUP_STEPS = 16


class Lookups:
    """Lookups through one node's routing table (``kad``) and RPC client (``rpc``)."""

    def __init__(
        self,
        host: IHost,
        kad: KadDHT,
        rpc: RpcService,
        cfg: Config,
        *,
        max_record: int,
        bad_peer: Callable[[ID, str], None],
    ) -> None:
        self.host = host
        self.kad = kad
        self.rpc = rpc
        self.cfg = cfg
        self.local_id: ID = host.get_id()
        self.max_record = max_record
        self._bad_peer = bad_peer

    async def ask(self, peer: ID, request: Request) -> Response | None:
        """One request to ``peer``; None when it failed or its answer did not parse."""
        try:
            frame = await self.rpc.request(
                peer, request.to_frame(), self.cfg.network.request_timeout
            )
            response = parse_response({**frame, "id": request.id}, max_record=self.max_record)
        except RpcError as exc:
            log.debug("%s to %s failed: %s", request.op, peer, exc)
            return None
        except RemoteProtocolError as exc:
            self._bad_peer(peer, str(exc))
            return None
        return response

    async def lookup(
        self,
        key: str,
        op: str,
        *,
        stop_on_value: bool,
        on_response: Callable[[Response], None] | None = None,
    ) -> tuple[list[ID], list[Response]]:
        """Iterative Kademlia lookup. Returns the closest responsive peers and all responses;
        ``on_response`` sees each good response as it arrives, before its step ends."""
        target = key_point(key)
        seeds = self.kad.routing_table.find_local_closest_peers(
            key.encode(), self.cfg.dht.bucket_size
        )
        known: dict[ID, int] = {p: peer_point(p) ^ target for p in seeds}
        queried: set[ID] = set()
        responsive: list[ID] = []
        responses: list[Response] = []
        want = self.cfg.dht.replication
        for _step in range(MAX_LOOKUP_STEPS):
            ranked = sorted(known, key=known.__getitem__)
            # Kademlia's stop rule: the `want` closest peers we know have all been asked.
            frontier = [p for p in ranked[: want + len(queried - set(responsive))]]
            batch = [p for p in frontier if p not in queried][: self.cfg.dht.alpha]
            if not batch:
                break
            queried.update(batch)
            results: dict[ID, Response | None] = {}

            async def one(peer: ID, into: dict[ID, Response | None]) -> None:
                resp = into[peer] = await self.ask(peer, Request(id=0, op=op, key=key))
                if on_response is not None and resp is not None and resp.ok:
                    on_response(resp)

            async with trio.open_nursery() as nursery:
                for p in batch:
                    nursery.start_soon(one, p, results)
            found_value = False
            for peer in batch:
                resp = results.get(peer)
                if resp is None or not resp.ok:
                    continue
                responsive.append(peer)
                responses.append(resp)
                if resp.record is not None or resp.providers:
                    found_value = True
                for pid_text, addrs in resp.closer:
                    try:
                        pid = ID.from_base58(pid_text)
                    except Exception:
                        continue
                    if pid == self.local_id or pid in known:
                        continue
                    add_addrs(self.host, pid, addrs)
                    known[pid] = peer_point(pid) ^ target
            if stop_on_value and found_value:
                break
        responsive.sort(key=lambda p: known[p])
        return responsive, responses

    def is_replica(self, key: str) -> bool:
        """Whether we are among the ``replication`` closest peers to ``key`` that we know."""
        want = self.cfg.dht.replication
        closest = self.kad.routing_table.find_local_closest_peers(key.encode(), want)
        if len(closest) < want:
            return True
        target = key_point(key)
        return (peer_point(self.local_id) ^ target) < (peer_point(closest[-1]) ^ target)

    async def store_at_closest(self, key: str, raw: bytes) -> tuple[int, int]:
        """Send a record to the ``replication`` closest peers a lookup finds; returns how many
        acknowledged it and how many it was sent to."""
        peers, _ = await self.lookup(key, "find_node", stop_on_value=False)
        targets = peers[: self.cfg.dht.replication]
        acked = 0

        async def one(peer: ID) -> None:
            nonlocal acked
            resp = await self.ask(peer, Request(id=0, op="store", key=key, record=raw))
            if resp is not None and resp.ok:
                acked += 1
            elif resp is not None:
                log.debug("store at %s refused: %s", peer, resp.err)

        async with trio.open_nursery() as nursery:
            for p in targets:
                nursery.start_soon(one, p)
        return acked, len(targets)

    async def announce(self, key: str) -> int:
        """Tell the ``replication`` closest peers a lookup finds that we provide ``key`` (for
        ``dht.record_ttl``); returns how many stored the entry."""
        peers, _ = await self.lookup(key, "find_node", stop_on_value=False)
        addrs = [str(a) for a in advertised_addrs(self.host)]
        acked = 0

        async def one(peer: ID) -> None:
            nonlocal acked
            req = Request(
                id=0, op="add_prov", key=key, addrs=tuple(addrs), ttl=self.cfg.dht.record_ttl
            )
            resp = await self.ask(peer, req)
            if resp is not None and resp.ok:
                acked += 1

        async with trio.open_nursery() as nursery:
            for p in peers[: self.cfg.dht.replication]:
                nursery.start_soon(one, p)
        return acked
