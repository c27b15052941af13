"""``PbftChecker``: safety from effects, liveness at the end (TigerBeetle's ``StateChecker``).

Safety, checked on every effect of a correct replica:
- one digest per sequence number across all correct replicas, ever;
- each committed batch hashes to its digest, carries a valid 2f+1 certificate, and holds only
  requests that a simulated client really submitted;
- each replica commits in order (a repeat after restart must match; a jump needs a state install);
- one state digest per checkpoint seq among correct replicas' checkpoint votes and installs;
- a replica's view never goes back;
- a correct replica never signs two conflicting votes (pre-prepare, prepare, commit vote) for one
  (view, seq), across crashes and restarts: what it persisted must be enough to stay consistent.

- across committee epochs: a certificate is checked against the committee of its votes'
  epoch, and that epoch must order the seq (from its start, below the next epoch's start); no
  request executes twice (``ok``/``rejected`` at two seqs); an evidence ``AppTx`` verifies
  (``check_equivocation``) and names a Byzantine node.

Liveness (``pending``): every submitted request is committed at some seq that every correct
replica of the committee in force has reached.
"""

from __future__ import annotations

import cbor2

from p2pnode_protocols.pbft import (
    AppTx,
    Checkpoint,
    Commit,
    Committee,
    CommitVote,
    Message,
    Prepare,
    PrePrepare,
    RemoteProtocolError,
    Request,
    StateInstalled,
    Verifier,
    ViewEntered,
    batch_digest,
    check_certified_entry,
    check_equivocation,
    decode,
    decode_tx,
)
from p2pnode_protocols.pbft.messages import CertifiedEntry

__all__ = ["PbftChecker", "SafetyViolation"]


class SafetyViolation(AssertionError):
    """A correct replica did something PBFT promises it never does."""


