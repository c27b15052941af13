"""Signed DHT records: canonical encoding, signature payload and the conflict rule.

A record binds a key to a value under a publisher's signature. ``seq`` orders versions of one
key (publishers use their wall clock in milliseconds, bumped past the last seq they saw), and
``ttl`` says how long a holder keeps it without a republish. Holders store the record bytes
exactly as signed, so any node can re-verify what it is handed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cbor2

from p2pnode_protocols.dht.errors import RecordInvalid

KEY_PREFIX = "/p2pnode/"
MAX_KEY_BYTES = 512
MAX_TTL = 7 * 86400.0
_SIG_DOMAIN = b"p2pnode-record-v1"
# Envelope bytes besides the value: key, ids, public key, signature, CBOR framing.
RECORD_OVERHEAD = 2048

# verify(public_key_bytes, payload, signature) -> publisher peer id (base58) or None if bad.
Verifier = Callable[[bytes, bytes, bytes], str | None]


@dataclass(frozen=True, slots=True, kw_only=True)
class Record:
    key: str
    value: bytes
    seq: int
    ttl: float
    publisher: str
    public_key: bytes
    signature: bytes

    def __post_init__(self) -> None:
        check_key(self.key)
        if not isinstance(self.value, bytes):
            raise RecordInvalid("record value must be bytes")
        if isinstance(self.seq, bool) or not isinstance(self.seq, int) or self.seq < 0:
            raise RecordInvalid("record seq must be a non-negative integer")
        if self.seq >= 1 << 63:
            raise RecordInvalid("record seq out of range")
        # Compared as it is: float() of a CBOR bignum overflows (OverflowError, not ours).
        if not isinstance(self.ttl, int | float) or not 0 < self.ttl <= MAX_TTL:
            raise RecordInvalid(f"record ttl must be in (0, {MAX_TTL:g}] seconds")
        if not isinstance(self.publisher, str) or not 0 < len(self.publisher) <= 128:
            raise RecordInvalid("record publisher must be a peer id")
        if not isinstance(self.public_key, bytes) or not 0 < len(self.public_key) <= 1024:
            raise RecordInvalid("record public key missing or too long")
        if not isinstance(self.signature, bytes) or not 0 < len(self.signature) <= 1024:
            raise RecordInvalid("record signature missing or too long")

    @property
    def version(self) -> tuple[int, str, bytes]:
        """Total order on versions of one key: seq, then publisher, then value bytes."""
        return (self.seq, self.publisher, self.value)

    def encode(self) -> bytes:
        return cbor2.dumps(
            {
                "k": self.key,
                "v": self.value,
                "s": self.seq,
                "t": float(self.ttl),
                "p": self.publisher,
                "pk": self.public_key,
                "sig": self.signature,
            },
            canonical=True,
        )


def check_key(key: Any) -> None:
    if not isinstance(key, str):
        raise RecordInvalid("key must be a string")
    if not key.startswith(KEY_PREFIX):
        raise RecordInvalid(f"key must start with {KEY_PREFIX!r}")
    if len(key.encode()) > MAX_KEY_BYTES:
        raise RecordInvalid(f"key longer than {MAX_KEY_BYTES} bytes")


def signing_payload(key: str, value: bytes, seq: int, ttl: float, publisher: str) -> bytes:
    return cbor2.dumps([_SIG_DOMAIN, key, value, seq, float(ttl), publisher], canonical=True)


def decode_record(data: bytes, *, max_size: int) -> Record:
    """Parse record bytes; raises RecordInvalid (the signature is not checked here)."""
    if not isinstance(data, bytes):
        raise RecordInvalid("record must be bytes")
    if len(data) > max_size:
        raise RecordInvalid(f"record of {len(data)} bytes exceeds {max_size}")
    try:
        raw = cbor2.loads(data)
    except Exception as exc:
        raise RecordInvalid(f"record is not CBOR: {exc}") from None
    if not isinstance(raw, dict):
        raise RecordInvalid("record must be a CBOR map")
    try:
        return Record(
            key=raw["k"],
            value=raw["v"],
            seq=raw["s"],
            ttl=raw["t"],
            publisher=raw["p"],
            public_key=raw["pk"],
            signature=raw["sig"],
        )
    except KeyError as exc:
        raise RecordInvalid(f"record lacks field {exc.args[0]!r}") from None


def verify_signature(record: Record, verify: Verifier) -> None:
    payload = signing_payload(record.key, record.value, record.seq, record.ttl, record.publisher)
    signer = verify(record.public_key, payload, record.signature)
    if signer is None:
        raise RecordInvalid("record signature does not verify")
    if signer != record.publisher:
        raise RecordInvalid("record public key does not belong to its publisher")


def newest(records: list[Record]) -> int:
    """Index of the winning version among candidate records for one key."""
    if not records:
        raise ValueError("no records to choose from")
    return max(range(len(records)), key=lambda i: records[i].version)
