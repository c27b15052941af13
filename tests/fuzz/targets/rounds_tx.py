"""A rounds transaction in the committed log (``p2pnode_protocols.rounds.decode_tx``):
CreateJob (with its job spec), CancelJob, StartRound (tasks), CommitRound (result and
attestations). Any client can submit one. Allowed: ``RemoteProtocolError``."""

from __future__ import annotations

from tests.fuzz.harness import Target, instrumented

with instrumented("p2pnode_protocols.rounds", "p2pnode_protocols.machine"):
    from p2pnode_protocols.machine import RemoteProtocolError
    from p2pnode_protocols.rounds import decode_tx


def seeds() -> list[bytes]:
    from p2pnode_protocols.rounds import encode_tx
    from tests.protocols.test_rounds_codecs import _txs

    return [encode_tx(tx) for tx in _txs()]


TARGET = Target(
    name="rounds_tx",
    decode=decode_tx,
    allowed=(RemoteProtocolError,),
    seeds=seeds,
    cbor_at=0,
    max_len=8192,
    doc="`p2pnode_protocols.rounds.decode_tx`: job, round and commit transactions",
)
