"""A client's PBFT operation (``p2pnode_protocols.pbft.transactions.decode_tx``): what every
replica decodes from a request's ``op`` before executing it. Allowed: the PBFT
``RemoteProtocolError``."""

from __future__ import annotations

from tests.fuzz.harness import Target, instrumented

with instrumented("p2pnode_protocols.pbft", "p2pnode_protocols.machine"):
    from p2pnode_protocols.pbft import RemoteProtocolError, decode_tx


def seeds() -> list[bytes]:
    from p2pnode_protocols.pbft import AppTx, KvPut, Noop, encode_tx
    from p2pnode_protocols.pbft.transactions import sign_committee_vote
    from tests.protocols.pbft_helpers import make_keys

    signers, _, _ = make_keys(4)
    ids = tuple(s.node_id for s in signers)
    return [
        encode_tx(Noop()),
        encode_tx(KvPut(key="k1", value=b"v1")),
        encode_tx(sign_committee_vote(signers[0], 1, ids)),
        encode_tx(AppTx(app="rounds", body=b"\x83\x02\x70" + b"0" * 16 + b"\x60")),
    ]


TARGET = Target(
    name="pbft_tx",
    decode=decode_tx,
    allowed=(RemoteProtocolError,),
    seeds=seeds,
    cbor_at=0,
    doc="`p2pnode_protocols.pbft.transactions.decode_tx`: the op of every client request",
)
