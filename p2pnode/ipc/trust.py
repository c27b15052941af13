"""IPC methods of the trust ledger (part of the node's method table; docs/ipc.md, docs/trust.md).

``ledger.account``: one node's balance, stake, reputation, admission and journal entries.
``ledger.accounts``: every account, the total stake, the burned units and the ledger's digest.
``ledger.stake`` / ``ledger.transfer``: this node's signed transactions.
``gov.propose`` / ``gov.vote`` / ``gov.list`` / ``gov.params``: governance.
``evidence.list``: the evidence records the ledger keeps, with their penalties.
Amounts go in and out in *units* (``unit`` in every answer says how many make a token);
peers as base58 ids. Rewards, penalties and proposals are the ``trust`` topic of ``subscribe``.
A committed transaction the ledger refuses raises ``rejected`` with its reason.
"""

from __future__ import annotations

from typing import Any

from libp2p.peer.id import ID

from p2pnode.ipc.errors import InvalidParams, NetworkError, NotFound, Rejected
from p2pnode.ipc.params import param
from p2pnode.ipc.server import Method, Session
from p2pnode.trust.service import TrustError, TrustService, b58
from p2pnode_protocols.trust import (
    KINDS,
    SPECS,
    UNIT,
    EvidenceRecord,
    ProposalState,
    Propose,
    Stake,
    Transfer,
    Unstake,
    Vote,
)
from p2pnode_protocols.trust.transactions import MAX_AMOUNT

#: journal entries per answer at most.
MAX_ENTRIES = 1000


def _peer(text: object, name: str = "peer") -> bytes:
    if type(text) is not str:
        raise InvalidParams(f"{name} must be a base58 peer id")
    try:
        return ID.from_base58(text).to_bytes()
    except Exception:
        raise InvalidParams(f"{name}: {text!r} is not a peer id") from None


def _amount(params: dict[str, Any]) -> int:
    amount = param(params, "amount", int)
    if not 0 < amount <= MAX_AMOUNT:
        raise InvalidParams(f"amount must be in 1..{MAX_AMOUNT} units ({UNIT} units = 1 token)")
    return amount


def proposal_dict(p: ProposalState) -> dict[str, Any]:
    change = {
        k: [b58(x) for x in v] if isinstance(v, list) else v for k, v in sorted(p.change.items())
    }
    return {
        "id": p.id,
        "kind": p.kind,
        "change": change,
        "title": p.title,
        "proposer": b58(p.proposer),
        "status": p.status,
        "seq": p.seq,
        "deadline": p.deadline,
        "activates_at": p.activates_at,
        "yes": p.yes,
        "no": p.no,
        "voters": len(p.votes),
        "total_stake": p.total_stake or None,
    }


def evidence_dict(r: EvidenceRecord) -> dict[str, Any]:
    return {
        "id": r.id,
        "peer": b58(r.offender),
        "kind": r.kind,
        "ref": r.ref,
        "detail": r.detail,
        "penalty": r.penalty,
        "seq": r.seq,
        "expires": r.expires,
    }


