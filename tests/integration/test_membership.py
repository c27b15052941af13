"""Membership on a real 8-daemon swarm (short intervals via config): convergence, SIGKILL
detection within the configured bound by every survivor, restart, forged and replayed packets."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import trio

from p2pnode_protocols.heartbeat import HeartbeatConfig
from tests.integration.harness import LocalSwarm, local_swarm

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]  # several daemon processes

N = 8
SETTINGS = {
    "membership.probe_interval": 0.5,
    "membership.probe_timeout": 0.2,
    "membership.suspicion_mult": 1.0,
    "membership.suspicion_max_timeout_mult": 4.0,
}
CFG = HeartbeatConfig(
    probe_interval=0.5,
    probe_timeout=0.2,
    suspicion_mult=1.0,
    suspicion_max_timeout_mult=4.0,
    suspicion_confirmations=3,
)


@pytest.fixture(scope="module")
def swarm(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    with local_swarm(tmp_path_factory.mktemp("membership"), N, SETTINGS) as s:
        yield s


def views(s: LocalSwarm, nodes: list[int]) -> dict[int, dict[str, tuple[str, int]]]:
    out = {}
    for i in nodes:
        with s.client(i) as c:
            out[i] = {m["peer_id"]: (m["state"], m["incarnation"]) for m in c.members()["members"]}
    return out


def wait_for(pred, timeout: float, step: float = 0.05):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        assert time.monotonic() < deadline, "timed out"
        time.sleep(step)


def converged(s: LocalSwarm, nodes: list[int]) -> bool:
    v = views(s, nodes)
    first = v[nodes[0]]
    alive = {p for p, (st, _) in first.items() if st == "alive"}
    return all(x == first for x in v.values()) and len(alive) >= len(nodes)


def test_views_converge_on_the_same_members_and_states(swarm: LocalSwarm) -> None:
    nodes = list(range(1, N + 1))
    wait_for(lambda: converged(swarm, nodes), 30, 0.2)
    with swarm.client(3) as c:
        rows = c.members()["members"]
    assert len(rows) == N
    me = rows[0]
    assert me["self"] and me["capabilities"]["cpu_cores"] >= 1
    assert me["load"]["free_slots"] >= 1 and me["addrs"]
    assert all(0 <= r["reliability"] <= 1 for r in rows)


def test_sigkill_is_declared_dead_by_every_survivor_within_the_bound(swarm: LocalSwarm) -> None:
    nodes = list(range(1, N + 1))
    wait_for(lambda: converged(swarm, nodes), 30, 0.2)
    victim = swarm.node(N).peer_id
    survivors = nodes[:-1]
    t0 = time.monotonic()
    swarm.kill(N)

    def all_dead() -> bool:
        return all(v.get(victim, ("?",))[0] == "dead" for v in views(swarm, survivors).values())

    wait_for(all_dead, CFG.detection_bound(N) + 2)
    took = time.monotonic() - t0
    assert took <= CFG.detection_bound(N), took
    # Restarted, it is alive again everywhere, with a higher incarnation.
    old = views(swarm, [1])[1][victim][1]
    swarm.start([N])
    wait_for(lambda: converged(swarm, nodes), 30, 0.2)
    assert views(swarm, [1])[1][victim][1] > old


def test_forged_and_replayed_packets_are_refused(swarm: LocalSwarm, tmp_path: Path) -> None:
    import multiaddr
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.peer.id import ID
    from libp2p.peer.peerinfo import info_from_p2p_addr

    from p2pnode.membership.service import PROTOCOL
    from p2pnode.network.host import build_host
    from p2pnode_protocols.heartbeat import Alive, NodeState, Packet, PacketKind, encode_packet
    from p2pnode_protocols.heartbeat.codec import alive_payload

    target = swarm.node(1)
    victim = ID.from_base58(swarm.node(2).peer_id).to_bytes()

    def counters() -> dict[str, int]:
        with swarm.client(1) as c:
            return c.members()["counters"]

    before = counters()

    async def attack() -> None:
        kp = create_new_key_pair()
        me = ID.from_pubkey(kp.public_key).to_bytes()
        host = build_host(kp, psk=None, dial_timeout=5)
        state = NodeState(version="evil")

        def rec(node: bytes, inc: int, signer=kp) -> Alive:  # type: ignore[no-untyped-def]
            sig = signer.private_key.sign(alive_payload(node, inc, state))
            return Alive(node=node, incarnation=inc, state=state, signature=sig)

        def frame(*updates: Alive) -> bytes:
            data = encode_packet(Packet(kind=PacketKind.GOSSIP, sender=me, inc=1, updates=updates))
            return len(data).to_bytes(4, "big") + data

        async with host.run(listen_addrs=[multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
            with trio.fail_after(10):
                await host.connect(info_from_p2p_addr(multiaddr.Multiaddr(target.addr)))
                stream = await host.new_stream(ID.from_base58(target.peer_id), [PROTOCOL])
                # Forged: node 2 "alive" at a huge incarnation, signed with our key.
                await stream.write(frame(rec(victim, 1 << 50)))
                # Ours at 5 then 6, then 5 again: a replay.
                await stream.write(frame(rec(me, 5)))
                await stream.write(frame(rec(me, 6)))
                await stream.write(frame(rec(me, 5)))
                # Garbage, then a frame header far over the cap: the stream is dropped.
                await stream.write(b"\x00\x00\x00\x03abc")
                await stream.write((1 << 30).to_bytes(4, "big"))
                await trio.sleep(1.0)
                await stream.reset()

    trio.run(attack)

    def grew(c: dict[str, int]) -> bool:
        return all(c.get(k, 0) > before.get(k, 0) for k in ("stale", "oversized"))

    after = wait_for(lambda: c if grew(c := counters()) else None, 10)
    assert after.get("forged", 0) > before.get("forged", 0)
    assert after.get("malformed", 0) > before.get("malformed", 0)
    v = views(swarm, [1])[1]
    assert v[swarm.node(2).peer_id][1] < 1 << 50  # the forgery changed nothing
