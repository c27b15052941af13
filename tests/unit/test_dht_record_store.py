"""The DHT's record and provider store alone, against a real SQLite file: version order,
ownership, expiry, sequence numbers, provider limits, reload after a restart."""

from __future__ import annotations

from pathlib import Path

import pytest
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.keys import KeyPair
from libp2p.peer.id import ID

from p2pnode.network.dht.records import RecordStore
from p2pnode.network.signing import sign_record, verify
from p2pnode.store import Store
from p2pnode_protocols.dht.errors import LocalProtocolError, RecordInvalid
from p2pnode_protocols.dht.records import RECORD_OVERHEAD
from p2pnode_protocols.dht.validators import KvValidator, Validators

KEY = "/p2pnode/kv/greeting"
MAX_VALUE = 1024
T0 = 1_000_000.0


def key_pair(seed: int) -> KeyPair:
    return create_new_key_pair(bytes([seed]) * 32)


def b58(pair: KeyPair) -> str:
    return ID.from_pubkey(pair.public_key).to_base58()


ME, OTHER = key_pair(1), key_pair(2)


def signed(
    pair: KeyPair, seq: int, value: bytes = b"v", *, key: str = KEY, ttl: float = 60.0
) -> bytes:
    return sign_record(pair, key=key, value=value, seq=seq, ttl=ttl, publisher=b58(pair)).encode()


def open_store(path: Path) -> RecordStore:
    validators = Validators(verify)
    validators.register("kv", KvValidator(MAX_VALUE))
    return RecordStore(
        Store(path), validators, local_b58=b58(ME), max_record=MAX_VALUE + RECORD_OVERHEAD
    )


@pytest.fixture
def records(tmp_path: Path) -> RecordStore:
    return open_store(tmp_path / "node.db")


def test_newest_version_wins_and_older_ones_are_refused(records: RecordStore) -> None:
    records.accept(signed(OTHER, 5, b"five"), owned=False, now=T0)
    with pytest.raises(RecordInvalid, match=r"older than the held version \(seq 4 < 5\)"):
        records.accept(signed(OTHER, 4, b"four"), owned=False, now=T0)
    records.accept(signed(OTHER, 6, b"six"), owned=False, now=T0)
    held = records.local(KEY, T0)
    assert held is not None and (held.record.seq, held.record.value) == (6, b"six")
    assert records.store.get_record(KEY) == (held.raw, T0 + 60.0, False)


def test_an_equal_version_refreshes_the_expiry(records: RecordStore) -> None:
    raw = signed(OTHER, 5)
    records.accept(raw, owned=False, now=T0)
    records.accept(raw, owned=False, now=T0 + 50)
    held = records.local(KEY, T0 + 100)
    assert held is not None and held.expires_at == T0 + 110
    assert records.store.get_record(KEY) == (raw, T0 + 110, False)


def test_invalid_records_are_refused_and_not_stored(records: RecordStore) -> None:
    with pytest.raises(RecordInvalid):
        records.accept(b"not cbor at all", owned=False, now=T0)
    with pytest.raises(RecordInvalid):
        records.accept(signed(OTHER, 1, b"x" * (MAX_VALUE + 1)), owned=False, now=T0)
    with pytest.raises(RecordInvalid):  # no validator for this namespace
        records.accept(signed(OTHER, 1, key="/p2pnode/nope/x"), owned=False, now=T0)
    assert len(records) == 0 and records.store.get_record(KEY) is None


def test_replica_copies_expire_and_owned_records_do_not(records: RecordStore) -> None:
    mine = "/p2pnode/kv/mine"
    records.accept(signed(ME, 1, key=mine, ttl=10.0), owned=True, now=T0)
    records.accept(signed(OTHER, 1, ttl=10.0), owned=False, now=T0)
    assert records.local(KEY, T0 + 10) is not None  # expiry is strict: still fresh at the edge
    # An expired copy is not served even before the sweep removes it.
    assert records.local(KEY, T0 + 11) is None and len(records) == 2
    records.expire(T0 + 11)
    assert len(records) == 1 and records.store.get_record(KEY) is None
    assert records.local(mine, T0 + 1e6) is not None
    assert [k for k, _ in records.owned()] == [mine]


