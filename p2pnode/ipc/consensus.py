"""IPC methods of the consensus service (merged into the node's method table; docs/ipc.md).

``consensus.submit``: commit one transaction, return its seq and certificate.
``consensus.status``: role, view, primary, last committed, stable checkpoint, committee.
``consensus.log``: committed entries in a seq range, with certificates.
``consensus.vote_committee``: this validator's signed vote for the next committee (``epoch``,
``validators`` as peer ids); the change is made when 2f+1 members of the committee in force vote
the same (the trust service's governance calls the service directly).
Commits and view changes are the ``commits`` topic of ``subscribe``.
"""

from __future__ import annotations

from typing import Any

from libp2p.peer.id import ID

from p2pnode.consensus.service import ConsensusError, ConsensusService, b58, certificate_dict
from p2pnode.ipc.errors import InvalidParams, NetworkError, NotFound
from p2pnode.ipc.params import param
from p2pnode.ipc.server import Method, Session
from p2pnode_protocols.pbft import (
    AppTx,
    KvPut,
    Noop,
    RemoteProtocolError,
    SetCommittee,
    decode_tx,
    encode_tx,
)
from p2pnode_protocols.pbft.messages import MAX_OP_BYTES

#: Entries per consensus.log call.
MAX_LOG_ROWS = 256


def tx_dict(op: bytes) -> dict[str, Any]:
    try:
        tx = decode_tx(op)
    except RemoteProtocolError:
        return {"type": "invalid", "op": op}
    if isinstance(tx, Noop):
        return {"type": "noop"}
    if isinstance(tx, KvPut):
        return {"type": "kv_put", "key": tx.key, "value": tx.value}
    if isinstance(tx, AppTx):
        return {"type": "app", "app": tx.app, "body": tx.body}
    assert isinstance(tx, SetCommittee)
    return {
        "type": "set_committee",
        "epoch": tx.epoch,
        "validators": [b58(v) for v in tx.validators],
        "voter": b58(tx.voter),
    }


def op_from_params(params: dict[str, Any]) -> bytes:
    """``op`` (encoded transaction bytes) or ``tx`` ({"type": "kv_put", "key", "value"} or
    {"type": "noop"})."""
    op = param(params, "op", bytes, None)
    tx = param(params, "tx", dict, None)
    if (op is None) == (tx is None):
        raise InvalidParams("give exactly one of 'op' or 'tx'")
    if op is not None:
        if len(op) > MAX_OP_BYTES:
            raise InvalidParams(f"op is larger than {MAX_OP_BYTES} bytes")
        try:
            decode_tx(op)
        except RemoteProtocolError as exc:
            raise InvalidParams(str(exc)) from None
        return op
    kind = tx.get("type")
    try:
        if kind == "noop":
            return encode_tx(Noop())
        if kind == "kv_put":
            value = tx.get("value")
            if isinstance(value, str):
                value = value.encode()
            return encode_tx(KvPut(key=tx.get("key"), value=value))  # type: ignore[arg-type]
    except ValueError as exc:
        raise InvalidParams(f"bad transaction: {exc}") from None
    raise InvalidParams("tx type must be 'noop' or 'kv_put'")


def build_consensus_methods(*, consensus: ConsensusService | None) -> dict[str, Method]:
    """``consensus`` is None when the node runs without ``consensus.validators``: every method
    then answers ``not_found``."""

    def service() -> ConsensusService:
        if consensus is None:
            raise NotFound("consensus is off: no consensus.validators in this node's config")
        return consensus

    async def submit(params: dict[str, Any], session: Session, rid: int) -> Any:
        svc = service()
        op = op_from_params(params)
        timeout = param(params, "timeout", (int, float), None)
        if timeout is not None and not 0 < timeout <= 3600:
            raise InvalidParams("timeout must be in (0, 3600] seconds")
        try:
            return await svc.submit(op, timeout)
        except ConsensusError as exc:
            raise NetworkError(str(exc)) from None

    async def status(params: dict[str, Any], session: Session, rid: int) -> Any:
        return service().status()

    async def log_range(params: dict[str, Any], session: Session, rid: int) -> Any:
        svc = service()
        first = param(params, "from", int, 1)
        last = param(params, "to", int, first + MAX_LOG_ROWS - 1)
        if first < 1 or last < first:
            raise InvalidParams("need 1 <= from <= to")
        rows = svc.db.read_log(first, last, min(MAX_LOG_ROWS, last - first + 1))
        return {"entries": [row_dict(r) for r in rows], "last": svc.log_top}

    async def vote_committee(params: dict[str, Any], session: Session, rid: int) -> Any:
        svc = service()
        epoch = param(params, "epoch", int)
        names = param(params, "validators", list)
        try:
            validators = tuple(ID.from_base58(v).to_bytes() for v in names)
            return await svc.vote_committee(epoch, validators)
        except (ValueError, TypeError) as exc:
            raise InvalidParams(f"bad committee vote: {exc}") from None
        except ConsensusError as exc:
            raise NetworkError(str(exc)) from None

    return {
        "consensus.submit": submit,
        "consensus.status": status,
        "consensus.log": log_range,
        "consensus.vote_committee": vote_committee,
    }


def row_dict(row: Any) -> dict[str, Any]:
    results = {(r[0], r[1]): r[2] for r in row.results or ()}
    txs = []
    for req in row.entry.entry.batch:
        t = {"client": b58(req.client), "request_id": req.request_id, "tx": tx_dict(req.op)}
        status = results.get((req.client, req.request_id))
        if status is not None:
            t["status"] = status
        txs.append(t)
    return {
        "seq": row.seq,
        "digest": row.digest.hex(),
        "txs": txs,
        "certificate": certificate_dict(row.entry.certificate),
    }


__all__ = ["build_consensus_methods", "op_from_params", "row_dict", "tx_dict"]
