"""A tiny in-memory cluster for PBFT tests: replicas joined by a fake link (no simulator).

``Cluster`` keeps the effects each replica returns; ``deliver_all`` moves queued messages until
none are left, in FIFO order, optionally through the codec. Timers are fired explicitly.
"""

from __future__ import annotations

from collections import deque

from p2pnode.network.signing import Ed25519Signer, Ed25519Verifier
from p2pnode_protocols.pbft import (
    Broadcast,
    ClientRequest,
    Commit,
    Committee,
    Effect,
    Event,
    Evidence,
    KeyedHashVerifier,
    KvPut,
    Message,
    MessageReceived,
    PbftConfig,
    Persist,
    Replica,
    Request,
    Restarted,
    Send,
    SetTimer,
    Signer,
    TimerFired,
    TimerKey,
    Verifier,
    decode,
    encode,
    encode_tx,
    sign,
)


def make_keys(n: int, *, ed25519: bool = False) -> tuple[list[Signer], Verifier, Signer]:
    """n replica signers, a verifier, and one client signer."""
    if ed25519:
        signers: list[Signer] = [Ed25519Signer.from_seed(bytes([i + 1]) * 32) for i in range(n)]
        return signers, Ed25519Verifier(), Ed25519Signer.from_seed(b"\xc1" * 32)
    kv = KeyedHashVerifier(b"test-seed" * 4)
    return [kv.signer_for(b"r%d" % i) for i in range(n)], kv, kv.signer_for(b"client")


def request(client: Signer, rid: int, key: str = "k") -> Request:
    op = encode_tx(KvPut(key=f"{key}{rid}", value=b"v%d" % rid))
    return sign(Request(client=client.node_id, request_id=rid, op=op), client)


class Cluster:
    def __init__(
        self,
        n: int = 4,
        *,
        ed25519: bool = False,
        wire: bool = False,
        config: PbftConfig | None = None,
    ) -> None:
        self.signers, self.verifier, self.client = make_keys(n, ed25519=ed25519)
        self.ids = [s.node_id for s in self.signers]
        self.committee = Committee(epoch=0, validators=tuple(self.ids))
        self.config = config or PbftConfig(checkpoint_interval=2, window=4, max_batch=4)
        self.wire = wire
        self.now = 0.0
        self.replicas: dict[bytes, Replica | None] = {}
        self.durable: dict[bytes, object] = {}
        self.queue: deque[tuple[bytes, bytes, Message]] = deque()
        self.commits: dict[bytes, list[Commit]] = {x: [] for x in self.ids}
        self.evidence: list[Evidence] = []
        self.timers: dict[bytes, dict[TimerKey, SetTimer]] = {x: {} for x in self.ids}
        self.down: set[bytes] = set()
        #: Every message ever sent, in order (for tests that want samples).
        self.log: list[Message] = []
        for s in self.signers:
            self.boot(s.node_id)

    def boot(self, node: bytes, durable: object = None) -> None:
        signer = self.signers[self.ids.index(node)]
        rep = Replica(
            committee=self.committee, config=self.config, signer=signer, verifier=self.verifier
        )
        self.replicas[node] = rep
        self.timers[node] = {}
        self.down.discard(node)
        self.apply(node, rep.handle(Restarted(durable=durable), self.now))  # type: ignore[arg-type]

    def crash(self, node: bytes) -> None:
        self.replicas[node] = None
        self.down.add(node)

    def restart(self, node: bytes) -> None:
        self.boot(node, self.durable.get(node))

    def replica(self, i: int) -> Replica:
        rep = self.replicas[self.ids[i]]
        assert rep is not None
        return rep

    def handle(self, node: bytes, event: Event) -> list[Effect]:
        rep = self.replicas[node]
        assert rep is not None
        effects = rep.handle(event, self.now)
        self.apply(node, effects)
        return effects

    def apply(self, node: bytes, effects: list[Effect]) -> None:
        for e in effects:
            if isinstance(e, Broadcast | Send):
                self.log.append(e.msg)
            if isinstance(e, Broadcast):
                for dst in self.ids:
                    if dst != node:
                        self.queue.append((node, dst, e.msg))
            elif isinstance(e, Send):
                self.queue.append((node, e.to, e.msg))
            elif isinstance(e, SetTimer):
                self.timers[node][e.key] = e
            elif isinstance(e, Persist):
                self.durable[node] = e.state
            elif isinstance(e, Commit):
                self.commits[node].append(e)
            elif isinstance(e, Evidence):
                self.evidence.append(e)

    def submit(self, node_index: int, req: Request) -> None:
        self.handle(self.ids[node_index], ClientRequest(request=req))

    def deliver_all(self, *, drop_to: set[bytes] | None = None, limit: int = 100_000) -> int:
        count = 0
        while self.queue and count < limit:
            src, dst, msg = self.queue.popleft()
            if dst in self.down or (drop_to and dst in drop_to):
                continue
            if self.wire:
                msg = decode(encode(msg))
            self.handle(dst, MessageReceived(sender=src, msg=msg))
            count += 1
        return count

    def fire(self, node: bytes, key: TimerKey) -> None:
        t = self.timers[node].get(key)
        if t is None:
            return
        self.now = max(self.now, t.at)
        self.handle(node, TimerFired(key=key, generation=t.generation))

    def tick(self, rounds: int = 1, *, drop_to: set[bytes] | None = None) -> None:
        """Fire every live replica's status timer, then deliver everything."""
        for _ in range(rounds):
            for node in self.ids:
                if node not in self.down:
                    self.fire(node, TimerKey.STATUS)
            self.deliver_all(drop_to=drop_to)

    def committed_digests(self, node: bytes) -> dict[int, bytes]:
        return {c.seq: c.entry.digest for c in self.commits[node]}
