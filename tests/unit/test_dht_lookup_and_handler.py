"""The DHT's lookups and request handler alone: a swarm of handlers joined by an in-memory RPC
(no libp2p host), so the iteration, the stop rules, the answers and the limits are visible."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import multiaddr
import pytest
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID

from p2pnode.config import Config, load_config
from p2pnode.network.dht import distance, provider_key
from p2pnode.network.dht.handler import RequestHandler
from p2pnode.network.dht.lookup import Lookups
from p2pnode.network.dht.records import RecordStore
from p2pnode.network.rpc import RpcError
from p2pnode.network.signing import sign_record, verify
from p2pnode.store import Store
from p2pnode_protocols.dht.errors import RecordInvalid
from p2pnode_protocols.dht.messages import Request
from p2pnode_protocols.dht.records import RECORD_OVERHEAD, Record
from p2pnode_protocols.dht.validators import KvValidator, Validators

KEY = "/p2pnode/kv/lookup-me"
MAX_RECORD = 1024 + RECORD_OVERHEAD


PAIRS = [create_new_key_pair(bytes([i + 1]) * 32) for i in range(12)]
PEERS = [ID.from_pubkey(pair.public_key) for pair in PAIRS]


def addr_of(peer: ID) -> str:
    """Each simulated node's one address: a port by its index, so addresses are distinct."""
    return f"/ip4/127.0.0.1/tcp/{4000 + PEERS.index(peer)}"


class NoRecords:
    """The service's validator for provider keys: entries only, never a record."""

    def validate(self, record: Record) -> None:
        raise RecordInvalid("provider keys hold provider entries, not records")


class FakePeerstore:
    def __init__(self) -> None:
        self.known: dict[ID, list[multiaddr.Multiaddr]] = {}

    def addrs(self, peer: ID) -> list[multiaddr.Multiaddr]:
        return self.known[peer]  # raises for unknown peers, as py-libp2p does

    def add_addrs(self, peer: ID, addrs: list[multiaddr.Multiaddr], ttl: int) -> None:
        self.known.setdefault(peer, [])
        self.known[peer] += [a for a in addrs if a not in self.known[peer]]


class FakeHost:
    def __init__(self, peer: ID) -> None:
        self.peer = peer
        self.peerstore = FakePeerstore()

    def get_id(self) -> ID:
        return self.peer

    def get_peerstore(self) -> FakePeerstore:
        return self.peerstore

    def get_transport_addrs(self) -> list[multiaddr.Multiaddr]:
        return [multiaddr.Multiaddr(addr_of(self.peer))]


class FakeTable:
    """A routing table that knows whom it was given, nearest first by our XOR distance."""

    def __init__(self, peers: Iterable[ID]) -> None:
        self.peers = list(peers)

    def peer_in_table(self, peer: ID) -> bool:
        return peer in self.peers

    def find_local_closest_peers(self, key: bytes, count: int) -> list[ID]:
        return sorted(self.peers, key=lambda p: distance(key.decode(), p))[:count]


class FakeKad:
    def __init__(self, peers: Iterable[ID]) -> None:
        self.routing_table = FakeTable(peers)


class Node:
    def __init__(self, swarm: Swarm, peer: ID, cfg: Config, db: Path) -> None:
        self.peer = peer
        self.host = FakeHost(peer)
        self.kad = FakeKad([])
        self.bad: list[tuple[ID, str]] = []
        validators = Validators(verify)
        validators.register("kv", KvValidator(1024))
        validators.register("prov", NoRecords())
        self.records = RecordStore(
            Store(db), validators, local_b58=peer.to_base58(), max_record=MAX_RECORD
        )
        self.handler = RequestHandler(
            self.host,  # type: ignore[arg-type]
            self.kad,  # type: ignore[arg-type]
            self.records,
            validators,
            cfg,
            max_record=MAX_RECORD,
            learn_peer=self.learn,
            bad_peer=lambda p, reason: self.bad.append((p, reason)),
        )
        self.asked: list[tuple[ID, str]] = []
        self.lookups = Lookups(
            self.host,  # type: ignore[arg-type]
            self.kad,  # type: ignore[arg-type]
            swarm.client(self),  # type: ignore[arg-type]
            cfg,
            max_record=MAX_RECORD,
            bad_peer=lambda p, reason: self.bad.append((p, reason)),
        )

    def know(self, peers: Iterable[Node]) -> None:
        for other in peers:
            if other is not self:
                self.kad.routing_table.peers.append(other.peer)
                self.host.peerstore.add_addrs(
                    other.peer, [multiaddr.Multiaddr(addr_of(other.peer))], 3600
                )

    async def learn(self, peer: ID, addrs: list[str]) -> None:
        self.kad.routing_table.peers.append(peer)


