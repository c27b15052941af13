"""Multihash and CIDv1 (base32) for chunks and manifests.

A chunk is named by the sha2-256 multihash of its bytes; a blob by the CIDv1 of its manifest
(codec dag-cbor, sha2-256), written ``b`` + base32 like IPFS's ``bafyrei...`` keys.
"""

from __future__ import annotations

import base64
import hashlib

SHA2_256 = 0x12
DAG_CBOR = 0x71
RAW = 0x55
CID_V1 = 0x01
DIGEST_LEN = 32


class CidError(ValueError):
    """Text or bytes that are not a CID or multihash this node understands."""


def multihash(data: bytes | memoryview) -> bytes:
    return bytes([SHA2_256, DIGEST_LEN]) + hashlib.sha256(data).digest()


def multihash_hex(data: bytes | memoryview) -> str:
    return multihash(data).hex()


def cid_v1(codec: int, digest_multihash: bytes) -> str:
    if codec >= 0x80:
        raise CidError("codecs above 0x7f need a multi-byte varint; not used here")
    raw = bytes([CID_V1, codec]) + digest_multihash
    return "b" + base64.b32encode(raw).decode().lower().rstrip("=")


def manifest_cid(manifest_bytes: bytes) -> str:
    return cid_v1(DAG_CBOR, multihash(manifest_bytes))


def parse_cid(text: str) -> tuple[int, bytes]:
    """Return (codec, sha2-256 digest) of a CIDv1 base32 string, or raise CidError."""
    if not isinstance(text, str) or not text.startswith("b") or len(text) > 128:
        raise CidError(f"{text!r} is not a base32 CIDv1")
    body = text[1:].upper()
    try:
        raw = base64.b32decode(body + "=" * (-len(body) % 8))
    except Exception:
        raise CidError(f"{text!r} is not valid base32") from None
    if len(raw) != 4 + DIGEST_LEN or raw[0] != CID_V1 or raw[2] != SHA2_256 or raw[3] != DIGEST_LEN:
        raise CidError(f"{text!r} is not a sha2-256 CIDv1")
    return raw[1], raw[4:]
