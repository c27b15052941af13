"""Signer and verifier protocols shared by every protocol machine, and a keyed-hash stand-in.

The machines in ``protocols/`` sign and verify through these two small protocols, so they stay
pure: the daemon passes its libp2p Ed25519 key in (``p2pnode.network.signing``), simulations and
tests may pass :class:`KeyedHashSigner`: blake2b keyed with a per-node secret derived from one
world seed. A forger without the victim's secret still fails verification, which is all a
simulator's checks need; the scheme proves nothing to an outsider.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Protocol

__all__ = ["KeyedHashSigner", "KeyedHashVerifier", "Signer", "Verifier"]


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
