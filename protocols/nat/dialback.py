"""The dial-back exchange: "can you reach me?" asked of a peer, and its answer.

A node that wants to know whether others can dial it sends a peer a :class:`DialbackRequest`
with its listen ports. The peer dials back, on a fresh connection, the address it sees the
request come from (``observed_ip``) at each of those ports, never any other address: a
request cannot make the server dial a third party (the amplification AutoNAT guards against).
:func:`dialback_targets` picks those addresses; the server's answer is a
:class:`DialbackResponse` naming the ones that reached the requester, with the requester's
key proved by a handshake.

Messages are canonical CBOR maps, bounded in size before anything is allocated from them.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

import cbor2

MAX_MESSAGE_BYTES = 4096
MAX_PORTS = 8
MAX_REACHED = 8
MAX_ADDR_CHARS = 256


class DialbackInvalid(ValueError):
    """A dial-back message that is malformed or over a bound (the peer's fault)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DialbackRequest:
    """``ports``: the TCP ports the requester listens on (its advertised direct addresses')."""

    ports: tuple[int, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.ports, tuple) or not 0 < len(self.ports) <= MAX_PORTS:
            raise DialbackInvalid(f"a request names 1 to {MAX_PORTS} ports")
        for p in self.ports:
            if isinstance(p, bool) or not isinstance(p, int) or not 0 < p < 65536:
                raise DialbackInvalid(f"bad port {p!r}")
        if len(set(self.ports)) != len(self.ports):
            raise DialbackInvalid("ports must be distinct")


@dataclass(frozen=True, slots=True, kw_only=True)
class DialbackResponse:
    """``observed``: the requester's IP as the server saw it (or "" when it could not tell);
    ``reached``: the addresses the server reached the requester at (empty: none);
    ``refused``: why the server did not try ("" when it did)."""

    observed: str
    reached: tuple[str, ...]
    refused: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.observed, str) or len(self.observed) > MAX_ADDR_CHARS:
            raise DialbackInvalid("bad observed address")
        if not isinstance(self.reached, tuple) or len(self.reached) > MAX_REACHED:
            raise DialbackInvalid(f"at most {MAX_REACHED} reached addresses")
        for a in self.reached:
            if not isinstance(a, str) or not 0 < len(a) <= MAX_ADDR_CHARS:
                raise DialbackInvalid("bad reached address")
        if not isinstance(self.refused, str) or len(self.refused) > MAX_ADDR_CHARS:
            raise DialbackInvalid("bad refusal reason")


def encode_request(req: DialbackRequest) -> bytes:
    return cbor2.dumps({"ports": list(req.ports)}, canonical=True)


def encode_response(resp: DialbackResponse) -> bytes:
    body = {"observed": resp.observed, "reached": list(resp.reached), "refused": resp.refused}
    return cbor2.dumps(body, canonical=True)


def _load_map(data: bytes, keys: set[str]) -> dict[str, Any]:
    if not isinstance(data, bytes | bytearray) or len(data) > MAX_MESSAGE_BYTES:
        raise DialbackInvalid(f"a dial-back message is bytes of at most {MAX_MESSAGE_BYTES}")
    try:
        body = cbor2.loads(bytes(data))
    except Exception as exc:
        raise DialbackInvalid(f"not CBOR: {exc}") from None
    if not isinstance(body, dict) or set(body) - keys:
        raise DialbackInvalid(f"a dial-back message is a map of {sorted(keys)}")
    return body


def decode_request(data: bytes) -> DialbackRequest:
    body = _load_map(data, {"ports"})
    ports = body.get("ports")
    if not isinstance(ports, list):
        raise DialbackInvalid("ports must be a list")
    return DialbackRequest(ports=tuple(ports))


def decode_response(data: bytes) -> DialbackResponse:
    body = _load_map(data, {"observed", "reached", "refused"})
    reached = body.get("reached", [])
    if not isinstance(reached, list):
        raise DialbackInvalid("reached must be a list")
    return DialbackResponse(
        observed=body.get("observed", ""), reached=tuple(reached), refused=body.get("refused", "")
    )


def dialback_targets(observed_ip: str | None, ports: tuple[int, ...]) -> list[str]:
    """The multiaddrs (without /p2p/) a server dials back: the observed IP at each port.

    None (the server cannot tell where the request came from, or it came over a relay) means
    nothing is dialled, and so does an address no packet can come from (unspecified,
    multicast).
    """
    if not observed_ip:
        return []
    try:
        ip = ipaddress.ip_address(observed_ip)
    except ValueError:
        return []
    if ip.is_unspecified or ip.is_multicast:
        return []
    proto = "ip4" if ip.version == 4 else "ip6"
    return [f"/{proto}/{ip}/tcp/{port}" for port in ports]


def tcp_port(addr: str) -> int | None:
    """The TCP port of a direct ``/ip4|ip6|dns*/<host>/tcp/<port>...`` address, else None
    (relayed addresses have none of their own)."""
    if "/p2p-circuit" in addr:
        return None
    parts = addr.split("/")
    # ['', 'ip4', '1.2.3.4', 'tcp', '4001', ...]
    if len(parts) < 5 or parts[3] != "tcp":
        return None
    try:
        port = int(parts[4])
    except ValueError:
        return None
    return port if 0 < port < 65536 else None


__all__ = [
    "MAX_MESSAGE_BYTES",
    "DialbackInvalid",
    "DialbackRequest",
    "DialbackResponse",
    "decode_request",
    "decode_response",
    "dialback_targets",
    "encode_request",
    "encode_response",
    "tcp_port",
]