class Client:
    """``RpcService.request`` over direct calls to the other nodes' handlers."""

    def __init__(self, swarm: Swarm, node: Node) -> None:
        self.swarm = swarm
        self.node = node

    async def request(self, peer: ID, frame: dict[str, Any], timeout: float) -> dict[str, Any]:
        self.node.asked.append((peer, frame["op"]))
        if peer in self.swarm.down:
            raise RpcError(f"no reply from {peer} within {timeout:g} s")
        if peer in self.swarm.garbled:
            return {"ok": True, "closer": "not a list"}
        reply = await self.swarm.nodes[peer].handler.handle(self.node.peer, frame)
        return {k: v for k, v in reply.items() if k != "id"}


class Swarm:
    def __init__(self, tmp_path: Path, size: int, **settings: Any) -> None:
        self.cfg = load_config(
            tmp_path, env={}, overrides={f"dht.{k}": v for k, v in settings.items()}
        )
        self.down: set[ID] = set()
        self.garbled: set[ID] = set()
        self.nodes: dict[ID, Node] = {}
        for i, peer in enumerate(PEERS[:size]):
            self.nodes[peer] = Node(self, peer, self.cfg, tmp_path / f"node{i}.db")
        self.pairs = dict(zip(PEERS, PAIRS, strict=True))

    def client(self, node: Node) -> Client:
        return Client(self, node)

    def nearest(self, key: str, *, but: ID) -> list[ID]:
        return sorted((p for p in self.nodes if p != but), key=lambda p: distance(key, p))

    def signed(self, peer: ID, seq: int, value: bytes = b"v") -> bytes:
        return sign_record(
            self.pairs[peer], key=KEY, value=value, seq=seq, ttl=60.0, publisher=peer.to_base58()
        ).encode()


def sparse_swarm(tmp_path: Path, size: int = 12, **settings: Any) -> tuple[Swarm, Node]:
    """Everyone knows everyone except the asker, who knows only its two farthest peers from
    ``KEY``: whatever it finds, it found by following ``closer`` answers."""
    swarm = Swarm(tmp_path, size, **settings)
    nodes = list(swarm.nodes.values())
    asker = nodes[0]
    for node in nodes[1:]:
        node.know(nodes)
    far = swarm.nearest(KEY, but=asker.peer)[-2:]
    asker.know(swarm.nodes[p] for p in far)
    return swarm, asker


async def test_a_lookup_follows_closer_peers_to_the_nearest(tmp_path: Path) -> None:
    swarm, asker = sparse_swarm(tmp_path, replication=3, alpha=2)
    peers, responses = await asker.lookups.lookup(KEY, "find_node", stop_on_value=False)
    nearest = swarm.nearest(KEY, but=asker.peer)
    assert peers[:3] == nearest[:3]
    assert peers == sorted(peers, key=lambda p: distance(KEY, p))
    assert len(responses) == len(peers) and all(r.ok for r in responses)
    # What it learned went into the peerstore, so the next request can dial.
    assert asker.host.peerstore.known[nearest[0]] == [multiaddr.Multiaddr(addr_of(nearest[0]))]
    # At most alpha requests a wave, none repeated.
    assert len({p for p, _ in asker.asked}) == len(asker.asked)


async def test_a_record_stored_at_the_closest_is_found_there(tmp_path: Path) -> None:
    swarm, asker = sparse_swarm(tmp_path, replication=3, alpha=2)
    writer = list(swarm.nodes.values())[5]
    raw = swarm.signed(writer.peer, 7)
    writer.records.accept(raw, owned=True, now=0.0)
    acked, targets = await writer.lookups.store_at_closest(KEY, raw)
    assert (acked, targets) == (3, 3)
    replicas = [p for p in swarm.nearest(KEY, but=writer.peer)[:3]]
    for p in replicas:
        held = swarm.nodes[p].records.local(KEY, 1.0)
        assert held is not None and held.raw == raw
    assert all(p != writer.peer for p in replicas)
    _, responses = await asker.lookups.lookup(KEY, "find_value", stop_on_value=True)
    assert any(r.record == raw for r in responses)
    # It stopped at the first wave that carried the record: not every peer was asked.
    assert len(asker.asked) < len(swarm.nodes) - 1


