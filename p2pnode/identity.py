"""The node's long-lived identity: an Ed25519 key pair kept in the data dir (mode 0600).

The peer id is derived from the public key, so it stays the same for as long as the key file
does. Losing the file means becoming a new peer; copying it means impersonating this one.

libp2p is imported inside the functions, not at module level: the CLI imports this module for
:class:`IdentityError` on every command, and loading py-libp2p costs about a second.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from libp2p.crypto.keys import KeyPair
    from libp2p.peer.id import ID


class IdentityError(Exception):
    """The identity key file is missing, unreadable or not a private key."""


def create_identity(path: Path) -> KeyPair:
    """Write a new Ed25519 key to ``path`` (which must not exist) with mode 0600."""
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.identity_utils import save_identity

    if path.exists():
        raise IdentityError(f"{path} already exists; refusing to overwrite an identity")
    path.parent.mkdir(parents=True, exist_ok=True)
    key_pair = create_new_key_pair()
    save_identity(key_pair, str(path))
    os.chmod(path, 0o600)  # save_identity sets it too; never rely on a library for this
    return key_pair


def load_identity_file(path: Path) -> KeyPair:
    from libp2p.identity_utils import load_identity

    if not path.exists():
        raise IdentityError(f"no identity key at {path}: run 'p2pnode init' first")
    try:
        return load_identity(str(path))
    except Exception as exc:
        raise IdentityError(f"{path} is not a valid identity key: {exc}") from None


def peer_id_of(key_pair: KeyPair) -> ID:
    from libp2p.peer.id import ID

    return ID.from_pubkey(key_pair.public_key)
