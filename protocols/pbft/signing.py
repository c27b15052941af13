"""Signing and verification, behind two small protocols so that the machine stays pure.

``Signer`` signs bytes as one node; ``Verifier`` checks a signature against the *claimed* signer's
id. The real pair, on libp2p Ed25519 keys, lives in ``p2pnode.network.signing``: nothing under
protocols/ depends on the py-libp2p package. ``KeyedHashSigner`` and ``KeyedHashVerifier`` (from
:mod:`p2pnode_protocols.signing`) are the fast stand-in for simulations and tests. Nothing here does
I/O or reads randomness.
"""

from __future__ import annotations

import dataclasses
from typing import TypeVar

from p2pnode_protocols.signing import KeyedHashSigner, KeyedHashVerifier, Signer, Verifier

from .codec import signing_bytes
from .errors import LocalProtocolError
from .messages import Message

__all__ = [
    "KeyedHashSigner",
    "KeyedHashVerifier",
    "Signer",
    "Verifier",
    "sign",
    "verify",
]

M = TypeVar("M", bound=Message)


def sign(msg: M, signer: Signer) -> M:
    """``msg`` with its signature filled in; its sender must be the signer."""
    if msg.sender != signer.node_id:  # type: ignore[attr-defined]
        raise LocalProtocolError("a node signs only messages it sends")
    return dataclasses.replace(msg, signature=signer.sign(signing_bytes(msg)))  # type: ignore[type-var]


def verify(msg: Message, verifier: Verifier) -> bool:
    """True if ``msg`` carries a valid signature by its claimed sender."""
    return verifier.verify(msg.sender, signing_bytes(msg), msg.signature)  # type: ignore[attr-defined]
