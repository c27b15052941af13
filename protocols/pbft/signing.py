"""Signing and verification, behind two small protocols so that the machine stays pure.

``Signer`` signs bytes as one node; ``Verifier`` checks a signature against the *claimed* signer's
id. The real pair uses libp2p Ed25519 keys: an Ed25519 peer id embeds its public key (identity
multihash), so a verifier needs no key directory. ``KeyedHashSigner``/``KeyedHashVerifier`` are a
fast stand-in for simulations and tests only: a per-node secret derived from a seed, checked with
blake2b. A forger without the victim's secret still fails verification, which is what the
simulator's checks need, but the scheme proves nothing to an outsider.

Nothing here does I/O or reads randomness: keys come from seeds passed in.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
from collections import OrderedDict
from typing import Protocol, TypeVar

from libp2p.crypto.ed25519 import Ed25519PublicKey, create_new_key_pair
from libp2p.crypto.keys import KeyPair
from libp2p.peer.id import ID

from .codec import signing_bytes
from .errors import LocalProtocolError
from .messages import Message

__all__ = [
    "Ed25519Signer",
    "Ed25519Verifier",
    "KeyedHashSigner",
    "KeyedHashVerifier",
    "Signer",
    "Verifier",
    "sign",
    "verify",
]

M = TypeVar("M", bound=Message)


class Signer(Protocol):
    """Signs as one node."""

    @property
    def node_id(self) -> bytes:
        """The signer's peer id (raw bytes)."""
        ...

    def sign(self, data: bytes) -> bytes: ...


class Verifier(Protocol):
    """Checks a signature by the node whose peer id is ``signer``."""

    def verify(self, signer: bytes, data: bytes, signature: bytes) -> bool: ...


def sign(msg: M, signer: Signer) -> M:
    """``msg`` with its signature filled in; its sender must be the signer."""
    if msg.sender != signer.node_id:  # type: ignore[attr-defined]
        raise LocalProtocolError("a node signs only messages it sends")
    return dataclasses.replace(msg, signature=signer.sign(signing_bytes(msg)))  # type: ignore[type-var]


def verify(msg: Message, verifier: Verifier) -> bool:
    """True if ``msg`` carries a valid signature by its claimed sender."""
    return verifier.verify(msg.sender, signing_bytes(msg), msg.signature)  # type: ignore[attr-defined]


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


class KeyedHashSigner:
    """Simulation-only signer: blake2b keyed with a secret that only this node holds."""

    def __init__(self, node_id: bytes, secret: bytes) -> None:
        self._node_id = node_id
        self._secret = secret

    @property
    def node_id(self) -> bytes:
        return self._node_id

    def sign(self, data: bytes) -> bytes:
        return hashlib.blake2b(data, key=self._secret, digest_size=32).digest()


class KeyedHashVerifier:
    """Simulation-only verifier holding every node's secret (derived from one world seed)."""

    def __init__(self, seed: bytes) -> None:
        self._seed = seed

    def secret_for(self, node_id: bytes) -> bytes:
        return hashlib.blake2b(node_id, key=self._seed[:64], digest_size=32).digest()

    def signer_for(self, node_id: bytes) -> KeyedHashSigner:
        return KeyedHashSigner(node_id, self.secret_for(node_id))

    def verify(self, signer: bytes, data: bytes, signature: bytes) -> bool:
        expected = hashlib.blake2b(data, key=self.secret_for(signer), digest_size=32).digest()
        return hmac.compare_digest(expected, signature)
