"""The DHT service: signed records and provider records over Kademlia routing.

Peer routing is py-libp2p's ``KadDHT`` (routing table, ``find_peer``, table refresh). Records
and provider records travel over ``/p2pnode/dht/1.0.0`` (see :mod:`protocols.dht.messages`) on
reused multiplexed streams, because KadDHT's own value path opens a stream per query (about
96 ms a get on loopback), resets inbound streams beyond 12 and stores every value on every one
of the k=20 closest peers.

A record lives on the ``replication`` peers closest to its key (XOR distance of SHA-256
hashes, as in libp2p Kademlia) and on its owner. Lookups start from the local routing table
and iterate ``alpha`` requests at a time through the ``closer`` peers each answer names. A
node that holds an unexpired copy answers a get from its own store.

Cancellation: every lookup is bounded by ``network.request_timeout`` per request and by the
same figure times the number of steps overall; loops sleep on config intervals.

Resources: the record store is in memory and in SQLite; the number of records a peer can make
us hold is bounded only by ``dht.max_value_size`` per record and the TTL, as in Kademlia.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import multiaddr
import trio
from libp2p.abc import IHost
from libp2p.crypto.keys import KeyPair
from libp2p.kad_dht.common import PROTOCOL_ID as KAD_ID
from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.records.utils import InvalidRecordType
from libp2p.records.validator import Validator

from p2pnode.config import Config
from p2pnode.network.host import allow_redial, set_guarded_handler
from p2pnode.network.ratelimit import TokenBuckets
from p2pnode.network.rpc import RpcError, RpcService
from p2pnode.network.signing import sign_record, verify
from p2pnode.store import Store
from protocols.dht.errors import LocalProtocolError, RecordInvalid, RemoteProtocolError
from protocols.dht.messages import (
    PROTOCOL_ID,
    PeerEntry,
    Request,
    Response,
    parse_request,
    parse_response,
)
from protocols.dht.records import RECORD_OVERHEAD, Record, decode_record, newest
from protocols.dht.validators import KvValidator, Validators

log = logging.getLogger(__name__)

KV_PREFIX = "/p2pnode/kv/"
PROVIDER_PREFIX = "/p2pnode/prov/"
PEER_ADDR_TTL = 3600.0
MAX_LOOKUP_STEPS = 16


class DhtError(Exception):
    """A DHT operation failed in a way the caller should hear about."""


class _RefuseAll(Validator):  # type: ignore[misc]
    """KadDHT value-store validator for our namespace: our records never go through KadDHT."""

    def validate(self, key: str, value: bytes) -> None:
        raise InvalidRecordType("p2pnode records travel over /p2pnode/dht/1.0.0, not kad")

    def select(self, key: str, values: list[bytes]) -> int:
        return 0


def _distance_key(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest(), "big")


def _peer_point(peer: ID) -> int:
    return int.from_bytes(hashlib.sha256(peer.to_bytes()).digest(), "big")


def provider_key(name: str) -> str:
    return PROVIDER_PREFIX + name


def distance(key: str, peer: ID) -> int:
    """Kademlia's XOR distance between a record key and a peer: the replicas of a key are the
    ``dht.replication`` peers nearest it."""
    return _peer_point(peer) ^ _distance_key(key)


@dataclass(slots=True)
class _Held:
    record: Record
    raw: bytes
    expires_at: float
    owned: bool


@dataclass(slots=True)
class DhtStats:
    """Counters for status and metrics."""

    ops: dict[str, int] = field(default_factory=dict)
    bad_peers: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PutResult:
    key: str
    seq: int
    replicas: int  # remote peers that acknowledged the store
    targets: int  # remote peers the store was sent to


class Dht:
    """Record and provider storage for one node; see the module docstring."""

    def __init__(
        self,
        host: IHost,
        key_pair: KeyPair,
        store: Store,
        cfg: Config,
        *,
        observe: Callable[[str, float, bool], None] | None = None,
    ) -> None:
        self.host = host
        self.key_pair = key_pair
        self.store = store
        self.cfg = cfg
        self.local_id: ID = host.get_id()
        self.local_b58 = self.local_id.to_base58()
        self._observe = observe or (lambda op, seconds, ok: None)
        self.kad = KadDHT(host, DHTMode.SERVER, strict_validation=True)
        self.kad.register_validator("p2pnode", _RefuseAll())
        for bucket in self.kad.routing_table.buckets:
            bucket.bucket_size = cfg.dht.bucket_size  # splits copy it to new buckets
        self.validators = Validators(verify)
        self.validators.register("kv", KvValidator(cfg.dht.max_value_size))
        self.validators.register("prov", _ProviderKeyValidator())
        self.max_record = cfg.dht.max_value_size + RECORD_OVERHEAD
        self.rpc = RpcService(
            host,
            PROTOCOL_ID,
            self._handle,
            max_frame=self.max_record + RECORD_OVERHEAD,
            max_inflight=cfg.network.max_inflight_per_peer,
            write_timeout=cfg.network.request_timeout,
            on_bad_frame=self._bad_peer,
        )
        self.stats = DhtStats()
        self._store_budget = TokenBuckets(
            rate=cfg.dht.max_stores_per_second, burst=5 * cfg.dht.max_stores_per_second
        )
        # Called with (key, seq, publisher) whenever a record is stored here.
        self.on_record: Callable[[str, int, str], None] = lambda key, seq, publisher: None
        self._held: dict[str, _Held] = {}
        self._last_seq: dict[str, int] = {}
        self.bootstrapped = trio.Event()
        for key, raw, expires_at, owned in store.iter_records():
            try:
                record = decode_record(raw, max_size=self.max_record)
            except RecordInvalid:
                continue
            self._held[key] = _Held(record, raw, expires_at, owned)

    # -- lifecycle -----------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[Dht] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve the RPC protocol, bootstrap, and keep the table, records and providers fresh.

        ``task_status.started`` comes once the handler is registered; bootstrapping goes on in
        the background (``bootstrapped`` is set when the first bootstrap peer answered, or at
        once when there is none).
        """
        async with trio.open_nursery() as nursery:
            await nursery.start(self.rpc.run)
            # Re-register KadDHT's handler guarded: one bad inbound kad stream must not stop us.
            set_guarded_handler(self.host, KAD_ID, self.kad.handle_stream)
            task_status.started(self)
            nursery.start_soon(self._bootstrap_loop)
            nursery.start_soon(self._refresh_loop)
            nursery.start_soon(self._republish_loop)
            nursery.start_soon(self._expiry_loop)

    async def connect(self, addr: str) -> ID:
        """Dial a full multiaddr (with /p2p/), add the peer to the routing table."""
        try:
            info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
        except Exception as exc:
            raise DhtError(f"bad multiaddr {addr!r}: {exc}") from None
        if info.peer_id == self.local_id:
            raise DhtError("refusing to connect to ourselves")
        allow_redial(self.host, info.peer_id)  # an explicit dial is a deliberate retry
        try:
            with trio.fail_after(self.cfg.network.connect_timeout):
                await self.host.connect(info)
        except trio.TooSlowError:
            raise DhtError(
                f"connecting to {addr} timed out after {self.cfg.network.connect_timeout:g} s"
            ) from None
        except Exception as exc:
            raise DhtError(f"cannot connect to {addr}: {exc}") from None
        await self._learn_peer(info.peer_id, [str(a) for a in info.addrs])
        return info.peer_id

    async def learn_peer(self, peer: ID) -> None:
        """Put a connected peer in the routing table and remember its addresses on disk."""
        await self._learn_peer(peer, [])

    async def _learn_peer(self, peer: ID, addrs: list[str]) -> None:
        if peer == self.local_id:
            return
        if addrs:
            self._add_addrs(peer, addrs)
        try:
            await self.kad.add_peer(peer, skip_server_mode_check=True)
        except Exception as exc:
            log.debug("routing table refused %s: %r", peer, exc)
        stored = self.known_addrs(peer)
        if stored:
            self.store.remember_peer(peer.to_base58(), [str(a) for a in stored])

    def known_addrs(self, peer: ID) -> list[multiaddr.Multiaddr]:
        """The peerstore's addresses for ``peer``; py-libp2p raises for unknown peers."""
        try:
            return list(self.host.get_peerstore().addrs(peer))
        except Exception:
            return []

    def _add_addrs(self, peer: ID, addrs: list[str]) -> None:
        parsed = []
        for a in addrs:
            try:
                m = multiaddr.Multiaddr(a)
            except Exception:
                continue
            if "p2p" in m.protocols() or any(p.name == "p2p" for p in m.protocols()):
                m = m.decapsulate(multiaddr.Multiaddr(f"/p2p/{peer.to_base58()}"))
            parsed.append(m)
        if parsed:
            self.host.get_peerstore().add_addrs(peer, parsed, int(PEER_ADDR_TTL))

    async def _bootstrap_loop(self) -> None:
        targets = list(self.cfg.bootstrap)
        for pid, addrs in self.store.known_peers():
            for a in addrs:
                full = a if "/p2p/" in a else f"{a}/p2p/{pid}"
                if full not in targets and pid != self.local_b58:
                    targets.append(full)
        if not targets:
            self.bootstrapped.set()
            return
        pending = {a: 0.1 for a in targets}
        delay = 0.1
        while pending:
            async with trio.open_nursery() as nursery:
                for addr in list(pending):
                    nursery.start_soon(self._try_bootstrap, addr, pending)
            if self.bootstrapped.is_set() and not set(pending) & set(self.cfg.bootstrap):
                break  # every configured bootstrap peer answered; stale known peers may wait
            await trio.sleep(delay)
            delay = min(delay * 2, self.cfg.network.bootstrap_max_backoff)

    async def _try_bootstrap(self, addr: str, pending: dict[str, float]) -> None:
        try:
            await self.connect(addr)
        except DhtError as exc:
            log.debug("bootstrap to %s failed: %s", addr, exc)
            return
        pending.pop(addr, None)
        if not self.bootstrapped.is_set():
            # Joined: say so now; filling the routing table is the refresh's business.
            self.bootstrapped.set()
            await self._refresh()
            log.info("bootstrapped via %s; routing table has %d peers", addr, self.table_size())

    async def _refresh(self) -> None:
        with trio.move_on_after(self.cfg.network.request_timeout * 4):
            try:
                await self.kad.refresh_routing_table()
            except Exception as exc:
                log.debug("routing table refresh failed: %r", exc)

    async def _refresh_loop(self) -> None:
        while True:
            await trio.sleep(self.cfg.dht.refresh_interval)
            await self._refresh()

    async def _republish_loop(self) -> None:
        await self.bootstrapped.wait()
        while True:
            await self.republish()
            await trio.sleep(self.cfg.dht.republish_interval)

    async def republish(self) -> int:
        """Send every record this node owns to its closest peers again, refreshing TTLs.

        Paced at half of what a peer accepts from us per second (``dht.max_stores_per_second``),
        so a node with many records never runs into its peers' store limits.
        """
        pause = 2.0 / self.cfg.dht.max_stores_per_second
        count = 0
        for key, held in list(self._held.items()):
            if not held.owned:
                continue
            if key.startswith(PROVIDER_PREFIX):
                continue
            # The same bytes again: holders treat an equal version as a TTL refresh.
            await self._store_at_closest(key, held.raw)
            count += 1
            await trio.sleep(pause)
        for key in self.store.provided_by(self.local_b58):
            await self._announce(key)
            await trio.sleep(pause)
        return count

    async def _expiry_loop(self) -> None:
        period = max(1.0, min(60.0, self.cfg.dht.record_ttl / 10))
        while True:
            await trio.sleep(period)
            now = time.time()
            for key, held in list(self._held.items()):
                if held.expires_at < now and not held.owned:
                    del self._held[key]
            self.store.expire(now)

    # -- queries for status --------------------------------------------------------------------

    def table_size(self) -> int:
        return int(self.kad.get_routing_table_size())

    def record_count(self) -> int:
        return len(self._held)

    # -- local store ---------------------------------------------------------------------------

    def _local(self, key: str) -> _Held | None:
        held = self._held.get(key)
        if held is None:
            return None
        if held.expires_at < time.time() and not held.owned:
            return None
        return held

    def _accept(self, raw: bytes, *, owned: bool) -> Record:
        """Validate and store a record if it is at least as new as ours. Raises RecordInvalid."""
        record = decode_record(raw, max_size=self.max_record)
        self.validators.validate(record)
        current = self._held.get(record.key)
        if current is not None and record.version < current.record.version:
            raise RecordInvalid(
                f"older than the held version (seq {record.seq} < {current.record.seq})"
            )
        expires_at = time.time() + float(record.ttl)
        keep_owned = owned or (current is not None and current.owned)
        if current is not None and current.owned and record.publisher != self.local_b58:
            keep_owned = False  # someone else wrote a newer version: it is theirs to refresh
        self._held[record.key] = _Held(record, raw, expires_at, keep_owned)
        self.store.put_record(record.key, raw, expires_at, owned=keep_owned)
        if current is not None and current.owned and not keep_owned:
            self.store.disown_record(record.key)
        self.on_record(record.key, record.seq, record.publisher)
        return record

    def _is_replica(self, key: str) -> bool:
        """Whether we are among the ``replication`` closest peers to ``key`` that we know."""
        want = self.cfg.dht.replication
        closest = self.kad.routing_table.find_local_closest_peers(key.encode(), want)
        if len(closest) < want:
            return True
        target = _distance_key(key)
        return (_peer_point(self.local_id) ^ target) < (_peer_point(closest[-1]) ^ target)

    # -- RPC handler ---------------------------------------------------------------------------

    def _bad_peer(self, peer: ID, reason: str) -> None:
        b58 = peer.to_base58()
        self.stats.bad_peers[b58] = self.stats.bad_peers.get(b58, 0) + 1

    async def _handle(self, peer: ID, frame: dict[str, Any]) -> dict[str, Any]:
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
                self._accept(req.record, owned=False)
            except RecordInvalid as exc:
                return Response(id=req.id, ok=False, err=str(exc)).to_frame()
            return {"ok": True}
        closer = self._closer_entries(req.key, exclude=peer)
        if req.op == "find_value":
            held = self._local(req.key)
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
            self.store.add_provider(req.key, peer.to_base58(), list(req.addrs), time.time() + ttl)
            return {"ok": True}
        # get_prov
        providers = tuple(self.store.providers(req.key, time.time(), limit=20))
        return Response(id=req.id, ok=True, providers=providers, closer=closer).to_frame()

    def _closer_entries(self, key: str, *, exclude: ID | None) -> tuple[PeerEntry, ...]:
        peers = self.kad.routing_table.find_local_closest_peers(
            key.encode(), self.cfg.dht.replication + 1
        )
        out = []
        for p in peers:
            if p == exclude:
                continue
            addrs = [str(a) for a in self.known_addrs(p)][:8]
            if addrs:
                out.append((p.to_base58(), addrs))
        return tuple(out[: self.cfg.dht.replication])

    # -- lookups -------------------------------------------------------------------------------

    async def _ask(self, peer: ID, request: Request) -> Response | None:
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

    async def _lookup(
        self,
        key: str,
        op: str,
        *,
        stop_on_value: bool,
        on_response: Callable[[Response], None] | None = None,
    ) -> tuple[list[ID], list[Response]]:
        """Iterative Kademlia lookup. Returns the closest responsive peers and all responses;
        ``on_response`` sees each good response as it arrives, before its step ends."""
        target = _distance_key(key)
        seeds = self.kad.routing_table.find_local_closest_peers(
            key.encode(), self.cfg.dht.bucket_size
        )
        known: dict[ID, int] = {p: _peer_point(p) ^ target for p in seeds}
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
                resp = into[peer] = await self._ask(peer, Request(id=0, op=op, key=key))
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
                    self._add_addrs(pid, addrs)
                    known[pid] = _peer_point(pid) ^ target
            if stop_on_value and found_value:
                break
        responsive.sort(key=lambda p: known[p])
        return responsive, responses

    # -- public operations ---------------------------------------------------------------------

    def _next_seq(self, key: str) -> int:
        held = self._held.get(key)
        floor = max(self._last_seq.get(key, 0), held.record.seq if held else 0)
        seq = max(time.time_ns() // 1_000_000, floor + 1)
        self._last_seq[key] = seq
        return seq

    async def put(self, key: str, value: bytes, *, seq: int | None = None) -> PutResult:
        """Sign, store locally as owner, and store at the closest peers.

        ``seq`` defaults to the clock in milliseconds, bumped past any version held; an
        explicit ``seq`` must be above the held version's.
        """
        started = time.perf_counter()
        ok = False
        try:
            self.validators.check_key(key)
            if len(value) > self.cfg.dht.max_value_size:
                raise LocalProtocolError(
                    f"value of {len(value)} bytes exceeds the limit of "
                    f"{self.cfg.dht.max_value_size} bytes"
                )
            if seq is not None:
                held = self._held.get(key)
                if held is not None and seq <= held.record.seq:
                    raise LocalProtocolError(
                        f"sequence {seq} is not above the held version's {held.record.seq}"
                    )
                self._last_seq[key] = seq
            record = sign_record(
                self.key_pair,
                key=key,
                value=value,
                seq=self._next_seq(key) if seq is None else seq,
                ttl=self.cfg.dht.record_ttl,
                publisher=self.local_b58,
            )
            raw = record.encode()
            self._accept(raw, owned=True)
            acked, targets = await self._store_at_closest(key, raw)
            ok = True
            return PutResult(key=key, seq=record.seq, replicas=acked, targets=targets)
        finally:
            self._observe("put", time.perf_counter() - started, ok)

    async def _store_at_closest(self, key: str, raw: bytes) -> tuple[int, int]:
        peers, _ = await self._lookup(key, "find_node", stop_on_value=False)
        targets = peers[: self.cfg.dht.replication]
        acked = 0

        async def one(peer: ID) -> None:
            nonlocal acked
            resp = await self._ask(peer, Request(id=0, op="store", key=key, record=raw))
            if resp is not None and resp.ok:
                acked += 1
            elif resp is not None:
                log.debug("store at %s refused: %s", peer, resp.err)

        async with trio.open_nursery() as nursery:
            for p in targets:
                nursery.start_soon(one, p)
        return acked, len(targets)

    async def get(self, key: str) -> Record | None:
        """The newest valid record for ``key``: from the local store if fresh, else the network."""
        started = time.perf_counter()
        found = False
        try:
            self.validators.check_key(key)
            held = self._local(key)
            if held is not None and self._is_replica(key):
                # A replica hears every store for its key: its copy is as new as any.
                found = True
                return held.record
            _, responses = await self._lookup(key, "find_value", stop_on_value=True)
            # An owner outside the replica set may hold an old version: it only competes.
            candidates: list[Record] = [held.record] if held is not None else []
            for resp in responses:
                if resp.record is None:
                    continue
                try:
                    record = decode_record(resp.record, max_size=self.max_record)
                    if record.key != key:
                        raise RecordInvalid("record is for another key")
                    self.validators.validate(record)
                except RecordInvalid as exc:
                    log.info("discarding an invalid record for %s: %s", key, exc)
                    continue
                candidates.append(record)
            if not candidates:
                return None
            found = True
            return candidates[newest(candidates)]
        finally:
            self._observe("get", time.perf_counter() - started, found)

    async def provide(self, name: str) -> int:
        """Announce that this node holds ``name``; returns how many peers stored the record."""
        started = time.perf_counter()
        ok = False
        try:
            key = provider_key(name)
            self.validators.check_key(key)
            addrs = (
                [str(a) for a in self.host.get_transport_addrs()]
                if hasattr(self.host, "get_transport_addrs")
                else []
            )
            self.store.add_provider(key, self.local_b58, addrs, math.inf)
            acked = await self._announce(key)
            ok = True
            return acked
        finally:
            self._observe("provide", time.perf_counter() - started, ok)

    async def _announce(self, key: str) -> int:
        peers, _ = await self._lookup(key, "find_node", stop_on_value=False)
        addrs = [str(a) for a in self.host.get_transport_addrs()]
        acked = 0

        async def one(peer: ID) -> None:
            nonlocal acked
            req = Request(
                id=0, op="add_prov", key=key, addrs=tuple(addrs), ttl=self.cfg.dht.record_ttl
            )
            resp = await self._ask(peer, req)
            if resp is not None and resp.ok:
                acked += 1

        async with trio.open_nursery() as nursery:
            for p in peers[: self.cfg.dht.replication]:
                nursery.start_soon(one, p)
        return acked

    def local_providers(self, name: str, limit: int = 20) -> list[tuple[str, list[str]]]:
        """The unexpired provider records of ``name`` this node holds (itself included): as a
        replica of the key, or as a provider."""
        key = provider_key(name)
        self.validators.check_key(key)
        return self.store.providers(key, time.time(), limit)

    async def find_providers(
        self,
        name: str,
        limit: int = 20,
        *,
        found: Callable[[str, list[str]], None] | None = None,
    ) -> list[tuple[str, list[str]]]:
        """Up to ``limit`` providers of ``name``: those this node holds records of, then those
        a lookup finds. ``found`` is called with each new one as soon as it is known, so a
        caller can start on the first while the lookup goes on."""
        started = time.perf_counter()
        out: dict[str, list[str]] = {}

        def add(pid: str, addrs: list[str]) -> None:
            if pid in out or len(out) >= limit:
                return
            out[pid] = addrs
            if pid != self.local_b58:
                with contextlib.suppress(Exception):
                    self._add_addrs(ID.from_base58(pid), addrs)
            if found is not None:
                found(pid, addrs)

        def take(resp: Response) -> None:
            for pid, addrs in resp.providers:
                add(pid, list(addrs))

        try:
            for pid, addrs in self.local_providers(name, limit):
                add(pid, addrs)
            if len(out) < limit:
                await self._lookup(
                    provider_key(name), "get_prov", stop_on_value=True, on_response=take
                )
            return list(out.items())
        finally:
            self._observe("find_providers", time.perf_counter() - started, bool(out))

    async def find_peer(self, peer_text: str) -> PeerInfo | None:
        started = time.perf_counter()
        info: PeerInfo | None = None
        try:
            try:
                peer = ID.from_base58(peer_text)
            except Exception:
                raise DhtError(f"{peer_text!r} is not a peer id") from None
            if peer == self.local_id:
                return PeerInfo(peer, self.host.get_transport_addrs())
            addrs = self.known_addrs(peer)
            if addrs and peer in self.host.get_connected_peers():
                info = PeerInfo(peer, addrs)
                return info
            with trio.move_on_after(self.cfg.network.request_timeout * 2):
                try:
                    info = await self.kad.find_peer(peer)
                except Exception as exc:  # the library raises for peers nobody knows
                    log.debug("find_peer %s: %r", peer, exc)
                    info = None
            return info
        finally:
            self._observe("find_peer", time.perf_counter() - started, info is not None)


class _ProviderKeyValidator:
    """``/p2pnode/prov/<content key>``: provider announcements (no stored value)."""

    def validate(self, record: Record) -> None:
        raise RecordInvalid("provider keys hold provider entries, not records")
