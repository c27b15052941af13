"""Signatures with libp2p keys: the bridge from the sans-I/O protocols to real crypto.

DHT records carry their publisher's public key (:func:`verify`, :func:`sign_record`); PBFT and
membership messages are signed by peer id (:class:`Ed25519Signer`, :class:`Ed25519Verifier`,
which satisfy :mod:`p2pnode_protocols.signing`'s protocols: an Ed25519 peer id embeds its public
key, so verifying needs no key directory).
"""

from __future__ import annotations

from collections import OrderedDict

from libp2p.crypto.ed25519 import Ed25519PublicKey, create_new_key_pair
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.serialization import deserialize_public_key
from libp2p.peer.id import ID

from p2pnode_protocols.dht.records import Record, signing_payload


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


class _VerifiedCache:
    """Bounded memory of signatures already checked (nested proofs repeat the same votes)."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._seen: OrderedDict[tuple[bytes, bytes, bytes], None] = OrderedDict()

    def __contains__(self, key: tuple[bytes, bytes, bytes]) -> bool:
        return key in self._seen

    def add(self, key: tuple[bytes, bytes, bytes]) -> None:
        self._seen[key] = None
        if len(self._seen) > self._capacity:
            self._seen.popitem(last=False)


class Ed25519Signer:
    """Signs with a libp2p Ed25519 key pair."""

    def __init__(self, key_pair: KeyPair) -> None:
        self._key_pair = key_pair
        self._node_id = ID.from_pubkey(key_pair.public_key).to_bytes()

    @classmethod
    def from_seed(cls, seed: bytes) -> Ed25519Signer:
        """A deterministic key (tests, simulations): ``seed`` is 32 bytes."""
        return cls(create_new_key_pair(seed))

    @property
    def node_id(self) -> bytes:
        return self._node_id

    def sign(self, data: bytes) -> bytes:
        return self._key_pair.private_key.sign(data)


class Ed25519Verifier:
    """Verifies Ed25519 signatures by peer id; caches successes (bounded) and parsed keys."""

    def __init__(self, *, cache_size: int = 65536) -> None:
        self._keys: OrderedDict[bytes, Ed25519PublicKey | None] = OrderedDict()
        self._cache = _VerifiedCache(cache_size)
        self._key_capacity = 4096

    def _key(self, signer: bytes) -> Ed25519PublicKey | None:
        if signer in self._keys:
            return self._keys[signer]
        key: Ed25519PublicKey | None = None
        try:
            pub = ID(signer).extract_public_key()
        except Exception:  # any malformed id is simply "no key"
            pub = None
        if isinstance(pub, Ed25519PublicKey):
            key = pub
        self._keys[signer] = key
        if len(self._keys) > self._key_capacity:
            self._keys.popitem(last=False)
        return key

    def verify(self, signer: bytes, data: bytes, signature: bytes) -> bool:
        entry = (signer, data, signature)
        if entry in self._cache:
            return True
        key = self._key(signer)
        if key is None or len(signature) != 64:
            return False
        ok = key.verify(data, signature)
        if ok:
            self._cache.add(entry)
        return ok
