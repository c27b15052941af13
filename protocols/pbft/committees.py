"""Which committee orders and certifies each entry of the log (seam 1 of issue 17).

``CommitteeSchedule`` folds committed entries in order with the replicated state machine's own
``execute_batch`` (so it counts committee votes exactly as the replicas do) and remembers where
each epoch starts. Any node that holds the committed log, validator or follower, answers
``committee_at(seq)`` the same way, and checks a certificate of entry ``seq`` against it.

Pure: no I/O, no clock. The schedule keeps the whole ledger state of the last observed entry
(the new epoch's replica starts from it), and one (start seq, committee) pair per epoch.
"""

from __future__ import annotations

from p2pnode_protocols.signing import Verifier

from .config import Committee, PbftConfig
from .errors import LocalProtocolError
from .messages import Request
from .statemachine import LedgerState, activation_seq, execute_batch, genesis

__all__ = ["CommitteeSchedule"]


class CommitteeSchedule:
    """Folds the committed log; answers which committee orders entry ``seq``.

    ``verifier`` checks committee votes (the daemon's Ed25519 verifier); ``config`` must carry
    the swarm's checkpoint interval and window (they fix the activation seq)."""

    def __init__(
        self,
        genesis_committee: Committee,
        *,
        verifier: Verifier,
        config: PbftConfig | None = None,
    ) -> None:
        self._verifier = verifier
        self._config = config if config is not None else PbftConfig()
        self.state: LedgerState = genesis(genesis_committee)
        #: (first seq, committee) per epoch, in order, and the state each epoch starts from.
        self._epochs: list[tuple[int, Committee]] = [(1, genesis_committee)]
        self._bases: dict[int, LedgerState] = {genesis_committee.epoch: self.state}

    @property
    def last(self) -> int:
        """The last observed seq."""
        return self.state.seq

    @property
    def current(self) -> Committee:
        """The committee that orders the next entry (``last + 1``)."""
        return self.state.committee

    @property
    def pending(self) -> tuple[Committee, int] | None:
        """A committed change and the seq from which it orders entries, if one is waiting."""
        return self.state.pending

    @property
    def epochs(self) -> tuple[tuple[int, Committee], ...]:
        """Every epoch seen so far: (first seq, committee)."""
        return tuple(self._epochs)

    def observe(self, seq: int, batch: tuple[Request, ...]) -> Committee | None:
        """Fold committed entry ``seq`` (strictly in order). Returns the new committee when
        this entry was the last of its epoch (the switch takes effect from ``seq + 1``)."""
        if seq != self.state.seq + 1:
            raise LocalProtocolError(
                f"entries are observed in order: {self.state.seq + 1}, not {seq}"
            )
        before = self.state.committee
        self.state, _ = execute_batch(
            self.state, seq, batch, verifier=self._verifier, config=self._config
        )
        if self.state.committee.epoch == before.epoch:
            return None
        self._epochs.append((seq + 1, self.state.committee))
        self._bases[self.state.committee.epoch] = self.state
        return self.state.committee

    def committee_at(self, seq: int) -> Committee:
        """The committee that orders (and certifies) entry ``seq``: known for every seq up to
        ``last + 1``, and beyond while a change is pending."""
        if seq < 1:
            raise LocalProtocolError("seqs start at 1")
        if seq > self.state.seq + 1:
            pend = self.state.pending
            if pend is not None:
                return pend[0] if seq >= pend[1] else self.state.committee
            # A change voted in a later entry activates at activation_seq(last + 1) or after.
            if seq >= activation_seq(self.state.seq + 1, self._config):
                raise LocalProtocolError(f"the committee at {seq} is not known yet")
            return self.state.committee
        for start, committee in reversed(self._epochs):
            if seq >= start:
                return committee
        raise AssertionError("the genesis epoch starts at 1")

    def committee_of(self, epoch: int) -> Committee:
        """The committee of ``epoch`` (started, or pending): the one whose members' signed
        messages of that epoch count, e.g. to check equivocation evidence."""
        for _, committee in self._epochs:
            if committee.epoch == epoch:
                return committee
        pend = self.state.pending
        if pend is not None and pend[0].epoch == epoch:
            return pend[0]
        raise LocalProtocolError(f"epoch {epoch} is not known")

    def base_of(self, epoch: int) -> LedgerState:
        """The state ``epoch`` starts from: its replicas' ``base`` (genesis for the first)."""
        base = self._bases.get(epoch)
        if base is None:
            raise LocalProtocolError(f"epoch {epoch} has not started")
        return base

    def start_of(self, epoch: int) -> int:
        """The first seq ordered by ``epoch``'s committee (known once it took over)."""
        for start, committee in self._epochs:
            if committee.epoch == epoch:
                return start
        raise LocalProtocolError(f"epoch {epoch} has not started")
