"""Stateful property test: replicas fed arbitrary orders of valid and invalid messages.

The machine is STYLE.md §4's: ``initialize`` builds n = 3f+1 = 4 replicas; ``self.net`` holds
messages in flight, so delivery order, loss and duplication are hypothesis's choice, and
``settle`` delivers in order so that runs also get far (commits, checkpoints, view changes).
Replica 0 (the first primary) is Byzantine: it may equivocate, and ``forge`` rewrites any message
in flight into one with a wrong signer or signature. Correct replicas may crash and restart from
their durable state. Invariants check safety only (liveness is the simulator's job): correct
replicas never commit different digests at one seq, committed logs only grow, views never go
back, every committed request was submitted by the client, a correct replica never signs two
different votes for one slot (even across restarts), and evidence never names a correct replica.
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from p2pnode_protocols.pbft import (
    Broadcast,
    ClientRequest,
    Commit,
    Committee,
    CommitVote,
    DurableState,
    Effect,
    Evidence,
    Message,
    MessageReceived,
    PbftConfig,
    Persist,
    Prepare,
    PrePrepare,
    RemoteProtocolError,
    Replica,
    Request,
    Restarted,
    Send,
    SetTimer,
    StateInstalled,
    TimerFired,
    TimerKey,
    ViewEntered,
    batch_digest,
    sign,
)
from tests.protocols.pbft_helpers import make_keys, request

pytestmark = pytest.mark.timeout(110)

N = 4
BYZANTINE = 0


@dataclasses.dataclass(frozen=True)
class InFlight:
    src: int
    dst: int
    msg: Message
    #: Forged by the test: the receiver must reject it (or ignore it), never act on it.
    forged: bool = False

    def __repr__(self) -> str:
        tag = "FORGED " if self.forged else ""
        return f"{tag}{self.src}->{self.dst} {self.msg!r}"


class PbftMachine(RuleBasedStateMachine):
    @initialize()
    def setup(self) -> None:
        self.signers, self.verifier, self.client = make_keys(N)
        self.ids = [s.node_id for s in self.signers]
        self.committee = Committee(epoch=0, validators=tuple(self.ids))
        self.config = PbftConfig(checkpoint_interval=2, window=4, max_batch=2, max_inflight=2)
        self.now = 0.0
        self.replicas: list[Replica] = []
        self.durable: list[DurableState | None] = [None] * N
        self.timers: list[dict[TimerKey, SetTimer]] = [{} for _ in range(N)]
        self.commits: list[dict[int, bytes]] = [{} for _ in range(N)]
        self.reached = [0] * N
        self.views = [0] * N
        self.canonical: dict[int, bytes] = {}
        self.submitted: set[Request] = set()
        self.votes: dict[tuple[type, int, int, int], bytes] = {}
        self.next_rid = 1
        #: Messages in flight. A plain list, not a Bundle: rules pick by index, and ``settle``
        #: drains it in order, which a Bundle cannot do.
        self.net: list[InFlight] = []
        for i in range(N):
            self.replicas.append(self._new_replica(i))
            self._push(self._run(i, Restarted(durable=None)))

    def _new_replica(self, i: int) -> Replica:
        return Replica(
            committee=self.committee,
            config=self.config,
            signer=self.signers[i],
            verifier=self.verifier,
        )

    def _run(self, i: int, event: object) -> list[InFlight]:
        self.now += 0.01
        effects: list[Effect] = self.replicas[i].handle(event, self.now)  # type: ignore[arg-type]
        out: list[InFlight] = []
        for e in effects:
            if isinstance(e, Broadcast | Send) and i != BYZANTINE:
                self._check_vote(i, e.msg)
            if isinstance(e, Evidence):
                assert e.offender == self.ids[BYZANTINE], "evidence against a correct replica"
            if isinstance(e, Broadcast):
                out += [InFlight(i, j, e.msg) for j in range(N) if j != i]
            elif isinstance(e, Send):
                out.append(InFlight(i, self.ids.index(e.to), e.msg))
            elif isinstance(e, SetTimer):
                self.timers[i][e.key] = e
            elif isinstance(e, Persist):
                self.durable[i] = e.state
            elif isinstance(e, Commit):
                self._on_commit(i, e)
            elif isinstance(e, StateInstalled):
                self.reached[i] = max(self.reached[i], e.seq)
            elif isinstance(e, ViewEntered) and i != BYZANTINE:
                assert e.view >= self.views[i], "view went back"
                self.views[i] = e.view
        return out

    def _check_vote(self, i: int, msg: Message) -> None:
        # A correct replica never signs two different votes for one slot, even across restarts.
        if isinstance(msg, PrePrepare | Prepare | CommitVote) and msg.sender == self.ids[i]:
            key = (type(msg), msg.view, msg.seq, i)
            known = self.votes.setdefault(key, msg.digest)
            assert known == msg.digest, f"replica {i} equivocated: {msg!r}"

    def _on_commit(self, i: int, c: Commit) -> None:
        if i == BYZANTINE:
            return
        assert batch_digest(c.entry.batch) == c.entry.digest
        for req in c.entry.batch:
            assert req in self.submitted, f"committed unsubmitted {req!r}"
        known = self.canonical.setdefault(c.seq, c.entry.digest)
        assert known == c.entry.digest, f"replica {i} committed a different digest at {c.seq}"
        old = self.commits[i].get(c.seq)
        assert old is None or old == c.entry.digest, "a committed entry changed"
        assert c.seq <= self.reached[i] + 1, "commit out of order"
        self.commits[i][c.seq] = c.entry.digest
        self.reached[i] = max(self.reached[i], c.seq)

    def _push(self, out: list[InFlight]) -> None:
        self.net.extend(out)

    def _pick(self, data: st.DataObject) -> int:
        return data.draw(st.integers(0, len(self.net) - 1), label="message")

    @rule(node=st.integers(0, N - 1))
    def client_request(self, node: int) -> None:
        req = request(self.client, self.next_rid)
        self.next_rid += 1
        self.submitted.add(req)
        self._push(self._run(node, ClientRequest(request=req)))

    def _deliver(self, m: InFlight) -> None:
        try:
            out = self._run(m.dst, MessageReceived(sender=self.ids[m.src], msg=m.msg))
        except RemoteProtocolError:
            # Only forgeries (and the Byzantine replica's own inventions) may be refused.
            assert m.forged or m.src == BYZANTINE, f"correct message refused: {m!r}"
            return
        self._push(out)

    @precondition(lambda self: bool(self.net))
    @rule(data=st.data())
    def deliver(self, data: st.DataObject) -> None:
        """Any message in flight, in any order: reordering comes free."""
        self._deliver(self.net.pop(self._pick(data)))

    @precondition(lambda self: bool(self.net))
    @rule(steps=st.integers(1, 300))
    def settle(self, steps: int) -> None:
        """Deliver the oldest messages first (FIFO), so runs also make progress."""
        for _ in range(min(steps, len(self.net))):
            self._deliver(self.net.pop(0))

    @precondition(lambda self: bool(self.net))
    @rule(data=st.data())
    def drop(self, data: st.DataObject) -> None:
        self.net.pop(self._pick(data))

    @precondition(lambda self: bool(self.net))
    @rule(data=st.data())
    def duplicate(self, data: st.DataObject) -> None:
        self._deliver(self.net[self._pick(data)])

    @rule(node=st.integers(0, N - 1), key=st.sampled_from(list(TimerKey)))
    def fire_timer(self, node: int, key: TimerKey) -> None:
        t = self.timers[node].get(key)
        if t is not None:
            self.now = max(self.now, t.at)
            self._push(self._run(node, TimerFired(key=key, generation=t.generation)))

    @rule(node=st.integers(1, N - 1))
    def crash_restart(self, node: int) -> None:
        self.replicas[node] = self._new_replica(node)
        self.timers[node] = {}
        d = self.durable[node]
        if d is not None:
            assert d.view >= self.views[node], "durable view is older than one entered"
        self._push(self._run(node, Restarted(durable=d)))

    @precondition(lambda self: bool(self.submitted))
    @rule(data=st.data())
    def equivocate(self, data: st.DataObject) -> None:
        """The Byzantine replica signs different pre-prepares for one slot, one per backup."""
        view = self.replicas[BYZANTINE].view
        if self.committee.primary(view) != self.ids[BYZANTINE]:
            return
        pool = sorted(self.submitted, key=lambda r: r.request_id)
        seq = data.draw(st.integers(1, 2 * self.config.window), label="seq")
        for j in range(1, N):
            batch = tuple(data.draw(st.lists(st.sampled_from(pool), max_size=2, unique=True)))
            pp = PrePrepare(
                view=view, seq=seq, digest=batch_digest(batch), batch=batch, sender=self.ids[0]
            )
            self.net.append(InFlight(BYZANTINE, j, sign(pp, self.signers[BYZANTINE])))

    @precondition(lambda self: bool(self.net))
    @rule(data=st.data())
    def forge(self, data: st.DataObject) -> None:
        m = self.net[self._pick(data)]
        msg = m.msg
        if isinstance(msg, Request):
            forged: Message = dataclasses.replace(msg, op=msg.op + b"!")
        elif data.draw(st.booleans(), label="rename"):
            other = self.ids[data.draw(st.integers(0, N - 1), label="as")]
            if other == msg.sender:  # type: ignore[attr-defined]
                return
            forged = dataclasses.replace(msg, sender=other)  # type: ignore[type-var]
        else:
            forged = dataclasses.replace(msg, signature=b"\x00" * 32)  # type: ignore[type-var]
        self.net.append(InFlight(m.src, m.dst, forged, forged=True))

    @invariant()
    def correct_replicas_agree(self) -> None:
        for i in range(1, N):
            for seq, digest in self.commits[i].items():
                assert self.canonical[seq] == digest

    @invariant()
    def views_never_go_back(self) -> None:
        for i in range(1, N):
            assert self.replicas[i].view >= self.views[i]
            self.views[i] = self.replicas[i].view


TestPbftStateful = PbftMachine.TestCase
