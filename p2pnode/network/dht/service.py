"""The DHT service: signed records and provider records over Kademlia routing.

Peer routing is py-libp2p's ``KadDHT`` (routing table, ``find_peer``, table refresh). Records
and provider records travel over ``/p2pnode/dht/1.0.0`` (see :mod:`p2pnode_protocols.dht.messages`)
on reused multiplexed streams, because KadDHT's own value path opens a stream per query (about
96 ms a get on loopback), resets inbound streams beyond 12 and stores every value on every one
of the k=20 closest peers.

A record lives on the ``replication`` peers closest to its key (XOR distance of SHA-256
hashes, as in libp2p Kademlia) and on its owner. A node that holds an unexpired copy answers a
get from its own store.

This module composes the parts and runs the periodic work: :mod:`.records` holds records and
provider entries (memory and SQLite), :mod:`.lookup` runs iterative lookups and sends to the
closest peers, :mod:`.handler` serves peers' requests. In the background :meth:`Dht.run`
bootstraps (with backoff), refreshes the routing table every ``dht.refresh_interval``,
republishes our records and provider entries every ``dht.republish_interval`` once
bootstrapped, and sweeps expired entries every tenth of ``dht.record_ttl`` (1 s to 60 s).

Cancellation: every lookup is bounded by ``network.request_timeout`` per request and by the
same figure times the number of steps overall; loops sleep on config intervals.

Resources: the record store is in memory and in SQLite; the number of records a peer can make
us hold is bounded only by ``dht.max_value_size`` per record and the TTL, as in Kademlia.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sqlite3
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import NoReturn

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
from p2pnode.network.dht.handler import RequestHandler
from p2pnode.network.dht.keys import provider_key
from p2pnode.network.dht.lookup import Lookups
from p2pnode.network.dht.peers import add_addrs, known_addrs
from p2pnode.network.dht.records import RecordStore
from p2pnode.network.dial import DialError, answers_tcp, dial_exact, private_network_hint
from p2pnode.network.host import advertised_addrs, allow_redial, set_guarded_handler
from p2pnode.network.rpc import RpcService
from p2pnode.network.signing import sign_record, verify
from p2pnode.store import Store
from p2pnode_protocols.dht.errors import LocalProtocolError, RecordInvalid
from p2pnode_protocols.dht.messages import PROTOCOL_ID, Response
from p2pnode_protocols.dht.records import RECORD_OVERHEAD, Record, decode_record, newest
from p2pnode_protocols.dht.validators import KvValidator, NamespaceValidator, Validators

log = logging.getLogger(__name__)


class DhtError(Exception):
    """A DHT operation failed in a way the caller should hear about."""


class _RefuseAll(Validator):  # type: ignore[misc]
    """KadDHT value-store validator for our namespace: our records never go through KadDHT."""

    def validate(self, key: str, value: bytes) -> None:
        raise InvalidRecordType("p2pnode records travel over /p2pnode/dht/1.0.0, not kad")

    def select(self, key: str, values: list[bytes]) -> int:
        return 0


class _ProviderKeyValidator:
    """``/p2pnode/prov/<content key>``: provider announcements (no stored value)."""

    def validate(self, record: Record) -> None:
        raise RecordInvalid("provider keys hold provider entries, not records")


@dataclass(slots=True)
class DhtStats:
    """Counters for status and metrics."""

    ops: dict[str, int] = field(default_factory=dict)
    bad_peers: dict[str, int] = field(default_factory=dict)

    def bad_peer(self, peer: ID, reason: str) -> None:
        """Count a peer that sent something malformed or abusive (``reason`` is not kept)."""
        b58 = peer.to_base58()
        self.bad_peers[b58] = self.bad_peers.get(b58, 0) + 1


@dataclass(frozen=True, slots=True)
class PutResult:
    key: str
    seq: int
    replicas: int  # remote peers that acknowledged the store
    targets: int  # remote peers the store was sent to


async def _every(
    period: float, work: Callable[[], Awaitable[object]], *, at_once: bool = False
) -> NoReturn:
    """Run ``work`` forever, sleeping ``period`` seconds between the end of one run and the
    start of the next (so a slow run pushes the next one back instead of piling up); the first
    run comes at once if ``at_once``, else after one period."""
    if not at_once:
        await trio.sleep(period)
    while True:
        await work()
        await trio.sleep(period)


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
        on_record: Callable[[str, int, str], None] | None = None,
        validators: Mapping[str, NamespaceValidator] | None = None,
        on_handshake_failure: Callable[[str], None] | None = None,
    ) -> None:
        """``on_record(key, seq, publisher)`` is told of every record stored here;
        ``validators`` adds namespaces beyond the DHT's own (``kv``, ``prov``);
        ``on_handshake_failure(addr)`` hears of each dial that reached a TCP port but not
        through the secure handshake (a private network mismatch, most likely)."""
        self._on_handshake_failure = on_handshake_failure
        self.host = host
        self.key_pair = key_pair
        self.store = store
        self.peers_not_remembered = 0  # remember_peer failures (a full disk)
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
        for namespace, validator in (validators or {}).items():
            self.validators.register(namespace, validator)
        self.max_record = cfg.dht.max_value_size + RECORD_OVERHEAD
        self.stats = DhtStats()
        self.records = RecordStore(
            store,
            self.validators,
            local_b58=self.local_b58,
            max_record=self.max_record,
            on_record=on_record,
        )
        self.handler = RequestHandler(
            host,
            self.kad,
            self.records,
            self.validators,
            cfg,
            max_record=self.max_record,
            learn_peer=self._learn_peer,
            bad_peer=self.stats.bad_peer,
        )
        self.rpc = RpcService(
            host,
            PROTOCOL_ID,
            self.handler.handle,
            max_frame=self.max_record + RECORD_OVERHEAD,
            max_inflight=cfg.network.max_inflight_per_peer,
            write_timeout=cfg.network.request_timeout,
            on_bad_frame=self.stats.bad_peer,
        )
        self.lookups = Lookups(
            host,
            self.kad,
            self.rpc,
            cfg,
            max_record=self.max_record,
            bad_peer=self.stats.bad_peer,
        )
        self.bootstrapped = trio.Event()

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
            nursery.start_soon(_every, self.cfg.dht.refresh_interval, self._refresh)
            nursery.start_soon(self._republish_loop)
            expiry_period = max(1.0, min(60.0, self.cfg.dht.record_ttl / 10))
            nursery.start_soon(_every, expiry_period, self._expire)

    async def _why_not(self, addr: multiaddr.Multiaddr, reason: str) -> str:
        """A dial that timed out, or whose handshake broke down, at an address whose TCP port
        answers: say it is probably a private network mismatch. A refused port or another
        peer's key at the address needs no hint: the reason says it."""
        garbled = ("negotiate", "delimited", "handshake", "secure")
        if "does not correspond" in reason:  # a peer answered, with another key
            return ""
        if reason != "timeout" and not any(word in reason for word in garbled):
            return ""
        if not await answers_tcp(addr, min(1.0, self.cfg.network.connect_timeout)):
            return ""
        if self._on_handshake_failure is not None:
            self._on_handshake_failure(f"handshake with {addr} did not complete ({reason})")
        psk = getattr(self.host.get_network(), "psk", None)
        return f"; {private_network_hint(psk is not None)}"

    async def connect(self, addr: str, *, probe_connected: bool = True) -> ID:
        """Dial a full multiaddr (with /p2p/), add the peer to the routing table.

        Only ``addr`` is dialled and it is stored once it worked. A peer already connected is
        probed at ``addr`` (``probe_connected``, what a person's ``connect`` asks), or else taken
        as it is, ``addr`` unproven and not stored (the bootstrap loop: no extra handshakes)."""
        try:
            info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
        except Exception as exc:
            raise DhtError(f"bad multiaddr {addr!r}: {exc}") from None
        if info.peer_id == self.local_id:
            raise DhtError("refusing to connect to ourselves")
        allow_redial(self.host, info.peer_id)  # an explicit dial is a deliberate retry
        # Exactly this address, even for a connected peer, and stored only once it worked:
        # host.connect would store it first and then use any address (or none) instead.
        if not info.addrs:
            raise DhtError(f"bad multiaddr {addr!r}: no address before /p2p/")
        if not probe_connected and info.peer_id in self.host.get_connected_peers():
            await self._learn_peer(info.peer_id, [])
            return info.peer_id
        try:
            with trio.fail_after(self.cfg.network.connect_timeout):
                await dial_exact(self.host, info.peer_id, info.addrs[0])
        except trio.TooSlowError:
            raise DhtError(
                f"connecting to {addr} timed out after {self.cfg.network.connect_timeout:g} s"
                + await self._why_not(info.addrs[0], "timeout")
            ) from None
        except DialError as exc:
            raise DhtError(
                f"cannot connect to {addr}: {exc}" + await self._why_not(info.addrs[0], str(exc))
            ) from None
        await self._learn_peer(info.peer_id, [str(a) for a in info.addrs])
        return info.peer_id

    async def learn_peer(self, peer: ID) -> None:
        """Put a connected peer in the routing table and remember its addresses on disk."""
        await self._learn_peer(peer, [])

    async def _learn_peer(self, peer: ID, addrs: list[str]) -> None:
        if peer == self.local_id:
            return
        if addrs:
            add_addrs(self.host, peer, addrs)
        try:
            await self.kad.add_peer(peer, skip_server_mode_check=True)
        except Exception as exc:
            log.debug("routing table refused %s: %r", peer, exc)
        stored = self.known_addrs(peer)
        if stored:
            try:
                self.store.remember_peer(peer.to_base58(), [str(a) for a in stored])
            except sqlite3.OperationalError as exc:
                # A full disk (or a locked file) must not stop the node: the addresses are
                # only a head start for the next run, and the peerstore still has them.
                self.peers_not_remembered += 1
                if self.peers_not_remembered == 1 or self.peers_not_remembered % 100 == 0:
                    log.warning(
                        "could not remember %s's addresses on disk (%d times so far): %s",
                        peer,
                        self.peers_not_remembered,
                        exc,
                    )

    def known_addrs(self, peer: ID) -> list[multiaddr.Multiaddr]:
        """The peerstore's addresses for ``peer``; py-libp2p raises for unknown peers."""
        return known_addrs(self.host, peer)

    # -- periodic work -------------------------------------------------------------------------

    async def _bootstrap_loop(self) -> None:
        targets = list(self.cfg.bootstrap)
        for pid, addrs in self.store.known_peers():
            for a in addrs:
                # A relayed address carries the relay's /p2p/ before its /p2p-circuit.
                full = a if a.rpartition("/p2p/")[2] == pid else f"{a}/p2p/{pid}"
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
            await self.connect(addr, probe_connected=False)
        except DhtError as exc:
            log.debug("bootstrap to %s failed: %s", addr, exc)
            return
        # A peer advertises several addresses (a join token carries them all: an announced
        # public one, LAN ones); once one answered, its other addresses need no more retries.
        peer = addr.rpartition("/p2p/")[2]
        for other in [a for a in pending if a == addr or a.rpartition("/p2p/")[2] == peer]:
            pending.pop(other, None)
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

    async def _republish_loop(self) -> None:
        await self.bootstrapped.wait()
        await _every(self.cfg.dht.republish_interval, self.republish, at_once=True)

    async def republish(self) -> int:
        """Send every record this node owns to its closest peers again, refreshing TTLs.

        Paced at half of what a peer accepts from us per second (``dht.max_stores_per_second``),
        so a node with many records never runs into its peers' store limits.
        """
        pause = 2.0 / self.cfg.dht.max_stores_per_second
        count = 0
        for key, raw in self.records.owned():
            # The same bytes again: holders treat an equal version as a TTL refresh.
            await self.lookups.store_at_closest(key, raw)
            count += 1
            await trio.sleep(pause)
        for key in self.records.provided_by(self.local_b58):
            await self.lookups.announce(key)
            await trio.sleep(pause)
        return count

    async def _expire(self) -> None:
        self.records.expire(time.time())

    # -- queries for status --------------------------------------------------------------------

    def table_size(self) -> int:
        return int(self.kad.get_routing_table_size())

    def record_count(self) -> int:
        return len(self.records)

    # -- public operations ---------------------------------------------------------------------

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
                self.records.claim_seq(key, seq)
                version = seq
            else:
                version = self.records.next_seq(key, time.time_ns() // 1_000_000)
            record = sign_record(
                self.key_pair,
                key=key,
                value=value,
                seq=version,
                ttl=self.cfg.dht.record_ttl,
                publisher=self.local_b58,
            )
            raw = record.encode()
            self.records.accept(raw, owned=True, now=time.time())
            acked, targets = await self.lookups.store_at_closest(key, raw)
            ok = True
            return PutResult(key=key, seq=record.seq, replicas=acked, targets=targets)
        finally:
            self._observe("put", time.perf_counter() - started, ok)

    async def get(self, key: str) -> Record | None:
        """The newest valid record for ``key``: from the local store if fresh, else the network."""
        started = time.perf_counter()
        found = False
        try:
            self.validators.check_key(key)
            held = self.records.local(key, time.time())
            if held is not None and self.lookups.is_replica(key):
                # A replica hears every store for its key: its copy is as new as any.
                found = True
                return held.record
            _, responses = await self.lookups.lookup(key, "find_value", stop_on_value=True)
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
            addrs = [str(a) for a in advertised_addrs(self.host)]
            self.records.add_provider(key, self.local_b58, addrs, math.inf)
            acked = await self.lookups.announce(key)
            ok = True
            return acked
        finally:
            self._observe("provide", time.perf_counter() - started, ok)

    def local_providers(self, name: str, limit: int = 20) -> list[tuple[str, list[str]]]:
        """The unexpired provider records of ``name`` this node holds (itself included): as a
        replica of the key, or as a provider."""
        key = provider_key(name)
        self.validators.check_key(key)
        return self.records.providers(key, time.time(), limit)

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
                    add_addrs(self.host, ID.from_base58(pid), addrs)
            if found is not None:
                found(pid, addrs)

        def take(resp: Response) -> None:
            for pid, addrs in resp.providers:
                add(pid, list(addrs))

        try:
            for pid, addrs in self.local_providers(name, limit):
                add(pid, addrs)
            if len(out) < limit:
                await self.lookups.lookup(
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
                return PeerInfo(peer, advertised_addrs(self.host))
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
