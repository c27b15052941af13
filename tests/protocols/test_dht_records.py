"""Signed DHT records and namespace validators, with real Ed25519 keys."""

from __future__ import annotations

import contextlib

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st
from libp2p.crypto.ed25519 import create_new_key_pair

from p2pnode.network.signing import sign_record, verify
from p2pnode_protocols.dht.errors import RecordInvalid, RemoteProtocolError
from p2pnode_protocols.dht.messages import parse_request, parse_response
from p2pnode_protocols.dht.records import Record, decode_record, newest
from p2pnode_protocols.dht.validators import KvValidator, Validators, namespace_of

KEYS = create_new_key_pair()
OTHER = create_new_key_pair()
ME = __import__("libp2p.peer.id", fromlist=["ID"]).ID.from_pubkey(KEYS.public_key).to_base58()


def validators() -> Validators:
    v = Validators(verify)
    v.register("kv", KvValidator(max_value_size=64))
    return v


def make(key: str = "/p2pnode/kv/a", value: bytes = b"v", seq: int = 1) -> Record:
    return sign_record(KEYS, key=key, value=value, seq=seq, ttl=60.0, publisher=ME)


def test_signed_record_round_trips_and_validates() -> None:
    record = make()
    decoded = decode_record(record.encode(), max_size=4096)
    assert decoded == record
    validators().validate(decoded)


@pytest.mark.parametrize("field,value", [("v", b"tampered"), ("s", 2), ("k", "/p2pnode/kv/b")])
def test_tampering_breaks_the_signature(field: str, value: object) -> None:
    raw = cbor2.loads(make().encode())
    raw[field] = value
    with pytest.raises(RecordInvalid, match="signature"):
        validators().validate(decode_record(cbor2.dumps(raw), max_size=4096))


def test_someone_elses_key_cannot_claim_my_id() -> None:
    forged = sign_record(OTHER, key="/p2pnode/kv/a", value=b"v", seq=1, ttl=60.0, publisher=ME)
    with pytest.raises(RecordInvalid, match="publisher"):
        validators().validate(forged)


def test_unregistered_namespaces_and_bad_keys_are_refused() -> None:
    with pytest.raises(RecordInvalid, match="no validator"):
        validators().validate(make(key="/p2pnode/other/x"))
    with pytest.raises(RecordInvalid, match="must start"):
        make(key="/ipfs/x")
    with pytest.raises(RecordInvalid, match="namespace"):
        namespace_of("/p2pnode/kv")


def test_value_size_limit_names_both_sizes() -> None:
    with pytest.raises(RecordInvalid, match="65 bytes exceeds the limit of 64"):
        validators().validate(make(value=b"x" * 65))


def test_newest_orders_by_seq_then_publisher() -> None:
    a, b = make(seq=5), make(seq=7)
    assert newest([a, b]) == 1
    assert newest([b, a]) == 0


@given(st.binary(max_size=400))
def test_decode_record_rejects_garbage_with_its_own_error(blob: bytes) -> None:
    with contextlib.suppress(RecordInvalid):
        decode_record(blob, max_size=300)


@given(
    st.dictionaries(
        st.sampled_from(
            ["id", "op", "key", "record", "addrs", "ttl", "ok", "err", "closer", "providers"]
        ),
        st.none()
        | st.integers()
        | st.text(max_size=5)
        | st.binary(max_size=5)
        | st.lists(st.text(max_size=5), max_size=3),
        max_size=8,
    )
)
def test_rpc_parsers_raise_only_remote_protocol_errors(frame: dict) -> None:
    for parse in (parse_request, parse_response):
        try:
            parse(frame, max_record=100)
        except RemoteProtocolError as exc:
            assert exc.reply_hint


def test_add_provider_needs_a_positive_ttl() -> None:
    with pytest.raises(RemoteProtocolError, match="ttl"):
        parse_request({"id": 1, "op": "add_prov", "key": "k", "ttl": 0}, max_record=100)
    ok = parse_request({"id": 1, "op": "add_prov", "key": "k", "ttl": 5}, max_record=100)
    assert ok.ttl == 5.0
