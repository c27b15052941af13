"""The genesis committee of a local swarm: node-1..K of a ``p2pnode swarm`` directory.

Identities must exist before any node's config.toml is written (each config names the whole
committee), so this creates ``DIR/node-i/identity.key`` for the first K nodes ahead of
:func:`p2pnode.swarm.prepare`, which then reuses them.
"""

from __future__ import annotations

import os
from pathlib import Path

from p2pnode.identity import create_identity, load_identity_file, peer_id_of


def genesis_validators(parent: Path, k: int) -> list[str]:
    """Peer ids of node-1..node-K under ``parent`` (keys created where missing)."""
    if k < 1:
        raise ValueError("a committee needs at least one validator")
    ids = []
    for i in range(1, k + 1):
        d = parent / f"node-{i}"
        d.mkdir(parents=True, exist_ok=True)
        os.chmod(d, 0o700)
        key = d / "identity.key"
        if not key.exists():
            create_identity(key)
        ids.append(peer_id_of(load_identity_file(key)).to_base58())
    return ids


__all__ = ["genesis_validators"]
