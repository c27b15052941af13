"""A collectives control message (``p2pnode_protocols.collectives.control.decode_control``):
join, formed, redirect, abort, refused, leave, ping, pong; the collectives service decodes
every one it receives. Allowed: ``ControlError``."""

from __future__ import annotations

from tests.fuzz.harness import Target, instrumented

with instrumented("p2pnode_protocols.collectives"):
    from p2pnode_protocols.collectives.control import ControlError, decode_control


def seeds() -> list[bytes]:
    from p2pnode_protocols.collectives.control import (
        Abort,
        Formed,
        Join,
        Leave,
        Ping,
        Pong,
        Redirect,
        Refused,
        encode_control,
    )

    a, b = b"\x00\x24\x08\x01" + b"a" * 34, b"\x00\x24\x08\x01" + b"b" * 34
    msgs = [
        Join("g", 4, 2, 1000, 0, {a: 1.5}),
        Formed("g", 1, (a, b)),
        Redirect("g", a),
        Abort("g", 1, 7, "member lost", (b,)),
        Refused("g", "full"),
        Leave("g", 1),
        Ping("g", 42),
        Pong("g", 42),
    ]
    return [encode_control(m) for m in msgs]


TARGET = Target(
    name="collectives_control",
    decode=decode_control,
    allowed=(ControlError,),
    seeds=seeds,
    cbor_at=0,
    doc="`p2pnode_protocols.collectives.control.decode_control`: group control messages",
)
