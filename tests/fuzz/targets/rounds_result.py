"""A round result (``p2pnode_protocols.rounds.decode_result``): the body of a proposal and of a
CommitRound transaction, which every validator decodes and recomputes. Allowed:
``RemoteProtocolError``."""

from __future__ import annotations

from tests.fuzz.harness import Target, instrumented

with instrumented("p2pnode_protocols.rounds", "p2pnode_protocols.machine"):
    from p2pnode_protocols.machine import RemoteProtocolError
    from p2pnode_protocols.rounds import decode_result


def seeds() -> list[bytes]:
    from p2pnode_protocols.rounds.messages import encode_result
    from tests.protocols.rounds_helpers import INIT_KEY, TRAINERS, result, update

    job = "0123456789abcdef"
    return [
        encode_result(result(job, 1, INIT_KEY, [update(t, job, 1) for t in TRAINERS[:n]]))
        for n in (1, 3)
    ]


TARGET = Target(
    name="rounds_result",
    decode=decode_result,
    allowed=(RemoteProtocolError,),
    seeds=seeds,
    cbor_at=0,
    max_len=8192,
    doc="`p2pnode_protocols.rounds.decode_result`: a proposal's or CommitRound's result",
)