async def test_dead_and_garbling_peers_are_skipped_and_garblers_counted(tmp_path: Path) -> None:
    swarm, asker = sparse_swarm(tmp_path, replication=3, alpha=3)
    nearest = swarm.nearest(KEY, but=asker.peer)
    swarm.down.add(nearest[0])
    swarm.garbled.add(nearest[1])
    peers, _ = await asker.lookups.lookup(KEY, "find_node", stop_on_value=False)
    # Both were asked once and left out; peers still name them in their closer answers, so
    # the lookup ends with the next nearest responsive ones.
    assert [op for p, op in asker.asked if p in nearest[:2]] == ["find_node", "find_node"]
    assert peers[:2] == nearest[2:4] and not set(nearest[:2]) & set(peers)
    assert [p for p, _ in asker.bad] == [nearest[1]]


async def test_is_replica_compares_us_with_the_nearest_known(tmp_path: Path) -> None:
    swarm = Swarm(tmp_path, 6, replication=2)
    by_distance = sorted(swarm.nodes.values(), key=lambda n: distance(KEY, n.peer))
    for node in by_distance:
        node.know(by_distance)
    assert [n.lookups.is_replica(KEY) for n in by_distance] == [
        True,
        True,
        False,
        False,
        False,
        False,
    ]
    (tmp_path / "lonely").mkdir()
    lonely = Swarm(tmp_path / "lonely", 3, replication=2)
    assert all(n.lookups.is_replica(KEY) for n in lonely.nodes.values())


async def test_announced_providers_are_answered_at_most_twenty(tmp_path: Path) -> None:
    swarm, asker = sparse_swarm(tmp_path, replication=3, alpha=2)
    prov = provider_key("blob")
    assert await asker.lookups.announce(prov) == 3
    target = swarm.nearest(prov, but=asker.peer)[0]
    for i in range(25):
        swarm.nodes[target].records.add_provider(prov, f"peer{i}", [], 2e9 + i)
    reply = await swarm.nodes[target].handler.handle(
        asker.peer, Request(id=9, op="get_prov", key=prov).to_frame()
    )
    assert reply["id"] == 9 and len(reply["providers"]) == 20
    holders = [p for p in swarm.nodes if swarm.nodes[p].records.providers(prov, 0.0, 64)]
    assert set(holders) == set(swarm.nearest(prov, but=asker.peer)[:3])
    entry = swarm.nodes[holders[0]].records.providers(prov, 0.0, 64)
    assert (asker.peer.to_base58(), [addr_of(asker.peer)]) in entry


async def test_the_handler_refuses_bad_frames_and_store_floods(tmp_path: Path) -> None:
    swarm = Swarm(tmp_path, 2, max_stores_per_second=1.0)
    server, peer = swarm.nodes.values()
    reply = await server.handler.handle(peer.peer, {"id": 1, "op": "dance", "key": KEY})
    assert reply["ok"] is False and [p for p, _ in server.bad] == [peer.peer]
    assert server.kad.routing_table.peers == []  # a bad frame does not earn a table slot
    replies = [
        await server.handler.handle(
            peer.peer,
            Request(id=i, op="store", key=KEY, record=swarm.signed(peer.peer, i)).to_frame(),
        )
        for i in range(1, 7)
    ]
    assert [r["ok"] for r in replies] == [True] * 5 + [False]  # burst: five times the rate
    assert replies[-1]["err"] == "rate limited: too many stores from this peer"
    assert server.bad[-1] == (peer.peer, "store rate exceeded")
    assert server.kad.routing_table.peers == [peer.peer]  # a well-formed request does
    reply = await server.handler.handle(
        peer.peer, Request(id=8, op="find_value", key=KEY).to_frame()
    )
    assert reply["record"] == swarm.signed(peer.peer, 5)


@pytest.mark.parametrize("op", ["store", "add_prov"])
async def test_the_handler_refuses_keys_without_a_validator(tmp_path: Path, op: str) -> None:
    swarm = Swarm(tmp_path, 2)
    server, peer = swarm.nodes.values()
    request = Request(
        id=3, op=op, key="/p2pnode/nope/x", record=b"x" if op == "store" else None, ttl=5.0
    )
    reply = await server.handler.handle(peer.peer, request.to_frame())
    assert reply["ok"] is False and reply["err"]
