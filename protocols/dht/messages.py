"""RPC messages of ``/p2pnode/dht/1.0.0``: shapes, bounds and parsing of peer input.

One request or response per frame (see :mod:`p2pnode_protocols.framing`). Requests carry an ``id``
chosen by the caller and echoed in the response, so many requests share one stream.

========== ========================= ===========================================
op         request fields            response fields
========== ========================= ===========================================
store      record                    (ok only)
find_value key                       record (or None), closer
add_prov   key, addrs, ttl           (ok only; the provider is the sender)
get_prov   key                       providers, closer
find_node  key                       closer
========== ========================= ===========================================

A failed request gets ``ok: false`` and ``err``: a reason for people, never a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from p2pnode_protocols.dht.errors import RemoteProtocolError
from p2pnode_protocols.dht.records import MAX_TTL
from p2pnode_protocols.text import brief

PROTOCOL_ID = "/p2pnode/dht/1.0.0"
OPS = ("store", "find_value", "add_prov", "get_prov", "find_node")
MAX_PEERS_PER_REPLY = 32
MAX_ADDRS_PER_PEER = 16
MAX_ADDR_LEN = 512
MAX_PEER_ID_LEN = 128
MAX_REQUEST_ID = (1 << 63) - 1

PeerEntry = tuple[str, list[str]]


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    id: int
    op: str
    key: str
    record: bytes | None = None
    addrs: tuple[str, ...] = ()
    ttl: float = 0.0

    def to_frame(self) -> dict[str, Any]:
        frame: dict[str, Any] = {"id": self.id, "op": self.op, "key": self.key}
        if self.record is not None:
            frame["record"] = self.record
        if self.addrs:
            frame["addrs"] = list(self.addrs)
        if self.ttl:
            frame["ttl"] = self.ttl
        return frame


@dataclass(frozen=True, slots=True, kw_only=True)
class Response:
    id: int
    ok: bool
    err: str | None = None
    record: bytes | None = None
    closer: tuple[PeerEntry, ...] = ()
    providers: tuple[PeerEntry, ...] = ()

    def to_frame(self) -> dict[str, Any]:
        frame: dict[str, Any] = {"id": self.id, "ok": self.ok}
        if self.err is not None:
            frame["err"] = self.err
        if self.record is not None:
            frame["record"] = self.record
        if self.closer:
            frame["closer"] = [[p, a] for p, a in self.closer]
        if self.providers:
            frame["providers"] = [[p, a] for p, a in self.providers]
        return frame


def _request_id(frame: dict[str, Any]) -> int:
    rid = frame.get("id")
    if isinstance(rid, bool) or not isinstance(rid, int) or not 0 <= rid <= MAX_REQUEST_ID:
        raise RemoteProtocolError("frame needs an integer 'id'")
    return rid


def _str(frame: dict[str, Any], name: str, limit: int) -> str:
    value = frame.get(name)
    if not isinstance(value, str) or not 0 < len(value) <= limit:
        raise RemoteProtocolError(f"field {name!r} must be a string of 1 to {limit} characters")
    return value


def _addrs(raw: Any) -> list[str]:
    if not isinstance(raw, list) or len(raw) > MAX_ADDRS_PER_PEER:
        raise RemoteProtocolError(f"addrs must be a list of at most {MAX_ADDRS_PER_PEER}")
    for a in raw:
        if not isinstance(a, str) or not 0 < len(a) <= MAX_ADDR_LEN:
            raise RemoteProtocolError("each addr must be a non-empty string")
    return list(raw)


def _peers(raw: Any, name: str) -> tuple[PeerEntry, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or len(raw) > MAX_PEERS_PER_REPLY:
        raise RemoteProtocolError(f"{name} must be a list of at most {MAX_PEERS_PER_REPLY}")
    out = []
    for entry in raw:
        if not isinstance(entry, list) or len(entry) != 2:
            raise RemoteProtocolError(f"each {name} entry must be [peer_id, addrs]")
        pid, addrs = entry
        if not isinstance(pid, str) or not 0 < len(pid) <= MAX_PEER_ID_LEN:
            raise RemoteProtocolError(f"bad peer id in {name}")
        out.append((pid, _addrs(addrs)))
    return tuple(out)


def parse_request(frame: dict[str, Any], *, max_record: int) -> Request:
    """Validate a request frame from a peer; raises RemoteProtocolError."""
    rid = _request_id(frame)
    op = frame.get("op")
    if op not in OPS:
        raise RemoteProtocolError(f"unknown op {brief(op)}")
    key = _str(frame, "key", 1024)
    record = None
    addrs: list[str] = []
    ttl = 0.0
    if op == "store":
        record = frame.get("record")
        if not isinstance(record, bytes) or not 0 < len(record) <= max_record:
            raise RemoteProtocolError(f"store needs a record of 1 to {max_record} bytes")
    elif op == "add_prov":
        addrs = _addrs(frame.get("addrs", []))
        ttl = frame.get("ttl")
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not ttl > 0:
            raise RemoteProtocolError("add_prov needs a positive ttl")
        # Capped as holders cap it (dht.record_ttl is at most MAX_TTL): float() of a CBOR
        # bignum would overflow, and NaN is not > 0 so it was refused above.
        ttl = float(min(ttl, MAX_TTL))
    return Request(id=rid, op=op, key=key, record=record, addrs=tuple(addrs), ttl=ttl)


def parse_response(frame: dict[str, Any], *, max_record: int) -> Response:
    """Validate a response frame from a peer; raises RemoteProtocolError."""
    rid = _request_id(frame)
    ok = frame.get("ok")
    if not isinstance(ok, bool):
        raise RemoteProtocolError("response needs a boolean 'ok'")
    err = frame.get("err")
    if err is not None and (not isinstance(err, str) or len(err) > 4096):
        raise RemoteProtocolError("err must be a short string")
    record = frame.get("record")
    if record is not None and (not isinstance(record, bytes) or len(record) > max_record):
        raise RemoteProtocolError("record must be bytes within the size limit")
    return Response(
        id=rid,
        ok=ok,
        err=err,
        record=record,
        closer=_peers(frame.get("closer"), "closer"),
        providers=_peers(frame.get("providers"), "providers"),
    )
