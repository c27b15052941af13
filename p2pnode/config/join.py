"""Join tokens: how a node on another machine learns where the swarm is and who validates.

A token is one line a person copies from the first node to the others (docs/quickstart.md):
``p2pnode-join-v1:`` followed by the URL-safe base64 of a small JSON object,
``{"bootstrap": [full multiaddrs], "validators": [peer ids, in primary order]}``. The
``validators`` list is empty for a token that only says where to join.

A validator set must be identical on every validator (PBFT counts votes against it): the token
carries the list itself, in order, and :func:`committee_fingerprint` (a hash of that ordered
list) is printed by the command that makes a token, by the command that applies it and by
``p2pnode status``, so a person can check that every machine holds the same committee.
Decoding checks every field like the settings themselves (bootstrap addresses with
``/p2p/``, distinct peer ids) and bounds the token's size first.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

from p2pnode.config.schema import ConfigError, _bootstrap, _peer_ids

PREFIX = "p2pnode-join-v1:"
MAX_TOKEN_CHARS = 16_384


@dataclass(frozen=True, slots=True)
class JoinToken:
    bootstrap: tuple[str, ...]
    validators: tuple[str, ...] = ()

    def encode(self) -> str:
        body = {"bootstrap": list(self.bootstrap), "validators": list(self.validators)}
        raw = json.dumps(body, separators=(",", ":")).encode()
        return PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @property
    def fingerprint(self) -> str | None:
        return committee_fingerprint(self.validators) if self.validators else None


def committee_fingerprint(validators: Sequence[str]) -> str:
    """16 hex characters naming an ordered validator list (the same list, the same text)."""
    return hashlib.sha256("\n".join(validators).encode()).hexdigest()[:16]


def decode_token(text: str) -> JoinToken:
    """The token ``text`` (surrounding blanks ignored), or :class:`ConfigError` saying why not."""
    text = text.strip()
    if len(text) > MAX_TOKEN_CHARS:
        raise ConfigError(f"join token: longer than {MAX_TOKEN_CHARS} characters")
    if not text.startswith(PREFIX):
        raise ConfigError(
            f"join token: must start with {PREFIX!r} (print one with `p2pnode join-token` "
            "on a running node)"
        )
    body = text[len(PREFIX) :]
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        tree = json.loads(raw)
    except (binascii.Error, ValueError):
        raise ConfigError("join token: damaged (was it copied whole?)") from None
    if not isinstance(tree, dict):
        raise ConfigError("join token: damaged (not an object)")
    bootstrap = tree.get("bootstrap", [])
    validators = tree.get("validators", [])
    for name, value in (("bootstrap", bootstrap), ("validators", validators)):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"join token: {name} must be a list of strings")
    if not bootstrap:
        raise ConfigError("join token: names no address to join")
    reason = _bootstrap(bootstrap) or _peer_ids(validators)
    if reason:
        raise ConfigError(f"join token: {reason}")
    return JoinToken(tuple(bootstrap), tuple(validators))


def peer_of(addr: str) -> str | None:
    """The ``/p2p/`` peer id at the end of ``addr`` (None without one)."""
    _, sep, peer = addr.rpartition("/p2p/")
    return peer.split("/")[0] if sep else None


__all__ = [
    "MAX_TOKEN_CHARS",
    "PREFIX",
    "JoinToken",
    "committee_fingerprint",
    "decode_token",
    "peer_of",
]
