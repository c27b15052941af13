"""Certified log entries a follower pulls from a validator
(``p2pnode.consensus.store.decode_entries``, called by ``LogSync.fetch`` for every item of a
log reply). Allowed: the PBFT ``RemoteProtocolError``."""

from __future__ import annotations

from tests.fuzz.harness import Target, instrumented

with instrumented("p2pnode.consensus.store", "p2pnode_protocols.pbft", "p2pnode_protocols.machine"):
    from p2pnode.consensus.store import decode_entries
    from p2pnode_protocols.pbft import RemoteProtocolError


def seeds() -> list[bytes]:
    from p2pnode.consensus.store import encode_entries
    from p2pnode_protocols.pbft import PbftConfig, encode
    from tests.protocols.pbft_helpers import Cluster, request

    c = Cluster(4, config=PbftConfig(checkpoint_interval=64, window=128, max_batch=4))
    for rid in range(1, 4):
        c.submit(0, request(c.client, rid))
        c.deliver_all()
    certified = c.replica(1)._certified
    other = encode(c.log[0])  # a valid message of another type: a reply must not carry it
    return [encode_entries((certified[s],)) for s in sorted(certified)] + [other]


TARGET = Target(
    name="consensus_log",
    decode=decode_entries,
    allowed=(RemoteProtocolError,),
    seeds=seeds,
    cbor_at=0,
    max_len=16384,
    doc="`p2pnode.consensus.store.decode_entries`: each entry of a log-sync reply",
)
