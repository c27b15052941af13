"""Signatures with libp2p keys: the bridge from the sans-I/O record layer to real crypto."""

from __future__ import annotations

from libp2p.crypto.keys import KeyPair
from libp2p.crypto.serialization import deserialize_public_key
from libp2p.peer.id import ID

from protocols.dht.records import Record, signing_payload


def verify(public_key: bytes, payload: bytes, signature: bytes) -> str | None:
    """Return the signer's peer id (base58) if ``signature`` is valid, else None."""
    try:
        key = deserialize_public_key(public_key)
        if not key.verify(payload, signature):
            return None
        return ID.from_pubkey(key).to_base58()
    except Exception:
        return None


def sign_record(
    key_pair: KeyPair, *, key: str, value: bytes, seq: int, ttl: float, publisher: str
) -> Record:
    payload = signing_payload(key, value, seq, ttl, publisher)
    return Record(
        key=key,
        value=value,
        seq=seq,
        ttl=ttl,
        publisher=publisher,
        public_key=key_pair.public_key.serialize(),
        signature=key_pair.private_key.sign(payload),
    )
