"""The trust ledger: balances, stakes, rewards, penalties, evidence and governance, folded from
the committed log in order, deterministically.

Every node folds the same committed entries into the same ledger: its own trust transactions
(``AppTx(app="trust")``, :meth:`TrustLedger.apply`) and the rounds the rounds ledger commits
(:meth:`TrustLedger.round_committed`, called from inside the rounds ledger's commit). Nothing is
read but the entries, in log order: no clock, no randomness, sorted iteration only, and amounts
are integer units, so replaying the log on a fresh node reproduces every balance exactly.

Rewards, per committed round (docs/trust.md):

- each trainer whose update entered the model (not an outlier, not flagged) earns
  ``base_reward x quality x (1 + reliability_bonus x reliability)``, where ``quality`` is
  ``1 + quality_multiplier x (its share of the round's total contribution score x contributors
  - 1)``, clamped to ``[0, 1 + quality_multiplier]`` (an average contribution is 1);
- each validator whose attestation is in the commit earns ``validator_reward``.

Penalties: every flag of a committed result, every ``outlier_limit`` outlier flags within a
node's last ``outlier_window`` delivered rounds, and every proven equivocation takes
``slashing_rate`` of the offender's holdings (stake first, then balance; the units are burned),
once per offence, and lowers its reputation. An accusation whose evidence does not check is
rejected and changes nothing.

The ledger answers the rounds ledger's questions (``admits``, ``param``) from the same state:
roles and the admission policy (allowlist, ``min_stake``, ``reputation_threshold``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import cbor2

from p2pnode_protocols.machine import RemoteProtocolError
from p2pnode_protocols.rounds.messages import UpdateNotice, decode_message
from p2pnode_protocols.signing import Verifier

from .accounts import Account, Entry, Reputation
from .evidence import EvidenceRecord, check_equivocation, evidence_id
from .governance import ProposalState, boundary_after, check_change
from .params import DEFAULTS
from .transactions import (
    Accuse,
    Propose,
    Stake,
    Tick,
    Transfer,
    Unstake,
    Vote,
    decode_tx,
    proposal_id,
    verify_tx,
)

__all__ = ["TrustLedger"]

#: journal entries and closed proposals kept in memory (the log keeps them all).
MAX_ENTRIES = 100_000
MAX_CLOSED = 1_000
#: verdicts of recent transactions kept for their submitters.
MAX_VERDICTS = 4096


class TrustLedger:
    def __init__(
        self,
        *,
        verifier: Verifier,
        committee: tuple[bytes, ...],
        genesis: Mapping[bytes, int] = {},
        params: Mapping[str, int | float] | None = None,
        listener: Callable[[object], None] | None = None,
    ) -> None:
        """``genesis``: the stake every node starts with (the swarm's config; the same on every
        node). ``listener`` is told of every journal entry, evidence record and proposal change
        as it happens (the service publishes them as events)."""
        self.verifier = verifier
        self.committee = tuple(committee)
        #: the committee of each epoch so far (PBFT numbers epochs 0, 1, ...: one per switch):
        #: an equivocation is checked against the committee of its messages' epoch.
        self.committees: list[tuple[bytes, ...]] = [self.committee]
        self.params: dict[str, int | float] = dict(DEFAULTS)
        self.params.update(params or {})
        self.allowlist: frozenset[bytes] = frozenset()
        self.accounts: dict[bytes, Account] = {}
        self.reputation: dict[bytes, Reputation] = {}
        self.entries: list[Entry] = []
        self.evidence: dict[str, EvidenceRecord] = {}
        self.proposals: dict[str, ProposalState] = {}
        #: committee changes that took effect here and wait for the validators' PBFT votes.
        self.enacted: list[ProposalState] = []
        #: seq -> node: stake locked by votes on open proposals, until their deadline.
        self._locked: dict[bytes, int] = {}
        self.seq = 0
        self.burned = 0
        self._verdicts: dict[bytes, tuple[int, str]] = {}
        self._rounds: Any = None
        self._listener = listener
        for node, stake in sorted(genesis.items()):
            if stake > 0:
                self.account(node).stake += stake
                self._journal(Entry(0, node, 0, stake, "genesis", "genesis"))

    # -- reading ---------------------------------------------------------------------------------

    def account(self, node: bytes) -> Account:
        acct = self.accounts.get(node)
        if acct is None:
            acct = self.accounts[node] = Account()
        return acct

    def peek(self, node: bytes) -> Account:
        return self.accounts.get(node) or Account()

    def rep(self, node: bytes) -> Reputation:
        rep = self.reputation.get(node)
        if rep is None:
            rep = self.reputation[node] = Reputation()
        return rep

    def total_stake(self) -> int:
        return sum(a.stake for a in self.accounts.values())

    def digest(self) -> str:
        """A hash of every account, reputation and parameter: equal on nodes that folded the same
        log (what the replay test and ``p2pnode ledger`` compare)."""
        body = [
            sorted(
                [k, a.balance, a.stake, a.nonce, a.earned, a.slashed]
                for k, a in self.accounts.items()
            ),
            sorted(
                [k, r.assigned, r.delivered, r.flagged, r.score_sum]
                for k, r in self.reputation.items()
            ),
            sorted(self.params.items()),
            sorted(self.allowlist),
            sorted(self.evidence),
            self.burned,
        ]
        return hashlib.sha256(cbor2.dumps(body, canonical=True)).hexdigest()

    # -- the rounds ledger's questions (TrustHooks) ------------------------------------------------

    def admits(self, node: bytes, role: str) -> str:
        if role == "validator":
            return "" if node in self.committee else "not a validator of the committee in force"
        if role != "trainer":
            return ""
        if self.allowlist and node not in self.allowlist:
            return "not on the admission allowlist"
        stake = self.peek(node).stake
        if stake < self.params["min_stake"]:
            return f"stake {stake} below the minimum {self.params['min_stake']}"
        rel = self.reputation[node].reliability if node in self.reputation else 0.5
        if rel < self.params["reputation_threshold"]:
            return f"reputation {rel:.2f} below the threshold {self.params['reputation_threshold']}"
        return ""

    def param(self, name: str) -> int | float | None:
        return self.params.get(name)

    def set_committee(self, committee: Iterable[bytes]) -> None:
        """The committee in force changed (a PBFT committee switch took effect)."""
        committee = tuple(committee)
        if committee != self.committee:
            self.committee = committee
            self.committees.append(committee)
            # A switch supersedes every committee change still waiting for votes.
            self.enacted.clear()

    # -- folding ---------------------------------------------------------------------------------

    def advance(self, seq: int) -> None:
        """Everything due at or before entry ``seq``: tallies of proposals whose deadline passed,
        passed proposals whose epoch boundary came, evidence past its time. Called before each
        entry's transactions apply; lazily (at the next trust-related entry) gives the same state,
        since nothing that is due depends on the entries in between."""
        if seq <= self.seq:
            return
        self.seq = seq
        for p in sorted(self.proposals.values(), key=lambda p: (p.deadline, p.id)):
            if p.status == "open" and p.deadline < seq:
                self._tally(p)
        for p in sorted(self.proposals.values(), key=lambda p: (p.activates_at or 0, p.id)):
            if p.status == "passed" and p.activates_at is not None and p.activates_at <= seq:
                self._enact(p)
        for eid in [e for e, r in self.evidence.items() if r.expires < seq]:
            del self.evidence[eid]
        self._locked = {n: d for n, d in self._locked.items() if d >= seq}

    def apply(self, seq: int, body: bytes) -> str:
        """Apply the trust transaction ``body`` committed at ``seq``: "" or why it was rejected
        (then nothing changed). The verdict is kept a while under the body's hash
        (:meth:`verdict`), so whoever submitted it can learn what became of it."""
        reason = self._apply(seq, body)
        self._verdicts[hashlib.sha256(body).digest()] = (seq, reason)
        while len(self._verdicts) > MAX_VERDICTS:
            del self._verdicts[next(iter(self._verdicts))]
        return reason

    def verdict(self, body: bytes) -> tuple[int, str] | None:
        """(seq, "" or the reason it was rejected) of a recently applied ``body``."""
        return self._verdicts.get(hashlib.sha256(body).digest())

    def _apply(self, seq: int, body: bytes) -> str:
        self.advance(seq)
        try:
            tx = decode_tx(body)
        except RemoteProtocolError as exc:
            return str(exc)
        if isinstance(tx, Tick):
            return ""
        if isinstance(tx, Accuse):
            return self._accuse(seq, tx)
        if not verify_tx(tx, self.verifier):
            return "the signature does not verify"
        acct = self.peek(tx.node)
        if tx.nonce <= acct.nonce:
            return f"nonce {tx.nonce} is not above the node's last {acct.nonce}"
        if isinstance(tx, Stake | Unstake | Transfer):
            reason = self._move(seq, tx)
        elif isinstance(tx, Propose):
            reason = self._propose(seq, tx, body)
        else:
            reason = self._vote(tx)
        if not reason:
            self.account(tx.node).nonce = tx.nonce
        return reason

    def round_committed(
        self, seq: int, job: Any, result: Any, attesters: tuple[bytes, ...]
    ) -> None:
        """Rewards and penalties of a committed round (the rounds ledger calls it, in order)."""
        self.advance(seq)
        ref = f"{job.id}/{result.round}"
        flags = {f.node: f for f in getattr(result, "flags", ())}
        outliers = set(result.outliers)
        scores = dict(result.scores)
        for node in sorted(job.assigned.get(result.round, ())):
            self.rep(node).assigned += 1
        delivered = sorted({u.node for u in result.updates})
        for node in delivered:
            rep = self.rep(node)
            rep.delivered += 1
            # an update flagged for something else is penalised for that, not again as an outlier
            rep.recent.append((ref, seq, node in outliers and node not in flags))
            while len(rep.recent) > self.params["outlier_window"]:
                rep.recent.popleft()
        paid = [n for n in sorted(result.contributors) if n not in flags and n not in outliers]
        total = sum(abs(scores.get(n, 0.0)) for n in paid)
        qm = float(self.params["quality_multiplier"])
        rb = float(self.params["reliability_bonus"])
        base = int(self.params["base_reward"])
        for node in paid:
            rep = self.rep(node)
            score = scores.get(node, 0.0)
            rep.score_sum += score
            share = score / total * len(paid) if total > 0 else 1.0
            quality = min(1.0 + qm, max(0.0, 1.0 + qm * (share - 1.0)))
            amount = round(base * quality * (1.0 + rb * rep.reliability))
            detail = f"quality {quality:.3f}, reliability {rep.reliability:.3f}"
            self._credit(seq, node, amount, "reward", ref, detail)
        for v in sorted(set(attesters)):
            self._credit(seq, v, int(self.params["validator_reward"]), "validator_reward", ref)
        for node in sorted(flags):
            f = flags[node]
            self.rep(node).flagged += 1
            self._slash(seq, node, f.kind, ref, f.detail or f.kind)
        for node in delivered:
            rep = self.rep(node)
            hits = [r for r in rep.recent if r[2]]
            if node in outliers and node not in flags and len(hits) >= self.params["outlier_limit"]:
                rep.flagged += 1
                detail = "outlier in " + ", ".join(f"{r[0]} (seq {r[1]})" for r in hits)
                self._slash(seq, node, "outliers", ref, detail)
                rep.recent.clear()

    # -- transactions ----------------------------------------------------------------------------

    def _move(self, seq: int, tx: Stake | Unstake | Transfer) -> str:
        acct = self.account(tx.node)
        if isinstance(tx, Stake):
            if tx.amount > acct.balance:
                return f"balance {acct.balance} is less than {tx.amount}"
            acct.balance -= tx.amount
            acct.stake += tx.amount
            self._journal(Entry(seq, tx.node, -tx.amount, tx.amount, "stake", "self"))
        elif isinstance(tx, Unstake):
            if tx.amount > acct.stake:
                return f"stake {acct.stake} is less than {tx.amount}"
            if tx.node in self._locked:
                return f"stake is locked by a vote until entry {self._locked[tx.node]}"
            acct.stake -= tx.amount
            acct.balance += tx.amount
            self._journal(Entry(seq, tx.node, tx.amount, -tx.amount, "unstake", "self"))
        else:
            if tx.amount > acct.balance:
                return f"balance {acct.balance} is less than {tx.amount}"
            if tx.to == tx.node:
                return "a transfer goes to another node"
            acct.balance -= tx.amount
            self.account(tx.to).balance += tx.amount
            self._journal(Entry(seq, tx.node, -tx.amount, 0, "transfer", tx.to.hex()))
            self._journal(Entry(seq, tx.to, tx.amount, 0, "transfer", tx.node.hex()))
        return ""

    def _propose(self, seq: int, tx: Propose, body: bytes) -> str:
        stake = self.peek(tx.node).stake
        if stake < self.params["min_proposal_stake"]:
            return f"stake {stake} below the {self.params['min_proposal_stake']} a proposer needs"
        reason = check_change(tx.kind, tx.change, self.committee)
        if reason:
            return reason
        pid = proposal_id(body)
        if pid in self.proposals:
            return "proposal exists"
        p = ProposalState(
            id=pid,
            proposer=tx.node,
            kind=tx.kind,
            change=dict(tx.change),
            title=tx.title,
            seq=seq,
            deadline=seq + int(self.params["voting_period"]),
        )
        self.proposals[pid] = p
        self._tell(p)
        return ""

    def _vote(self, tx: Vote) -> str:
        p = self.proposals.get(tx.proposal)
        if p is None:
            return "no such proposal"
        if p.status != "open" or self.seq > p.deadline:
            return f"proposal is {p.status if p.status != 'open' else 'past its deadline'}"
        if tx.node in p.votes:
            return "this node has voted on the proposal"
        weight = self.peek(tx.node).stake
        if weight <= 0:
            return "a voter needs stake"
        p.votes[tx.node] = (tx.yes, weight)
        if tx.yes:
            p.yes += weight
        else:
            p.no += weight
        self._locked[tx.node] = max(self._locked.get(tx.node, 0), p.deadline)
        return ""

    def bind_rounds(self, rounds: Any) -> None:
        """The rounds ledger folded beside this one (its ``jobs``): an unsolicited notice is
        checked against the committed tasks it holds."""
        self._rounds = rounds

    def _accuse(self, seq: int, tx: Accuse) -> str:
        if tx.kind == "unsolicited":
            return self._accuse_unsolicited(seq, tx)
        try:
            offender, slot = check_equivocation(tx.first, tx.second, self.committees, self.verifier)
        except RemoteProtocolError as exc:
            return str(exc)
        if evidence_id("equivocation", offender, slot) in self.evidence:
            return "this equivocation was penalised already"
        self.rep(offender).flagged += 1
        self._slash(seq, offender, "equivocation", slot, "two conflicting signed messages")
        return ""

    def _accuse_unsolicited(self, seq: int, tx: Accuse) -> str:
        if self._rounds is None:
            return "no rounds ledger to check the tasks against"
        try:
            notice = decode_message(tx.first)
        except RemoteProtocolError as exc:
            return f"evidence does not decode: {exc}"
        if not isinstance(notice, UpdateNotice):
            return "evidence of an unsolicited update must be an update notice"
        u = notice.update
        job = self._rounds.jobs.get(notice.job)
        if job is None:
            return "no such job"
        if not u.verify(notice.job, self.verifier):
            return "the notice's signature does not verify"
        assigned = job.assigned.get(u.round)
        if assigned is None:
            return "the round's tasks are not known here (not started, or long past)"
        if u.node in assigned:
            return "the node had a task in that round"
        ref = f"{job.id}/{u.round}"
        if evidence_id("unsolicited", u.node, ref) in self.evidence:
            return "this unsolicited update was penalised already"
        self.rep(u.node).flagged += 1
        self._slash(seq, u.node, "unsolicited", ref, "an update notice for a round without a task")
        return ""

    # -- governance ------------------------------------------------------------------------------

    def _tally(self, p: ProposalState) -> None:
        p.total_stake = self.total_stake()
        voted = p.yes + p.no
        if voted == 0 or voted < self.params["gov_quorum"] * p.total_stake:
            p.status = "expired"
        elif p.yes > self.params["gov_threshold"] * voted:
            p.status = "passed"
            p.activates_at = boundary_after(p.deadline, int(self.params["epoch_length"]))
        else:
            p.status = "rejected"
        self._tell(p)
        self._trim_closed()

    def _enact(self, p: ProposalState) -> None:
        if p.kind == "param":
            self.params.update(p.change)
        elif p.kind == "admission":
            for name in ("min_stake", "reputation_threshold"):
                if name in p.change:
                    self.params[name] = p.change[name]
            if "allowlist" in p.change:
                self.allowlist = frozenset(p.change["allowlist"])
        else:
            self.enacted.append(p)
        p.status = "enacted"
        self._tell(p)

    def _trim_closed(self) -> None:
        closed = [
            p for p in self.proposals.values() if p.status in ("expired", "rejected", "enacted")
        ]
        for p in sorted(closed, key=lambda p: (p.seq, p.id))[: max(0, len(closed) - MAX_CLOSED)]:
            del self.proposals[p.id]

    # -- accounts --------------------------------------------------------------------------------

    def _credit(
        self, seq: int, node: bytes, amount: int, reason: str, ref: str, detail: str = ""
    ) -> None:
        if amount <= 0:
            return
        acct = self.account(node)
        acct.balance += amount
        acct.earned += amount
        self._journal(Entry(seq, node, amount, 0, reason, ref, detail))

    def _slash(self, seq: int, node: bytes, kind: str, ref: str, detail: str) -> None:
        eid = evidence_id(kind, node, ref)
        if eid in self.evidence:
            return
        acct = self.account(node)
        penalty = int((acct.stake + acct.balance) * float(self.params["slashing_rate"]))
        from_stake = min(acct.stake, penalty)
        from_balance = penalty - from_stake
        acct.stake -= from_stake
        acct.balance -= from_balance
        acct.slashed += penalty
        self.burned += penalty
        record = EvidenceRecord(
            id=eid,
            seq=seq,
            offender=node,
            kind=kind,
            ref=ref,
            detail=detail,
            penalty=penalty,
            expires=seq + int(self.params["evidence_ttl"]),
        )
        self.evidence[eid] = record
        self._journal(
            Entry(seq, node, -from_balance, -from_stake, "slash", eid, f"{kind}: {detail}")
        )
        self._tell(record)

    def _journal(self, entry: Entry) -> None:
        self.entries.append(entry)
        if len(self.entries) > MAX_ENTRIES:
            del self.entries[: len(self.entries) - MAX_ENTRIES]
        self._tell(entry)

    def _tell(self, item: object) -> None:
        if self._listener is not None:
            self._listener(item)
