"""A SWIM packet (``p2pnode_protocols.heartbeat.codec.decode_packet``, with the membership
service's default limits): what the membership service decodes from every datagram.
Allowed: the heartbeat ``RemoteProtocolError``."""

from __future__ import annotations

from tests.fuzz.harness import Target, instrumented

with instrumented("p2pnode_protocols.heartbeat", "p2pnode_protocols.machine"):
    from p2pnode_protocols.heartbeat import HeartbeatConfig
    from p2pnode_protocols.heartbeat.codec import decode_packet
    from p2pnode_protocols.heartbeat.errors import RemoteProtocolError

_CFG = HeartbeatConfig.lan()


def decode(data: bytes) -> object:
    return decode_packet(
        data,
        max_bytes=_CFG.max_packet_bytes,
        max_sync_bytes=_CFG.max_sync_bytes,
        max_state_bytes=_CFG.max_state_bytes,
    )


def seeds() -> list[bytes]:
    from p2pnode_protocols.heartbeat.codec import encode_packet
    from tests.protocols.test_heartbeat import sample_packet

    return [encode_packet(sample_packet())]


TARGET = Target(
    name="heartbeat_packet",
    decode=decode,
    allowed=(RemoteProtocolError,),
    seeds=seeds,
    cbor_at=0,
    max_len=8192,
    doc="`p2pnode_protocols.heartbeat.codec.decode_packet`: every membership datagram",
)
