"""Signers and verifiers for the membership machine: the shared protocols of
:mod:`p2pnode_protocols.signing` (the daemon adapts its libp2p Ed25519 key, see
``p2pnode.network.signing``; an Ed25519 peer id embeds its public key, so verifying needs no key
directory)."""

from p2pnode_protocols.signing import KeyedHashSigner, KeyedHashVerifier, Signer, Verifier

__all__ = ["KeyedHashSigner", "KeyedHashVerifier", "Signer", "Verifier"]
