"""Signers and verifiers behind two small protocols, so the machine stays pure.

The daemon signs with its libp2p Ed25519 key (``p2pnode.membership`` adapts it: an Ed25519 peer
id embeds its public key, so verifying needs no key directory). :class:`KeyedHashSigner` is a
fast stand-in for simulations and tests only: blake2b keyed with a per-node secret derived from
a world seed. A forger without the victim's secret still fails verification, which is all the
simulator's checks need; it proves nothing to an outsider.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Protocol

__all__ = ["KeyedHashSigner", "KeyedHashVerifier", "Signer", "Verifier"]


class Signer(Protocol):
    @property
    def node_id(self) -> bytes: ...

    def sign(self, data: bytes) -> bytes: ...


class Verifier(Protocol):
    def verify(self, signer: bytes, data: bytes, signature: bytes) -> bool: ...


class KeyedHashVerifier:
    def __init__(self, world_secret: bytes) -> None:
        self._secret = world_secret

    def secret_for(self, node_id: bytes) -> bytes:
        return hashlib.blake2b(node_id, key=self._secret[:64], digest_size=32).digest()

    def signer_for(self, node_id: bytes) -> KeyedHashSigner:
        return KeyedHashSigner(node_id, self.secret_for(node_id))

    def verify(self, signer: bytes, data: bytes, signature: bytes) -> bool:
        expected = hashlib.blake2b(data, key=self.secret_for(signer), digest_size=32).digest()
        return hmac.compare_digest(expected, signature)


class KeyedHashSigner:
    def __init__(self, node_id: bytes, secret: bytes) -> None:
        self._node_id = node_id
        self._secret = secret

    @property
    def node_id(self) -> bytes:
        return self._node_id

    def sign(self, data: bytes) -> bytes:
        return hashlib.blake2b(data, key=self._secret, digest_size=32).digest()
