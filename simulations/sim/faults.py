"""Byzantine behaviours: an honest ``Replica`` inside, its outgoing messages rewritten.

A Byzantine replica holds only its own signing key, so everything it fabricates is either signed
by itself (equivocation, stale replays of its own or others' validly signed messages, lying
status) or fails verification (forgeries, garbage bytes). That is exactly the adversary PBFT
claims to survive, up to f of them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random

from p2pnode_protocols.pbft import (
    Checkpoint,
    CommitVote,
    Message,
    Prepare,
    PrePrepare,
    Request,
    Signer,
    Status,
    batch_digest,
    encode,
    sign,
)

__all__ = ["Adversary", "Outgoing"]

#: (destination, payload): payload is a Message, or raw bytes that the receiver must decode.
Outgoing = tuple[bytes, Message | bytes]

_RESERVOIR = 256


class Adversary:
    def __init__(
        self, kind: str, rng: random.Random, me: bytes, peers: list[bytes], signer: Signer
    ) -> None:
        self.kind = kind
        self._rng = rng
        self._me = me
        self._peers = [p for p in peers if p != me]
        self._signer = signer
        self._seen: list[Message] = []

    def observe(self, msg: Message) -> None:
        """Remember received messages for later replay (bounded reservoir)."""
        if self.kind != "stale":
            return
        if len(self._seen) < _RESERVOIR:
            self._seen.append(msg)
        else:
            self._seen[self._rng.randrange(_RESERVOIR)] = msg

    def rewrite(self, msg: Message, dests: list[bytes]) -> list[Outgoing]:
        kind = self.kind
        if kind == "silent":
            return []
        if kind == "equivocate":
            return self._equivocate(msg, dests)
        out: list[Outgoing] = [(d, msg) for d in dests]
        if kind == "forge":
            out.extend(self._forge(msg, dests))
        elif kind == "stale":
            out = [(d, self._lie(msg)) for d in dests]
            for _ in range(self._rng.randint(0, 3)):
                if self._seen:
                    out.append((self._rng.choice(self._peers), self._rng.choice(self._seen)))
        return out

    def _sign(self, msg: Message) -> Message:
        return sign(msg, self._signer)

    def _equivocate(self, msg: Message, dests: list[bytes]) -> list[Outgoing]:
        alt: Message | None = None
        if isinstance(msg, PrePrepare) and msg.batch:
            batch = msg.batch[:-1] if self._rng.random() < 0.5 else ()
            alt = self._sign(dataclasses.replace(msg, batch=batch, digest=batch_digest(batch)))
        elif isinstance(msg, Prepare | CommitVote):
            alt = self._sign(dataclasses.replace(msg, digest=hashlib.sha256(msg.digest).digest()))
        elif isinstance(msg, Checkpoint):
            bad = hashlib.sha256(msg.state_digest).digest()
            alt = self._sign(dataclasses.replace(msg, state_digest=bad))
        if alt is None:
            return [(d, msg) for d in dests]
        out: list[Outgoing] = []
        for d in dests:
            out.append((d, alt if self._rng.random() < 0.5 else msg))
        return out

    def _forge(self, msg: Message, dests: list[bytes]) -> list[Outgoing]:
        out: list[Outgoing] = []
        rng = self._rng
        for d in dests:
            roll = rng.random()
            if roll < 0.3 and not isinstance(msg, Request):
                # Claim another replica's identity with our signature: verification must fail.
                victim = rng.choice(self._peers)
                out.append((d, dataclasses.replace(msg, sender=victim)))  # type: ignore[type-var]
            elif roll < 0.5:
                sig = bytes(64) if rng.random() < 0.5 else rng.randbytes(64)
                out.append((d, dataclasses.replace(msg, signature=sig)))  # type: ignore[type-var]
            elif roll < 0.65:
                data = encode(msg)
                cut = rng.randrange(len(data))
                garbage = data[:cut] if rng.random() < 0.5 else data + rng.randbytes(3)
                out.append((d, garbage))
            elif roll < 0.75:
                out.append((d, rng.randbytes(rng.randint(0, 48))))
        return out

    def _lie(self, msg: Message) -> Message:
        # A status that claims to know nothing draws state transfers: cost, never harm.
        if isinstance(msg, Status) and self._rng.random() < 0.5:
            lie = dataclasses.replace(msg, executed_seq=0, stable_seq=0, view=0)
            return self._sign(lie)
        return msg
