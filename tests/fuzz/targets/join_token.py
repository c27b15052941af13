"""A join token (``p2pnode.config.join.decode_token``): the text a user pastes into
``p2pnode join``, printed by another node. Allowed: ``ConfigError``."""

from __future__ import annotations

import base64

from tests.fuzz.harness import Target, instrumented

with instrumented("p2pnode.config"):
    from p2pnode.config import ConfigError
    from p2pnode.config.join import PREFIX, decode_token


def decode(data: bytes) -> object:
    # "J" + JSON: the token's body, base64-encoded here so the fuzzer mutates the JSON itself;
    # anything else is the pasted text as it is.
    if data[:1] == b"J":
        return decode_token(PREFIX + base64.urlsafe_b64encode(data[1:]).decode().rstrip("="))
    return decode_token(data.decode("utf-8", "surrogateescape"))


def seeds() -> list[bytes]:
    from p2pnode.config.join import JoinToken

    peer = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"
    token = JoinToken((f"/ip4/10.0.0.1/tcp/4001/p2p/{peer}",), (peer,)).encode()
    body = base64.urlsafe_b64decode(token[len(PREFIX) :] + "==")
    return [token.encode(), b"J" + body]


TARGET = Target(
    name="join_token",
    decode=decode,
    allowed=(ConfigError,),
    seeds=seeds,
    doc="`p2pnode.config.join.decode_token`: a pasted join token",
)