def build_trust_methods(*, trust: TrustService | None) -> dict[str, Method]:
    """``trust`` is None without consensus: every method then answers ``not_found``."""

    def service() -> TrustService:
        if trust is None:
            raise NotFound("the trust ledger needs consensus: no consensus.validators configured")
        return trust

    async def commit(tx: Any) -> dict[str, Any]:
        try:
            r = await service().submit(tx)
        except TrustError as exc:
            raise NetworkError(str(exc)) from None
        if r["status"] != "ok":
            raise Rejected(f"the ledger refused it: {r['reason']}")
        return r

    def account_dict(node: bytes) -> dict[str, Any]:
        led = service().ledger
        a = led.peek(node)
        rep = led.reputation.get(node)
        return {
            "peer": b58(node),
            "balance": a.balance,
            "stake": a.stake,
            "earned": a.earned,
            "slashed": a.slashed,
            "nonce": a.nonce,
            "reliability": rep.reliability if rep else 0.5,
            "flagged": rep.flagged if rep else 0,
            "validator": node in led.committee,
            "trainer": led.admits(node, "trainer") or "admitted",
        }

    async def account(params: dict[str, Any], session: Session, rid: int) -> Any:
        svc = service()
        peer = param(params, "peer", str, None)
        node = svc.me if peer is None else _peer(peer)
        limit = param(params, "limit", int, 20)
        if not 0 <= limit <= MAX_ENTRIES:
            raise InvalidParams(f"limit must be in 0..{MAX_ENTRIES}")
        entries = [e for e in svc.ledger.entries if e.node == node][-limit:] if limit else []
        return {
            **account_dict(node),
            "unit": UNIT,
            "seq": svc.ledger.seq,
            "entries": [
                {
                    "seq": e.seq,
                    "reason": e.reason,
                    "balance": e.balance,
                    "stake": e.stake,
                    "ref": e.ref,
                    "detail": e.detail,
                }
                for e in entries
            ],
        }

    async def accounts(params: dict[str, Any], session: Session, rid: int) -> Any:
        led = service().ledger
        return {
            "accounts": [account_dict(n) for n in sorted(led.accounts)],
            "total_stake": led.total_stake(),
            "burned": led.burned,
            "digest": led.digest(),
            "seq": led.seq,
            "unit": UNIT,
        }

    async def stake(params: dict[str, Any], session: Session, rid: int) -> Any:
        amount = _amount(params)
        nonce = service().next_nonce()
        if param(params, "remove", bool, False):
            return await commit(Unstake(node=b"-", amount=amount, nonce=nonce))
        return await commit(Stake(node=b"-", amount=amount, nonce=nonce))

    async def transfer(params: dict[str, Any], session: Session, rid: int) -> Any:
        to = _peer(param(params, "to", str), "to")
        amount = _amount(params)
        return await commit(Transfer(node=b"-", to=to, amount=amount, nonce=service().next_nonce()))

    async def propose(params: dict[str, Any], session: Session, rid: int) -> Any:
        svc = service()
        kind = param(params, "kind", str)
        if kind not in KINDS:
            raise InvalidParams(f"kind must be one of {', '.join(KINDS)}")
        change = dict(param(params, "change", dict))
        for key in ("validators", "allowlist"):
            if key in change:
                if not isinstance(change[key], list):
                    raise InvalidParams(f"{key} must be a list of peer ids")
                change[key] = [_peer(p, key) for p in change[key]]
        title = param(params, "title", str, "")
        try:
            tx = Propose(node=b"-", kind=kind, change=change, title=title, nonce=svc.next_nonce())
            r = await commit(tx)
        except ValueError as exc:
            raise InvalidParams(str(exc)) from None
        p = next(
            (
                p
                for p in svc.ledger.proposals.values()
                if p.seq == r["seq"] and p.proposer == svc.me
            ),
            None,
        )
        return {**r, "proposal": proposal_dict(p) if p else None}

    async def vote(params: dict[str, Any], session: Session, rid: int) -> Any:
        svc = service()
        pid = param(params, "proposal", str)
        if pid not in svc.ledger.proposals:
            raise NotFound(f"no proposal {pid!r}")
        yes = param(params, "yes", bool)
        r = await commit(Vote(node=b"-", proposal=pid, yes=yes, nonce=svc.next_nonce()))
        return {**r, "proposal": proposal_dict(svc.ledger.proposals[pid])}

    async def gov_list(params: dict[str, Any], session: Session, rid: int) -> Any:
        led = service().ledger
        status = param(params, "status", str, None)
        props = sorted(led.proposals.values(), key=lambda p: (p.seq, p.id))
        return {
            "proposals": [proposal_dict(p) for p in props if status in (None, p.status)],
            "seq": led.seq,
        }

    async def gov_params(params: dict[str, Any], session: Session, rid: int) -> Any:
        led = service().ledger
        return {
            "params": dict(sorted(led.params.items())),
            "help": {k: s.help for k, s in sorted(SPECS.items())},
            "allowlist": [b58(n) for n in sorted(led.allowlist)],
            "committee": [b58(n) for n in led.committee],
            "unit": UNIT,
        }

    async def evidence_list(params: dict[str, Any], session: Session, rid: int) -> Any:
        led = service().ledger
        peer = param(params, "peer", str, None)
        node = None if peer is None else _peer(peer)
        records = sorted(led.evidence.values(), key=lambda r: (r.seq, r.id))
        return {"evidence": [evidence_dict(r) for r in records if node in (None, r.offender)]}

    return {
        "ledger.account": account,
        "ledger.accounts": accounts,
        "ledger.stake": stake,
        "ledger.transfer": transfer,
        "gov.propose": propose,
        "gov.vote": vote,
        "gov.list": gov_list,
        "gov.params": gov_params,
        "evidence.list": evidence_list,
    }
