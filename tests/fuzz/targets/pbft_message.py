"""PBFT messages from validators (``p2pnode_protocols.pbft.codec.decode``): what the consensus
service decodes from every packet. Allowed: the PBFT ``RemoteProtocolError``."""

from __future__ import annotations

from tests.fuzz.harness import Target, instrumented

with instrumented("p2pnode_protocols.pbft", "p2pnode_protocols.machine"):
    from p2pnode_protocols.pbft import RemoteProtocolError, decode


def seeds() -> list[bytes]:
    from p2pnode_protocols.pbft import encode
    from tests.protocols.test_pbft_codec import SAMPLES  # one of each type, from a real run

    return [encode(m) for m in SAMPLES]


TARGET = Target(
    name="pbft_message",
    decode=decode,
    allowed=(RemoteProtocolError,),
    seeds=seeds,
    cbor_at=0,
    max_len=16384,
    doc="`p2pnode_protocols.pbft.codec.decode`: every consensus packet",
)
