"""The node's long-lived identity: an Ed25519 key pair kept in the data dir (mode 0600).

The peer id is derived from the public key, so it stays the same for as long as the key file
does. Losing the file means becoming a new peer; copying it means impersonating this one.
"""

from __future__ import annotations

import os
from pathlib import Path

from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.keys import KeyPair
from libp2p.identity_utils import load_identity, save_identity
from libp2p.peer.id import ID


class IdentityError(Exception):
    """The identity key file is missing, unreadable or not a private key."""


def create_identity(path: Path) -> KeyPair:
    """Write a new Ed25519 key to ``path`` (which must not exist) with mode 0600."""
    if path.exists():
        raise IdentityError(f"{path} already exists; refusing to overwrite an identity")
    path.parent.mkdir(parents=True, exist_ok=True)
    key_pair = create_new_key_pair()
    save_identity(key_pair, str(path))
    os.chmod(path, 0o600)  # save_identity sets it too; never rely on a library for this
    return key_pair


def load_identity_file(path: Path) -> KeyPair:
    if not path.exists():
        raise IdentityError(f"no identity key at {path}: run 'p2pnode init' first")
    try:
        return load_identity(str(path))
    except Exception as exc:
        raise IdentityError(f"{path} is not a valid identity key: {exc}") from None


def peer_id_of(key_pair: KeyPair) -> ID:
    return ID.from_pubkey(key_pair.public_key)