class PbftChecker:
    def __init__(self, committee: Committee, verifier: Verifier, honest: list[bytes]) -> None:
        self._committee = committee
        self._verifier = verifier
        self.honest = set(honest)
        #: seq -> digest: the canonical history.
        self.canonical: dict[int, bytes] = {}
        self._checkpoints: dict[int, bytes] = {}
        self._reached: dict[bytes, int] = dict.fromkeys(honest, 0)
        self._views: dict[tuple[bytes, int], int] = {}
        #: epoch -> (committee, first seq it orders).
        self._epochs: dict[int, tuple[Committee, int]] = {committee.epoch: (committee, 1)}
        #: Byzantine nodes (the world sets them): evidence must name one of them.
        self.byzantine: set[bytes] = set()
        #: (client, request_id) -> the seq where it executed (not as a duplicate).
        self._executed: dict[tuple[bytes, int], int] = {}
        self._submitted: set[Request] = set()
        #: (client, request_id) -> seq of its first commit.
        self.committed_at: dict[tuple[bytes, int], int] = {}
        self.commits_seen = 0
        self._votes: dict[tuple[type, int, int, int, bytes], bytes] = {}

    def submitted(self, req: Request) -> None:
        self._submitted.add(req)

    def _fail(self, node: bytes, what: str) -> None:
        raise SafetyViolation(f"replica {node[-4:].hex()}: {what}")

    def on_commit(self, node: bytes, c: Commit) -> None:
        if node not in self.honest:
            return
        self.commits_seen += 1
        seq, digest = c.seq, c.entry.digest
        known = self.canonical.get(seq)
        if known is not None and known != digest:
            self._fail(node, f"committed {digest[:4].hex()} at {seq}, others {known[:4].hex()}")
        if known is None:
            # First time anyone commits seq: check everything about the entry once.
            if batch_digest(c.entry.batch) != digest:
                self._fail(node, f"batch at {seq} does not match its digest")
            ce = CertifiedEntry(entry=c.entry, certificate=c.certificate)
            try:
                check_certified_entry(self._committee_for(seq, c), self._verifier, ce)
            except Exception as exc:
                self._fail(node, f"bad certificate at {seq}: {exc}")
            for req in c.entry.batch:
                if req not in self._submitted:
                    self._fail(node, f"committed a request nobody submitted: {req!r}")
                self.committed_at.setdefault((req.client, req.request_id), seq)
                self._check_app(node, req)
            for r in c.results:
                if r.status == "duplicate":
                    continue
                first = self._executed.setdefault((r.client, r.request_id), seq)
                if first != seq:
                    self._fail(node, f"request {r.request_id} executed at {first} and {seq}")
            self.canonical[seq] = digest
        last = self._reached.get(node, seq - 1)
        if seq > last + 1:
            self._fail(node, f"committed {seq} after {last}: out of order")
        self._reached[node] = max(last, seq)

    def _committee_for(self, seq: int, c: Commit) -> Committee:
        votes = c.certificate.votes
        epoch = votes[0].epoch if votes else -1
        if epoch not in self._epochs:
            raise SafetyViolation(f"certificate at {seq} of unknown epoch {epoch}")
        committee, start = self._epochs[epoch]
        nxt = self._epochs.get(epoch + 1)
        if seq < start or (nxt is not None and seq >= nxt[1]):
            raise SafetyViolation(f"epoch {epoch} certified {seq} outside its range")
        return committee

    def _check_app(self, node: bytes, req: Request) -> None:
        try:
            tx = decode_tx(req.op)
        except RemoteProtocolError:
            return
        if not isinstance(tx, AppTx) or tx.app != "evidence":
            return
        first, second = cbor2.loads(tx.body)
        epoch = decode(first).epoch  # type: ignore[attr-defined]
        try:
            offender = check_equivocation(first, second, self._epochs[epoch][0], self._verifier)
        except RemoteProtocolError as exc:
            self._fail(node, f"committed evidence does not verify: {exc}")
        if offender not in self.byzantine:
            self._fail(node, "committed evidence names a correct node")

    def epoch_started(self, committee: Committee, start: int) -> None:
        """``committee`` orders entries from ``start`` on (its base is start - 1)."""
        self._epochs[committee.epoch] = (committee, start)

    def joined(self, node: bytes, base: int) -> None:
        """``node`` runs a replica of a new epoch from ``base``."""
        if node in self.byzantine:
            return
        self.honest.add(node)
        self._reached[node] = max(self._reached.get(node, 0), base)

    def left(self, node: bytes) -> None:
        """``node``'s replica stopped at a switch: liveness no longer waits for it."""
        self._reached.pop(node, None)

    def on_sent(self, node: bytes, msg: Message) -> None:
        """Every message a correct replica sends (its own, not ones it forwards)."""
        if node not in self.honest or not isinstance(msg, PrePrepare | Prepare | CommitVote):
            return
        if msg.sender != node:
            return
        key = (type(msg), msg.epoch, msg.view, msg.seq, node)
        known = self._votes.setdefault(key, msg.digest)
        if known != msg.digest:
            self._fail(node, f"signed two different {type(msg).__name__}s for {msg.view}/{msg.seq}")

    def on_install(self, node: bytes, s: StateInstalled) -> None:
        if node not in self.honest:
            return
        self._check_state(node, s.seq, s.state_digest)
        if node in self._reached:
            self._reached[node] = max(self._reached[node], s.seq)

    def on_checkpoint_vote(self, node: bytes, cp: Checkpoint) -> None:
        if node in self.honest:
            self._check_state(node, cp.seq, cp.state_digest)

    def _check_state(self, node: bytes, seq: int, digest: bytes) -> None:
        known = self._checkpoints.setdefault(seq, digest)
        if known != digest:
            self._fail(node, f"state at {seq} differs from another correct replica's")

    def on_view(self, node: bytes, epoch: int | None, v: ViewEntered) -> None:
        if node not in self.honest or epoch is None:
            return
        known = self._views.get((node, epoch), 0)
        if v.view < known:
            self._fail(node, f"view went back from {known} to {v.view}")
        self._views[(node, epoch)] = v.view

    def on_restart(self, node: bytes, epoch: int, durable_view: int) -> None:
        if node in self.honest and durable_view < self._views.get((node, epoch), 0):
            self._fail(node, "restarted in an older view than it had entered")

    def pending(self) -> list[str]:
        """What liveness still waits for (empty once converged)."""
        missing = []
        low = min(self._reached.values(), default=0)
        for req in self._submitted:
            seq = self.committed_at.get((req.client, req.request_id))
            if seq is None:
                missing.append(f"request {req!r} not committed")
            elif seq > low:
                lagging = [n[-4:].hex() for n, r in self._reached.items() if r < seq]
                missing.append(f"request at seq {seq} not reached by {lagging}")
        return sorted(missing)
