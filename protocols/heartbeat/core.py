"""``MachineCore``: the state and helpers that every part of ``Membership`` shares.

``Membership`` (:mod:`.machine`) is one object assembled from three parts, each a mixin over
this core: :mod:`.probing` (the probe cycle, indirect probes, relays, final pings),
:mod:`.sync` (push-pull anti-entropy) and :mod:`.dissemination` (the piggyback queue, gossip
rounds, and applying updates under the incarnation rules). The core holds what they all read
or write: our own record, the member table, timers, sequence numbers, suspicions, the phi
detectors, counters. Each part keeps its own bookkeeping (``_init_probing`` and friends).

The parts call one another through ``self`` (one object, so the hot paths pay no indirection);
the methods one part needs from another are declared at the end of this class, so each module
reads on its own.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Protocol, TypeVar

from .awareness import Awareness
from .broadcast_queue import BroadcastQueue
from .codec import accusation_payload, alive_payload
from .config import HeartbeatConfig
from .detector import PhiAccrual, Reliability
from .events import Effect, SetTimer, TimerKind
from .messages import Alive, Dead, NodeState, Packet, PacketKind, Suspect, Update
from .signing import Signer, Verifier
from .state import MemberStatus
from .suspicion import Suspicion
from .table import MemberBase, MemberTable

__all__ = ["MAX_RELAYS", "MAX_SMALL_MAPS", "MAX_URGENT", "MachineCore", "Rng"]

_T = TypeVar("_T")

_DEAD = MemberStatus.DEAD
#: Bounds on bookkeeping a peer can make us grow.
MAX_RELAYS = 256
MAX_URGENT = 64
MAX_SMALL_MAPS = 8192


class Rng(Protocol):
    """What the machine draws from the seeded source its caller passes in (a
    ``random.Random`` fits); it never creates one."""

    def randrange(self, start: int, stop: int = ..., /) -> int: ...

    def uniform(self, a: float, b: float, /) -> float: ...

    def choice(self, seq: Sequence[_T], /) -> _T: ...

    def sample(self, population: Sequence[_T], k: int, /) -> list[_T]: ...


class MachineCore:
    """Shared state and helpers of the membership machine (see the module docstring)."""

    def __init__(
        self,
        *,
        signer: Signer,
        verifier: Verifier,
        config: HeartbeatConfig,
        rng: Rng,
        incarnation: int,
        state: NodeState,
        base: MemberBase | None = None,
    ) -> None:
        self.me = signer.node_id
        self.cfg = config
        self._signer = signer
        self._verifier = verifier
        self._rng = rng
        self.incarnation = incarnation
        self.state = state
        self.self_alive = self._sign_alive()
        self.table = MemberTable(self.me, base, buckets=config.sync_buckets)
        self.awareness = Awareness(config.awareness_max_multiplier)
        self.queue: BroadcastQueue[Update] = BroadcastQueue()
        #: Refusals and other notable happenings, by reason (see errors.REFUSAL_REASONS).
        self.counters: Counter[str] = Counter()
        self.reliability: dict[bytes, Reliability] = {}
        #: The current generation of each timer we set; a firing of any other is stale.
        self._gens: dict[tuple[TimerKind, object], int] = {}
        self._gen = 0
        self._seq = 0
        self._suspicions: dict[bytes, Suspicion] = {}
        self._phi: dict[bytes, PhiAccrual] = {}
        #: Members we hold dead, with when we learnt it (forgotten after ``dead_retention``).
        self._dead_since: dict[bytes, float] = {}
        #: Which incarnation of ours we last pushed to each peer (and ``b"dead:" + peer``: which
        #: incarnation of a dead peer we last told it about).
        self._pushed: dict[bytes, int] = {}
        #: We exchanged a page of views with someone since starting (a join's sync is done).
        self._synced = False
        #: Someone declared us dead: pull a digest exchange forward on the next packet.
        self._declared_dead = False

    # -- helpers -------------------------------------------------------------------------------

    def _timer(self, kind: TimerKind, arg: object, at: float) -> SetTimer:
        self._gen += 1
        key = (kind, arg)
        self._gens[key] = self._gen
        return SetTimer(key=key, at=at, generation=self._gen)

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _sign_alive(self) -> Alive:
        sig = self._signer.sign(alive_payload(self.me, self.incarnation, self.state))
        return Alive(node=self.me, incarnation=self.incarnation, state=self.state, signature=sig)

    def _accusation(self, cls: type[Suspect] | type[Dead], node: bytes, inc: int) -> Update:
        kind = "suspect" if cls is Suspect else "dead"
        sig = self._signer.sign(accusation_payload(kind, node, inc, self.me))
        return cls(node=node, incarnation=inc, accuser=self.me, signature=sig)

    def _rel(self, node: bytes, now: float) -> Reliability:
        r = self.reliability.get(node)
        if r is None:
            m = self.table.get(node)
            r = self.reliability[node] = Reliability(now, m is None or m.status != _DEAD)
        return r

    def _heard(self, node: bytes, now: float) -> None:
        d = self._phi.pop(node, None)
        if d is None:
            d = PhiAccrual(now)
            if len(self._phi) >= self.cfg.phi_tracked:
                del self._phi[next(iter(self._phi))]  # least recently heard
        else:
            d.heard(now)
        self._phi[node] = d

    def _random_nodes(
        self, k: int, exclude: set[bytes], now: float, *, dead_ok: bool = False
    ) -> list[bytes]:
        """Up to k distinct random members, alive or suspect (or recently dead if asked)."""
        if k <= 0:
            return []
        ids = self.table.ids
        g2d = self.cfg.gossip_to_the_dead_time

        def ok(x: bytes) -> bool:
            if x == self.me or x in exclude:
                return False
            m = self.table.get(x)
            if m is None:
                return False
            return m.status != _DEAD or (dead_ok and now - m.since < g2d)

        n = len(ids)
        if n <= 4 * k + 16:
            cands = [x for x in ids if ok(x)]
            return self._rng.sample(cands, min(k, len(cands)))
        out: list[bytes] = []
        for _ in range(8 * k):
            x = ids[self._rng.randrange(n)]
            if x not in out and ok(x):
                out.append(x)
                if len(out) == k:
                    break
        return out

    # -- provided by the parts -----------------------------------------------------------------
    # Declared here so each part reads (and type-checks) on its own; ``Membership`` inherits
    # the parts before this core, so their definitions win.

    def _packet(
        self,
        kind: PacketKind,
        to: bytes,
        *,
        seq: int = 0,
        target: bytes = b"",
        first: tuple[Update, ...] = (),
    ) -> Packet:
        """A packet for ``to`` with the piggyback (:mod:`.dissemination`)."""
        raise NotImplementedError

    def _queue(self, u: Update) -> None:
        """Queue ``u`` for the piggyback (:mod:`.dissemination`)."""
        raise NotImplementedError

    def _apply(self, u: Update, now: float, out: list[Effect], *, verified: bool = False) -> None:
        """Apply an update under the incarnation rules (:mod:`.dissemination`)."""
        raise NotImplementedError

    def _gossip_soon(self, now: float, out: list[Effect]) -> None:
        """Bring the next gossip round forward (:mod:`.dissemination`)."""
        raise NotImplementedError

    def _sync_packet(self, kind: PacketKind, to: bytes) -> Packet:
        """A bounded page of our view (:mod:`.sync`)."""
        raise NotImplementedError

    def _sync_soon(self, now: float, out: list[Effect]) -> None:
        """Bring the next digest exchange forward (:mod:`.sync`)."""
        raise NotImplementedError
