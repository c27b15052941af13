"""Seeded Ed25519 for the simulator, on PyNaCl: the daemon's keys without the daemon's code.

Some seeds run the PBFT simulator with real Ed25519 signatures (``SimConfig.signer``), so that
signature sizes and verification costs are the daemon's. The daemon signs with its libp2p key
(``p2pnode.network.signing``), which ``simulations/`` may not import; py-libp2p's Ed25519 keys
are PyNaCl's, so this module builds the same thing from PyNaCl directly: a key derived from a
32-byte seed (RFC 8032, deterministic), the same peer id (the identity multihash of the
protobuf-encoded public key, 38 bytes, from which a verifier reads the key back) and the same
signatures, so a seed replays exactly as it did with the daemon's classes (a test compares the
two). Both satisfy :mod:`p2pnode_protocols.signing`'s ``Signer`` and ``Verifier``.
"""

from __future__ import annotations

from collections import OrderedDict

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

__all__ = ["Ed25519Signer", "Ed25519Verifier", "peer_id"]

#: Identity multihash (code 0, length 36) of a protobuf ``PublicKey`` (field 1: key type 1,
#: Ed25519; field 2: 32 bytes of key), as libp2p builds a peer id from a small public key.
_ID_PREFIX = b"\x00\x24" + b"\x08\x01" + b"\x12\x20"


def peer_id(public_key: bytes) -> bytes:
    """The libp2p peer id (raw bytes) of an Ed25519 public key."""
    return _ID_PREFIX + public_key


class Ed25519Signer:
    """Signs with an Ed25519 key derived from a 32-byte seed."""

    def __init__(self, key: SigningKey) -> None:
        self._key = key
        self._node_id = peer_id(bytes(key.verify_key))

    @classmethod
    def from_seed(cls, seed: bytes) -> Ed25519Signer:
        """A deterministic key: ``seed`` is 32 bytes."""
        return cls(SigningKey(seed))

    @property
    def node_id(self) -> bytes:
        return self._node_id

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data).signature


class Ed25519Verifier:
    """Verifies Ed25519 signatures by peer id. Remembers parsed keys and signatures already
    found good (both bounded): PBFT's proofs carry the same votes again and again."""

    def __init__(self, *, cache_size: int = 65536, key_capacity: int = 4096) -> None:
        self._keys: OrderedDict[bytes, VerifyKey | None] = OrderedDict()
        self._good: OrderedDict[tuple[bytes, bytes, bytes], None] = OrderedDict()
        self._cache_size = cache_size
        self._key_capacity = key_capacity

    def _key(self, signer: bytes) -> VerifyKey | None:
        if signer in self._keys:
            return self._keys[signer]
        key = None
        if len(signer) == len(_ID_PREFIX) + 32 and signer.startswith(_ID_PREFIX):
            key = VerifyKey(signer[len(_ID_PREFIX) :])
        self._keys[signer] = key
        if len(self._keys) > self._key_capacity:
            self._keys.popitem(last=False)
        return key

    def verify(self, signer: bytes, data: bytes, signature: bytes) -> bool:
        entry = (signer, data, signature)
        if entry in self._good:
            return True
        key = self._key(signer)
        if key is None or len(signature) != 64:
            return False
        try:
            key.verify(data, signature)
        except BadSignatureError:
            return False
        self._good[entry] = None
        if len(self._good) > self._cache_size:
            self._good.popitem(last=False)
        return True
