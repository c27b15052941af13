"""A PBFT state snapshot from a peer (``p2pnode_protocols.pbft.statemachine.restore``): what a
lagging replica installs from a state reply. Allowed: the PBFT ``RemoteProtocolError``."""

from __future__ import annotations

from tests.fuzz.harness import Target, instrumented

with instrumented("p2pnode_protocols.pbft", "p2pnode_protocols.machine"):
    from p2pnode_protocols.pbft import RemoteProtocolError
    from p2pnode_protocols.pbft.statemachine import restore


def seeds() -> list[bytes]:
    from tests.protocols.test_pbft_codec import SAMPLES

    out = []
    for m in SAMPLES:
        cp = getattr(m, "checkpoint", None)
        if cp is not None:
            out.append(cp.snapshot)
    from p2pnode_protocols.pbft import Committee
    from p2pnode_protocols.pbft.statemachine import genesis, snapshot

    out.append(snapshot(genesis(Committee(epoch=0, validators=(b"a" * 38, b"b" * 38)))))
    return out


TARGET = Target(
    name="pbft_snapshot",
    decode=restore,
    allowed=(RemoteProtocolError,),
    seeds=seeds,
    cbor_at=0,
    max_len=16384,
    doc="`p2pnode_protocols.pbft.statemachine.restore`: a snapshot in a peer's state reply",
)
