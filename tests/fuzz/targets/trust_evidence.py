"""Evidence of equivocation in an Accuse transaction
(``p2pnode_protocols.trust.evidence.check_equivocation``): two PBFT messages, decoded and
checked against the committee of their epoch by every replica that applies the transaction.

The input is the CBOR array ``[first, second]``. A validator that equivocates signs whatever
it likes, so the harness plays one: each message that decodes and names a validator of the
test committee as its sender is signed again by that validator before the check (otherwise
every mutated message would stop at its signature). Allowed: ``RemoteProtocolError``.
"""

from __future__ import annotations

from tests.fuzz.harness import Target, instrumented

with instrumented("p2pnode_protocols.trust", "p2pnode_protocols.pbft", "p2pnode_protocols.machine"):
    import cbor2

    from p2pnode_protocols.machine import RemoteProtocolError
    from p2pnode_protocols.pbft import decode, encode, sign
    from p2pnode_protocols.pbft.errors import RemoteProtocolError as PbftRemoteError
    from p2pnode_protocols.signing import KeyedHashVerifier
    from p2pnode_protocols.trust.evidence import check_equivocation

_VERIFIER = KeyedHashVerifier(b"fuzz-evidence-seed" * 2)
_VALIDATORS = tuple(f"validator-{i}".encode() for i in range(4))
_SIGNERS = {v: _VERIFIER.signer_for(v) for v in _VALIDATORS}
_COMMITTEES = (_VALIDATORS, (*_VALIDATORS[:3], b"validator-9"))


def _resigned(data: object) -> object:
    if type(data) is not bytes:
        return data
    try:
        msg = decode(data)
    except PbftRemoteError:
        return data
    signer = _SIGNERS.get(getattr(msg, "sender", b""))
    if signer is None:
        return data
    try:
        return encode(sign(msg, signer))
    except Exception:  # a message our encoder refuses: offered as it came
        return data


def decode_evidence(data: bytes) -> object:
    try:
        pair = cbor2.loads(data)
    except Exception as exc:
        raise RemoteProtocolError(f"not CBOR: {exc}") from None
    if type(pair) is not list or len(pair) != 2:
        raise RemoteProtocolError("evidence is [first, second]")
    first, second = (_resigned(p) for p in pair)
    if type(first) is not bytes or type(second) is not bytes:
        raise RemoteProtocolError("evidence messages are bytes")  # as decode_tx checks
    return check_equivocation(first, second, _COMMITTEES, _VERIFIER)


def seeds() -> list[bytes]:
    from p2pnode_protocols.pbft import PrePrepare, Request
    from p2pnode_protocols.pbft.codec import batch_digest

    client = _VERIFIER.signer_for(b"c")

    def preprepare(node: bytes, op: bytes, epoch: int = 0) -> bytes:
        req = sign(Request(client=b"c", request_id=1, op=op), client)
        pp = PrePrepare(
            view=0, seq=7, digest=batch_digest((req,)), batch=(req,), sender=node, epoch=epoch
        )
        return encode(sign(pp, _SIGNERS[node]))

    v0 = _VALIDATORS[0]
    return [
        cbor2.dumps([preprepare(v0, b"x"), preprepare(v0, b"y")]),
        cbor2.dumps([preprepare(v0, b"x", 1), preprepare(v0, b"y", 1)]),
        cbor2.dumps([preprepare(v0, b"x"), preprepare(v0, b"x")]),
    ]


TARGET = Target(
    name="trust_evidence",
    decode=decode_evidence,
    allowed=(RemoteProtocolError,),
    seeds=seeds,
    max_len=8192,
    cbor_at=0,
    doc="`p2pnode_protocols.trust.evidence.check_equivocation`: an Accuse's two messages",
)
