"""The trust service: submits this node's trust transactions and keeps the ledger's clock moving.

The trust ledger (:class:`~p2pnode_protocols.trust.TrustLedger`) is folded from the committed log
by the rounds service, in the same pass as the rounds ledger (the two must see every entry in
the same order: the rounds ledger asks the trust ledger who is admitted, and tells it what each
committed round earned). This service does what needs I/O around it:

- **transactions** of this node (stake, transfer, proposals, votes): signed with the node key,
  with a nonce above the last one, committed through consensus; :meth:`submit` waits until the
  fold has applied it and returns the ledger's verdict.
- **ticks**: while a proposal is open or waits for its epoch boundary, a validator commits an
  empty ``Tick`` each ``trust.tick_interval`` in which the log did not move, so deadlines pass on
  a quiet swarm.
- **accusations**: each equivocation the local PBFT replica saw (two conflicting messages
  signed by one validator) becomes an ``Accuse`` transaction carrying both messages.
- **committee changes**: when a passed proposal to change the committee takes effect, each
  validator in force votes the new committee into PBFT (``ConsensusService.vote_committee``);
  the switch happens when a quorum voted.
- **events**: every journal entry, evidence record and proposal change is published on the
  ``trust`` topic.

Errors: a transaction that does not commit in ``trust.commit_timeout`` raises
:class:`TrustError`; a rejected one returns its reason. Background loops log and retry.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import trio
from libp2p.crypto.keys import KeyPair
from libp2p.peer.id import ID

from p2pnode.config.trust_schema import parse_genesis, parse_params
from p2pnode.network.signing import Ed25519Signer
from p2pnode_protocols.pbft import AppTx, Committee
from p2pnode_protocols.pbft import encode as encode_message
from p2pnode_protocols.pbft import encode_tx as encode_pbft_tx
from p2pnode_protocols.signing import Verifier
from p2pnode_protocols.trust import (
    APP,
    UNIT,
    Accuse,
    Entry,
    EvidenceRecord,
    ProposalState,
    Tick,
    TrustLedger,
    encode_tx,
    sign_tx,
)
from p2pnode_protocols.trust.transactions import SignedTx

log = logging.getLogger(__name__)

__all__ = ["TrustError", "TrustService", "event_of", "make_ledger"]

#: equivocations waiting to be turned into accusations; more are dropped (PBFT repeats them).
ACCUSE_QUEUE = 64


class TrustError(Exception):
    """A trust transaction could not be carried out (no consensus, not committed in time)."""


def b58(node: bytes) -> str:
    try:
        return ID(node).to_base58()
    except Exception:
        return node.hex()


def make_ledger(cfg: Any, verifier: Verifier, listener: Any = None) -> TrustLedger:
    """The genesis ledger of this swarm, from settings that are the same on every node."""
    genesis: dict[bytes, int] = {}
    for peer in cfg.consensus.validators:
        genesis[ID.from_base58(peer).to_bytes()] = round(cfg.trust.validator_stake * UNIT)
    for peer, tokens in parse_genesis(cfg.trust.genesis).items():
        node = ID.from_base58(peer).to_bytes()
        genesis[node] = genesis.get(node, 0) + round(tokens * UNIT)
    committee = tuple(ID.from_base58(v).to_bytes() for v in cfg.consensus.validators)
    return TrustLedger(
        verifier=verifier,
        committee=committee,
        genesis=genesis,
        params=parse_params(cfg.trust.params),
        listener=listener,
    )


def event_of(item: object) -> dict[str, Any]:
    """A ledger change as a ``trust`` topic event (peer ids in base58, amounts in units)."""
    if isinstance(item, Entry):
        return {
            "event": item.reason,
            "peer": b58(item.node),
            "balance": item.balance,
            "stake": item.stake,
            "ref": item.ref,
            "detail": item.detail,
            "seq": item.seq,
        }
    if isinstance(item, EvidenceRecord):
        return {
            "event": "evidence",
            "id": item.id,
            "peer": b58(item.offender),
            "kind": item.kind,
            "ref": item.ref,
            "penalty": item.penalty,
            "seq": item.seq,
        }
    assert isinstance(item, ProposalState)
    return {"event": "proposal", "id": item.id, "kind": item.kind, "status": item.status}


class TrustService:
    def __init__(
        self,
        key_pair: KeyPair,
        cfg: Any,
        *,
        consensus: Any,
        ledger: TrustLedger,
        events: Any = None,
        on_params: Callable[[Mapping[str, int | float]], None] | None = None,
    ) -> None:
        """``on_params`` is called with the parameters in force at start and whenever they
        changed (the node applies the rate limits that need a clock: membership's)."""
        self.cfg = cfg.trust
        self._on_params = on_params
        self._params_seen: dict[str, int | float] = {}
        self.consensus = consensus
        self.ledger = ledger
        self.events = events
        self.signer = Ed25519Signer(key_pair)
        self.me = self.signer.node_id
        self.counters: Counter[str] = Counter()
        self._nonce = 0
        self._voted: set[str] = set()
        self._accused: set[tuple[bytes, str]] = set()
        self._send_evidence, self._evidence = trio.open_memory_channel[Any](ACCUSE_QUEUE)
        consensus.evidence_listeners.append(self._on_evidence)

    def publish(self, item: object) -> None:
        """The ledger's listener: every change becomes an event of the ``trust`` topic."""
        if self.events is not None:
            self.events.publish("trust", event_of(item))

    # -- lifecycle -----------------------------------------------------------------------------

    async def run(
        self, *, task_status: trio.TaskStatus[TrustService] = trio.TASK_STATUS_IGNORED
    ) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._tick_loop)
            nursery.start_soon(self._accuse_loop)
            task_status.started(self)

    # -- transactions ----------------------------------------------------------------------------

    def next_nonce(self) -> int:
        """Above this node's last committed nonce and every nonce this process handed out: a
        restarted node (its counter gone) still never reuses one."""
        self._nonce = max(
            self._nonce + 1, self.ledger.peek(self.me).nonce + 1, time.time_ns() // 1000
        )
        return self._nonce

    async def submit(
        self, tx: SignedTx | Accuse | Tick, timeout: float | None = None
    ) -> dict[str, Any]:
        """Commit ``tx`` (signed here as this node if it acts for a node) and wait for the
        ledger's verdict: ``{"seq", "status": "ok" | "rejected", "reason"}``."""
        if not isinstance(tx, Accuse | Tick):
            tx = sign_tx(self.signer, tx)
        body = encode_tx(tx)
        timeout = self.cfg.commit_timeout if timeout is None else timeout
        with trio.move_on_after(timeout):
            try:
                await self.consensus.submit(encode_pbft_tx(AppTx(app=APP, body=body)), timeout)
            except Exception as exc:  # ConsensusError: stopped or not committed in time
                raise TrustError(str(exc)) from None
            # The rounds service folds the entry just after its commit; the ledger is pure and
            # signals nothing, so look again shortly.
            while (verdict := self.ledger.verdict(body)) is None:  # noqa: ASYNC110
                await trio.sleep(0.02)
            seq, reason = verdict
            self.counters["submitted" if not reason else "rejected"] += 1
            return {"seq": seq, "status": "rejected" if reason else "ok", "reason": reason or None}
        raise TrustError(f"not applied within {timeout:g} s (it may still commit)")

    # -- background ------------------------------------------------------------------------------

    def _validator(self) -> bool:
        committee: Committee = self.consensus.committee
        return committee.is_member(self.me)

    def _needs_ticks(self) -> bool:
        return any(p.status in ("open", "passed") for p in self.ledger.proposals.values())

    async def _tick_loop(self) -> None:
        last_top = -1
        while True:
            await trio.sleep(self.cfg.tick_interval)
            try:
                self._check_params()
                await self._vote_committees()
                top = self.consensus.log_top
                if self._validator() and self._needs_ticks() and top == last_top:
                    await self.submit(Tick(), timeout=max(5.0, 4 * self.cfg.tick_interval))
                    self.counters["ticks"] += 1
                last_top = self.consensus.log_top
            except TrustError as exc:
                log.debug("trust tick: %s", exc)

    def _check_params(self) -> None:
        if self._on_params is not None and self.ledger.params != self._params_seen:
            self._params_seen = dict(self.ledger.params)
            self._on_params(self._params_seen)

    async def _vote_committees(self) -> None:
        for p in list(self.ledger.enacted):
            if p.id in self._voted or not self._validator():
                continue
            validators = tuple(p.change["validators"])
            if validators == self.consensus.committee.validators:
                self._voted.add(p.id)  # in force already: a validator that joined by it
                continue
            epoch = self.consensus.committee.epoch + 1
            log.info(
                "governance: voting committee of %d validators (epoch %d) in",
                len(validators),
                epoch,
            )
            try:
                await self.consensus.vote_committee(epoch, validators)
            except Exception as exc:
                log.warning("committee vote for proposal %s failed: %s; retrying", p.id, exc)
                return
            self._voted.add(p.id)

    def _on_evidence(self, e: Any) -> None:
        """A PBFT ``Evidence`` from the local replica (consensus calls this synchronously)."""
        slot = type(e.first).__name__ + str(getattr(e.first, "seq", ""))
        tx = Accuse(
            kind="equivocation", first=encode_message(e.first), second=encode_message(e.second)
        )
        self._queue((e.offender, slot), tx)

    def accuse_unsolicited(self, job: str, rnd: int, node: bytes, notice: bytes) -> None:
        """The rounds machine's ``Unsolicited`` evidence: ``node`` signed ``notice`` for round
        ``rnd`` of ``job`` without a task in it."""
        self._queue((node, f"{job}/{rnd}"), Accuse(kind="unsolicited", first=notice, second=b""))

    def _queue(self, key: tuple[bytes, str], tx: Accuse) -> None:
        if key in self._accused:
            return
        try:
            self._send_evidence.send_nowait((key, tx))
        except trio.WouldBlock:
            self.counters["evidence_dropped"] += 1
            return
        self._accused.add(key)

    async def _accuse_loop(self) -> None:
        async for key, tx in self._evidence:
            try:
                r = await self.submit(tx)
            except TrustError as exc:
                log.warning("accusation of %s not committed: %s", b58(key[0]), exc)
                self._accused.discard(key)
                continue
            self.counters["accusations"] += 1
            log.warning(
                "accused %s (%s, %s): %s", b58(key[0]), tx.kind, key[1], r["reason"] or "ok"
            )
