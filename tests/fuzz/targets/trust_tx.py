"""A trust transaction in the committed log (``p2pnode_protocols.trust.decode_tx``): stakes,
transfers, governance proposals and votes, accusations with their evidence. Allowed:
``RemoteProtocolError``."""

from __future__ import annotations

from tests.fuzz.harness import Target, instrumented

with instrumented("p2pnode_protocols.trust", "p2pnode_protocols.machine"):
    from p2pnode_protocols.machine import RemoteProtocolError
    from p2pnode_protocols.trust.transactions import decode_tx


def seeds() -> list[bytes]:
    from p2pnode_protocols.trust import (
        Accuse,
        Propose,
        Stake,
        Tick,
        Transfer,
        Unstake,
        Vote,
        encode_tx,
        sign_tx,
    )
    from tests.protocols.rounds_helpers import VALIDATORS, signer

    v0, v1 = VALIDATORS[0], VALIDATORS[1]
    s = signer(v0)
    return [
        encode_tx(Tick()),
        encode_tx(sign_tx(s, Stake(node=v0, amount=5, nonce=1))),
        encode_tx(sign_tx(s, Unstake(node=v0, amount=5, nonce=2))),
        encode_tx(sign_tx(s, Transfer(node=v0, to=v1, amount=3, nonce=3))),
        encode_tx(
            sign_tx(
                s,
                Propose(node=v0, kind="param", change={"reward": 2}, nonce=4, title="more"),
            )
        ),
        encode_tx(sign_tx(s, Propose(node=v0, kind="committee", change={"add": [v1]}, nonce=5))),
        encode_tx(sign_tx(s, Vote(node=v0, proposal="0123456789abcdef", yes=True, nonce=6))),
        encode_tx(Accuse(kind="equivocation", first=b"\x82\x02\x01", second=b"\x82\x02\x02")),
        encode_tx(Accuse(kind="unsolicited", first=b"\x82\x01\x01", second=b"")),
    ]


TARGET = Target(
    name="trust_tx",
    decode=decode_tx,
    allowed=(RemoteProtocolError,),
    seeds=seeds,
    cbor_at=0,
    doc="`p2pnode_protocols.trust.decode_tx`: stakes, transfers, proposals, votes, accusations",
)
