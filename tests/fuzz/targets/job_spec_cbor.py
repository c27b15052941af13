"""A committed job spec (``p2pnode_protocols.rounds.spec.decode_spec``): the CBOR form every
node decodes from a CreateJob transaction. Allowed: ``RemoteProtocolError``."""

from __future__ import annotations

from tests.fuzz.harness import Target, instrumented

with instrumented("p2pnode_protocols.rounds", "p2pnode_protocols.machine"):
    from p2pnode_protocols.machine import RemoteProtocolError
    from p2pnode_protocols.rounds.spec import decode_spec


def seeds() -> list[bytes]:
    from p2pnode_protocols.rounds import JobSpec
    from p2pnode_protocols.rounds.spec import encode_spec

    return [
        encode_spec(JobSpec(learning={"rule": "median"})),
        encode_spec(JobSpec(learning={"rule": "mean", "lr": 0.1}, spot_check=0.5)),
    ]


TARGET = Target(
    name="job_spec_cbor",
    decode=decode_spec,
    allowed=(RemoteProtocolError,),
    seeds=seeds,
    cbor_at=0,
    doc="`p2pnode_protocols.rounds.spec.decode_spec`: the spec inside a CreateJob transaction",
)
