"""Blob manifests: the list of chunk hashes and sizes whose own hash is the blob key.

A manifest is canonical CBOR, so equal content (and equal media type and metadata) always
gives the same bytes and the same key. Decoding bounds every count and size before trusting
it: a manifest from the network names at most ``MAX_CHUNKS`` chunks of at most
``MAX_CHUNK_SIZE`` bytes each.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cbor2

from p2pnode_protocols.blobs.cid import DIGEST_LEN, SHA2_256, manifest_cid
from p2pnode_protocols.cbor_tree import fits
from p2pnode_protocols.text import brief

CHUNK_SIZE = 1 << 20
MAX_CHUNK_SIZE = 4 << 20
MAX_CHUNKS = 1 << 16  # 64 Ki chunks of 1 MiB: blobs up to 64 GiB
MAX_MANIFEST_BYTES = 64 + MAX_CHUNKS * 48 + 65536
MAX_MEDIA_TYPE = 128
FORMAT = "p2pnode-blob-v1"


class ManifestError(ValueError):
    """Bytes that are not a valid manifest."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Manifest:
    chunks: tuple[tuple[bytes, int], ...]  # (multihash, size) in order
    size: int
    media_type: str = "application/octet-stream"
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.chunks) > MAX_CHUNKS:
            raise ManifestError(f"more than {MAX_CHUNKS} chunks")
        total = 0
        for mh, size in self.chunks:
            if not isinstance(mh, bytes) or len(mh) != 2 + DIGEST_LEN or mh[0] != SHA2_256:
                raise ManifestError("chunk names must be sha2-256 multihashes")
            if isinstance(size, bool) or not isinstance(size, int):
                raise ManifestError("chunk sizes must be integers")
            if not 0 < size <= MAX_CHUNK_SIZE:
                raise ManifestError(f"chunk size {brief(size)} outside 1..{MAX_CHUNK_SIZE}")
            total += size
        if total != self.size:
            raise ManifestError(
                f"chunk sizes add up to {brief(total)}, manifest says {brief(self.size)}"
            )
        if not isinstance(self.media_type, str) or not 0 < len(self.media_type) <= MAX_MEDIA_TYPE:
            raise ManifestError("media type must be a short string")
        if not isinstance(self.meta, dict):
            raise ManifestError("meta must be a map")

    def encode(self) -> bytes:
        return cbor2.dumps(
            {
                "format": FORMAT,
                "chunks": [[mh, size] for mh, size in self.chunks],
                "size": self.size,
                "media_type": self.media_type,
                "meta": self.meta,
            },
            canonical=True,
        )

    @property
    def key(self) -> str:
        return manifest_cid(self.encode())

    def offsets(self) -> list[int]:
        out, at = [], 0
        for _, size in self.chunks:
            out.append(at)
            at += size
        return out


def decode_manifest(data: bytes) -> Manifest:
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"manifest of {len(data)} bytes exceeds {MAX_MANIFEST_BYTES}")
    try:
        raw = cbor2.loads(data)
    except Exception as exc:
        raise ManifestError(f"manifest is not CBOR: {exc}") from None
    if not fits(raw, len(data)):
        raise ManifestError("manifest is not in canonical form (shared references)")
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise ManifestError(f"not a {FORMAT} manifest")
    chunks = raw.get("chunks")
    if not isinstance(chunks, list) or not all(isinstance(c, list) and len(c) == 2 for c in chunks):
        raise ManifestError("chunks must be a list of [multihash, size]")
    try:
        manifest = Manifest(
            chunks=tuple((c[0], c[1]) for c in chunks),
            size=raw.get("size"),
            media_type=raw.get("media_type"),
            meta=raw.get("meta", {}),
        )
    except TypeError as exc:
        raise ManifestError(str(exc)) from None
    if manifest.encode() != data:
        raise ManifestError("manifest is not in canonical form")
    return manifest
