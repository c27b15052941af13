"""The PBFT wire codec: round trips, prefixes, trailing garbage, bounds, arbitrary bytes."""

from __future__ import annotations

import contextlib

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pnode_protocols.pbft import (
    Certificate,
    CertifiedEntry,
    Checkpoint,
    CommitVote,
    Entry,
    Message,
    MessageReceived,
    NewView,
    Prepare,
    PreparedProof,
    PrePrepare,
    RemoteProtocolError,
    StableCheckpoint,
    StateReply,
    Status,
    TimerKey,
    ViewChange,
    decode,
    encode,
    sign,
    signing_bytes,
)
from p2pnode_protocols.pbft.codec import MAX_MESSAGE_BYTES
from tests.protocols.pbft_helpers import Cluster, request

pytestmark = pytest.mark.timeout(60)


def _sample_messages() -> list[Message]:
    """One of every message type, taken from a real run (so nested proofs are realistic)."""
    c = Cluster(4)
    for rid in range(1, 6):
        c.submit(0, request(c.client, rid))
        c.deliver_all()
    c.crash(c.ids[0])
    c.submit(1, request(c.client, 9))
    c.deliver_all()
    for node in c.ids[1:]:
        c.fire(node, TimerKey.REQUEST)
    c.deliver_all()
    for node in c.ids[1:]:
        c.fire(node, TimerKey.STATUS)
    c.deliver_all()
    seen: dict[type, Message] = {}
    for m in c.log:
        seen.setdefault(type(m), m)
    # A state reply with a checkpoint and entries.
    rep = c.replica(1)
    ents = tuple(rep._certified[s] for s in sorted(rep._certified))
    sr = StateReply(checkpoint=rep.stable, entries=ents, sender=c.ids[1])
    seen[StateReply] = sign(sr, c.signers[1])
    return list(seen.values())


SAMPLES = _sample_messages()


def test_samples_cover_every_message_type() -> None:
    types = {type(m) for m in SAMPLES}
    expected = {PrePrepare, Prepare, CommitVote, Checkpoint, ViewChange, NewView, Status}
    assert expected <= types
    assert StateReply in types


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip_whole(msg: Message) -> None:
    data = encode(msg)
    assert decode(data) == msg
    # Canonical: encoding the decoded value gives the same bytes (what signatures rely on).
    assert encode(decode(data)) == data


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_every_strict_prefix_is_refused(msg: Message) -> None:
    data = encode(msg)
    step = max(1, len(data) // 300)  # byte by byte for small messages, sampled for big ones
    for cut in range(0, len(data), step):
        with pytest.raises(RemoteProtocolError):
            decode(data[:cut])


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_trailing_garbage_is_refused(msg: Message) -> None:
    with pytest.raises(RemoteProtocolError, match="trailing"):
        decode(encode(msg) + b"\x00")


def test_size_is_bounded_before_parsing() -> None:
    with pytest.raises(RemoteProtocolError, match="exceeds"):
        decode(b"\x00" * (MAX_MESSAGE_BYTES + 1))
    # A header that claims a 4 GiB byte string must not allocate it.
    with pytest.raises(RemoteProtocolError):
        decode(b"\x5a\xff\xff\xff\xff")


@pytest.mark.parametrize(
    "obj",
    [
        [],
        [99, 1],
        [3, 2, 0, 1, b"\x00" * 32, b"a", b"s"],  # unknown version
        [3, 1, 0, 1, b"\x00" * 31, b"a", b"s"],  # short digest
        [3, 1, -1, 1, b"\x00" * 32, b"a", b"s"],  # negative view
        [3, 1, 0, 0, b"\x00" * 32, b"a", b"s"],  # seq 0
        [3, 1, True, 1, b"\x00" * 32, b"a", b"s"],  # bool is not an int
        [3, 1, 0, 1, b"\x00" * 32, "a", b"s"],  # text sender
        [8, 1, 0, 1, 0, 0, b"a", b"s"],  # int where a bool belongs
        {"type": 3},
    ],
)
def test_malformed_fields_are_remote_errors(obj: object) -> None:
    with pytest.raises(RemoteProtocolError):
        decode(cbor2.dumps(obj))


def test_deep_nesting_is_refused() -> None:
    data = b"\x81" * 100 + b"\x00"
    with pytest.raises(RemoteProtocolError):
        decode(data)


def test_signature_covers_every_field_but_itself() -> None:
    p = next(m for m in SAMPLES if isinstance(m, Prepare))
    base = signing_bytes(p)
    assert signing_bytes(Prepare(**{**_fields(p), "signature": b"other"})) == base
    assert signing_bytes(Prepare(**{**_fields(p), "seq": p.seq + 1})) != base


def _fields(m: Prepare) -> dict[str, object]:
    return {k: getattr(m, k) for k in ("view", "seq", "digest", "sender", "signature")}


def test_nested_records_validate() -> None:
    pp = next(m for m in SAMPLES if isinstance(m, PrePrepare))
    with pytest.raises(Exception, match="prepares"):
        PreparedProof(pre_prepare=pp, prepares=[])  # type: ignore[arg-type]
    entry = Entry(seq=1, digest=pp.digest, batch=pp.batch)
    with pytest.raises(Exception, match="Certificate"):
        CertifiedEntry(entry=entry, certificate=None)  # type: ignore[arg-type]
    assert Certificate(votes=()).votes == ()
    assert StableCheckpoint(seq=0, snapshot=b"", proof=()).seq == 0


@given(st.binary(max_size=512))
def test_arbitrary_bytes_never_crash_the_decoder(data: bytes) -> None:
    with contextlib.suppress(RemoteProtocolError):
        decode(data)


@given(st.sampled_from(SAMPLES), st.data())
def test_bit_flips_are_refused_or_fail_verification(msg: Message, data: st.DataObject) -> None:
    raw = bytearray(encode(msg))
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] ^= 1 << data.draw(st.integers(0, 7))
    c = Cluster(4)
    try:
        got = decode(bytes(raw))
    except RemoteProtocolError:
        return
    if got == msg:
        return
    # Decoded into something else: a replica must refuse it or ignore it, never crash.
    with contextlib.suppress(RemoteProtocolError):
        c.handle(c.ids[1], MessageReceived(sender=c.ids[0], msg=got))
