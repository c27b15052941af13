"""The blob service's errors, and the check of a blob key's syntax that raises one."""

from __future__ import annotations

from protocols.blobs.cid import CidError, parse_cid


class BlobError(Exception):
    """A blob could not be stored or fetched; the message says why."""


class BlobNotFound(BlobError):
    """No provider answered for the blob within the fetch timeout."""


def check_key(key: str) -> None:
    try:
        parse_cid(key)
    except CidError as exc:
        raise BlobError(str(exc)) from None
