"""A DHT RPC frame body (``/p2pnode/dht/1.0.0``): decoded as a frame
(``p2pnode_protocols.framing.decode_payload``), then checked both as a request, as the
handler does (``parse_request``), and as a response, as a lookup does (``parse_response``).
Allowed: ``FrameError`` and the DHT ``RemoteProtocolError``."""

from __future__ import annotations

from tests.fuzz.harness import Target, instrumented

with instrumented("p2pnode_protocols.dht", "p2pnode_protocols.framing"):
    from p2pnode_protocols.dht.errors import RemoteProtocolError
    from p2pnode_protocols.dht.messages import parse_request, parse_response
    from p2pnode_protocols.dht.records import RECORD_OVERHEAD
    from p2pnode_protocols.framing import FrameError, decode_payload

MAX_RECORD = 65536 + RECORD_OVERHEAD  # dht.max_value_size's default, as the service sets it


def decode(data: bytes) -> object:
    frame = decode_payload(data)
    out: list[object] = []
    for parse in (parse_request, parse_response):
        try:
            out.append(parse(frame, max_record=MAX_RECORD))
        except RemoteProtocolError as exc:
            out.append(exc)
    if all(isinstance(o, RemoteProtocolError) for o in out):
        raise out[0]  # type: ignore[misc]
    return out


def seeds() -> list[bytes]:
    import cbor2

    from p2pnode_protocols.dht.messages import Request, Response

    peer = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"
    frames = [
        Request(id=1, op="find_value", key="/p2pnode/kv/a").to_frame(),
        Request(id=2, op="store", key="/p2pnode/kv/a", record=b"\xa0").to_frame(),
        Request(
            id=3, op="add_prov", key="/p2pnode/prov/x", addrs=("/ip4/1.2.3.4/tcp/1",), ttl=60.0
        ).to_frame(),
        Request(id=4, op="get_prov", key="/p2pnode/prov/x").to_frame(),
        Response(
            id=5, ok=True, record=b"\xa0", closer=((peer, ["/ip4/1.2.3.4/tcp/1"]),)
        ).to_frame(),
        Response(id=6, ok=False, err="no").to_frame(),
        Response(id=7, ok=True, providers=((peer, []),)).to_frame(),
    ]
    return [cbor2.dumps(f, canonical=True) for f in frames]


TARGET = Target(
    name="dht_rpc",
    decode=decode,
    allowed=(FrameError, RemoteProtocolError),
    seeds=seeds,
    cbor_at=0,
    doc="`parse_request`/`parse_response` of `p2pnode_protocols.dht.messages` on a frame body",
)