def test_a_newer_version_by_someone_else_ends_our_ownership(records: RecordStore) -> None:
    records.accept(signed(ME, 1), owned=True, now=T0)
    records.accept(signed(ME, 2), owned=False, now=T0)  # our own newer copy, from a replica
    assert records.owned() == [(KEY, signed(ME, 2))]
    records.accept(signed(OTHER, 3), owned=False, now=T0)
    assert records.owned() == []
    assert records.store.get_record(KEY) == (signed(OTHER, 3), T0 + 60.0, False)
    records.expire(T0 + 61)
    assert records.local(KEY, T0) is None


def test_every_stored_record_is_reported(records: RecordStore) -> None:
    seen: list[tuple[str, int, str]] = []
    records.on_record = lambda key, seq, publisher: seen.append((key, seq, publisher))
    records.accept(signed(OTHER, 7), owned=False, now=T0)
    with pytest.raises(RecordInvalid):
        records.accept(signed(OTHER, 6), owned=False, now=T0)
    assert seen == [(KEY, 7, b58(OTHER))]


def test_sequence_numbers_follow_the_clock_and_pass_every_held_or_claimed_one(
    records: RecordStore,
) -> None:
    assert records.next_seq(KEY, now_ms=100) == 100
    assert records.next_seq(KEY, now_ms=100) == 101  # same millisecond: still increasing
    assert records.next_seq(KEY, now_ms=90) == 102  # clock went back: still increasing
    records.accept(signed(OTHER, 500), owned=False, now=T0)
    assert records.next_seq(KEY, now_ms=200) == 501
    with pytest.raises(LocalProtocolError, match="not above the held version's 500"):
        records.claim_seq(KEY, 500)
    records.claim_seq(KEY, 900)
    assert records.next_seq(KEY, now_ms=200) == 901


def test_records_survive_a_reopen(tmp_path: Path) -> None:
    first = open_store(tmp_path / "node.db")
    first.accept(signed(ME, 3), owned=True, now=T0)
    first.accept(signed(OTHER, 4, key="/p2pnode/kv/theirs"), owned=False, now=T0)
    first.store.close()
    again = open_store(tmp_path / "node.db")
    assert len(again) == 2
    assert again.owned() == [(KEY, signed(ME, 3))]
    held = again.local("/p2pnode/kv/theirs", T0)
    assert held is not None and held.record.seq == 4 and held.expires_at == T0 + 60.0


def test_providers_are_limited_newest_expiry_first_and_expire(records: RecordStore) -> None:
    prov = "/p2pnode/prov/blob"
    for i in range(30):
        records.add_provider(prov, f"peer{i:02d}", [f"/ip4/10.0.0.{i}/tcp/1"], T0 + i)
    records.add_provider(prov, b58(ME), ["/ip4/127.0.0.1/tcp/1"], float("inf"))
    found = records.providers(prov, T0, limit=20)
    assert len(found) == 20
    assert [pid for pid, _ in found[:3]] == [b58(ME), "peer29", "peer28"]
    assert found[1] == ("peer29", ["/ip4/10.0.0.29/tcp/1"])
    # Expired entries are not answered, and the sweep deletes them; our own never expire.
    assert [pid for pid, _ in records.providers(prov, T0 + 27.5, limit=20)] == [
        b58(ME),
        "peer29",
        "peer28",
    ]
    records.expire(T0 + 1e6)
    assert records.providers(prov, T0, limit=20) == [(b58(ME), ["/ip4/127.0.0.1/tcp/1"])]
    assert records.provided_by(b58(ME)) == [prov]
    assert records.provided_by("peer03") == []


def test_a_provider_entry_is_refreshed_not_duplicated(records: RecordStore) -> None:
    prov = "/p2pnode/prov/blob"
    records.add_provider(prov, "peerA", ["/ip4/10.0.0.1/tcp/1"], T0 + 5)
    records.add_provider(prov, "peerA", ["/ip4/10.0.0.2/tcp/1"], T0 + 50)
    assert records.providers(prov, T0 + 10, limit=20) == [("peerA", ["/ip4/10.0.0.2/tcp/1"])]
