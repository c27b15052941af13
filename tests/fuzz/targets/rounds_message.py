"""A rounds message between nodes (``p2pnode_protocols.rounds.decode_message``): update
notices with their update refs, proposals, attestations, commitments. The rounds service
decodes every one it receives. Allowed: ``RemoteProtocolError``."""

from __future__ import annotations

from tests.fuzz.harness import Target, instrumented

with instrumented("p2pnode_protocols.rounds", "p2pnode_protocols.machine"):
    from p2pnode_protocols.machine import RemoteProtocolError
    from p2pnode_protocols.rounds import decode_message


def seeds() -> list[bytes]:
    from p2pnode_protocols.rounds import Attestation, Proposal, UpdateNotice, encode_message
    from p2pnode_protocols.rounds.messages import CommitClosed, Commitment, encode_result
    from tests.protocols.rounds_helpers import INIT_KEY, TRAINERS, VALIDATORS, result, update

    job = "0123456789abcdef"
    body = encode_result(result(job, 1, INIT_KEY, [update(t, job, 1) for t in TRAINERS[:2]]))
    return [
        encode_message(UpdateNotice(job=job, update=update(TRAINERS[0], job, 1))),
        encode_message(UpdateNotice(job=job, update=update(TRAINERS[1], job, 2), salt=b"s" * 16)),
        encode_message(Proposal(result=body, sig=b"s" * 64)),
        encode_message(
            Attestation(job=job, round=1, digest=b"d" * 32, validator=VALIDATORS[0], sig=b"s" * 64)
        ),
        encode_message(
            Commitment(job=job, round=1, node=TRAINERS[0], digest=b"d" * 32, sig=b"s" * 64)
        ),
        encode_message(CommitClosed(job=job, round=1)),
    ]


TARGET = Target(
    name="rounds_message",
    decode=decode_message,
    allowed=(RemoteProtocolError,),
    seeds=seeds,
    cbor_at=0,
    max_len=8192,
    doc="`p2pnode_protocols.rounds.decode_message`: notices, proposals, attestations, commitments",
)
