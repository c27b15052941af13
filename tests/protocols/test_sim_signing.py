"""The simulator's seeded Ed25519 (``p2pnode_simulations.sim.signing``, on PyNaCl) is the daemon's
(``p2pnode.network.signing``, on py-libp2p) bit for bit: same peer ids, same signatures, each
verifies the other's. So a simulator seed that draws Ed25519 replays as it did before the
simulator stopped importing the daemon."""

from __future__ import annotations

import hashlib

from p2pnode.network.signing import Ed25519Signer as DaemonSigner
from p2pnode.network.signing import Ed25519Verifier as DaemonVerifier
from p2pnode_simulations.sim.signing import Ed25519Signer, Ed25519Verifier


def test_the_simulators_ed25519_is_the_daemons() -> None:
    for i in range(8):
        seed = hashlib.sha256(b"sim-signing-%d" % i).digest()
        ours, theirs = Ed25519Signer.from_seed(seed), DaemonSigner.from_seed(seed)
        assert ours.node_id == theirs.node_id
        data = b"message %d" % i
        assert ours.sign(data) == theirs.sign(data)
        assert Ed25519Verifier().verify(theirs.node_id, data, theirs.sign(data))
        assert DaemonVerifier().verify(ours.node_id, data, ours.sign(data))


def test_the_simulators_verifier_refuses_what_the_daemons_refuses() -> None:
    signer = Ed25519Signer.from_seed(bytes(32))
    other = Ed25519Signer.from_seed(bytes([1]) * 32)
    sig = signer.sign(b"x")
    cases = [
        (signer.node_id, b"y", sig),  # other data
        (other.node_id, b"x", sig),  # someone else's id
        (signer.node_id, b"x", sig[:-1]),  # short signature
        (b"not a peer id", b"x", sig),  # malformed id
        (signer.node_id, b"x", bytes(64)),  # garbage signature
    ]
    for case in cases:
        assert Ed25519Verifier().verify(*case) is DaemonVerifier().verify(*case) is False
    v = Ed25519Verifier()
    assert v.verify(signer.node_id, b"x", sig) and v.verify(signer.node_id, b"x", sig)  # cached
