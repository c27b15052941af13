"""Named pointers: ``/p2pnode/ptr/<owner peer id>/<name>`` -> a blob key, like IPNS.

Only the owner named in the key may publish under it (the record's verified publisher must be
that owner), the value must be a blob key, and the DHT keeps the highest sequence number.
"""

from __future__ import annotations

from dataclasses import dataclass

from p2pnode_protocols.blobs.cid import CidError, parse_cid
from p2pnode_protocols.dht.errors import RecordInvalid
from p2pnode_protocols.dht.records import KEY_PREFIX, Record

PREFIX = KEY_PREFIX + "ptr/"
MAX_NAME = 200


def pointer_key(owner: str, name: str) -> str:
    if not name or len(name) > MAX_NAME or "/" in name:
        raise RecordInvalid(f"pointer names are 1 to {MAX_NAME} characters without '/'")
    return f"{PREFIX}{owner}/{name}"


@dataclass(frozen=True, slots=True)
class PointerValidator:
    def validate(self, record: Record) -> None:
        rest = record.key[len(PREFIX) :]
        owner, sep, name = rest.partition("/")
        if not sep or not name or "/" in name or len(name) > MAX_NAME:
            raise RecordInvalid("pointer keys look like /p2pnode/ptr/<owner>/<name>")
        if owner != record.publisher:
            raise RecordInvalid("only the owner named in a pointer key may publish it")
        try:
            parse_cid(record.value.decode())
        except (UnicodeDecodeError, CidError):
            raise RecordInvalid("a pointer's value must be a blob key") from None
