"""Namespace validators: every key under /p2pnode/<namespace>/ must have one, or it is refused.

Nothing is accepted implicitly: a key in an unregistered namespace fails validation on every
node. Later issues register their own namespaces (blob pointers, round results).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from p2pnode_protocols.dht.errors import RecordInvalid
from p2pnode_protocols.dht.records import KEY_PREFIX, Record, Verifier, check_key, verify_signature


class NamespaceValidator(Protocol):
    def validate(self, record: Record) -> None:
        """Raise RecordInvalid when the record must not be stored."""


def namespace_of(key: str) -> str:
    check_key(key)
    rest = key[len(KEY_PREFIX) :]
    namespace, sep, name = rest.partition("/")
    if not namespace or not sep or not name:
        raise RecordInvalid(f"key {key!r} must look like /p2pnode/<namespace>/<name>")
    return namespace


@dataclass(frozen=True, slots=True)
class KvValidator:
    """``/p2pnode/kv/<name>``: user key/value pairs, any signed publisher, size-bounded."""

    max_value_size: int

    def validate(self, record: Record) -> None:
        name = record.key[len(KEY_PREFIX) + len("kv/") :]
        if not 0 < len(name) <= 256:
            raise RecordInvalid("kv name must be 1 to 256 characters")
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
            raise RecordInvalid("kv name must not contain control characters")
        if len(record.value) > self.max_value_size:
            raise RecordInvalid(
                f"value of {len(record.value)} bytes exceeds the limit of "
                f"{self.max_value_size} bytes"
            )


class Validators:
    """The registry consulted for every record, local or remote."""

    def __init__(self, verify: Verifier) -> None:
        self._verify = verify
        self._by_namespace: dict[str, NamespaceValidator] = {}

    def register(self, namespace: str, validator: NamespaceValidator) -> None:
        if "/" in namespace or not namespace:
            raise ValueError(f"bad namespace {namespace!r}")
        self._by_namespace[namespace] = validator

    @property
    def namespaces(self) -> list[str]:
        return sorted(self._by_namespace)

    def check_key(self, key: str) -> None:
        namespace = namespace_of(key)
        if namespace not in self._by_namespace:
            raise RecordInvalid(f"no validator for namespace {namespace!r}: key refused")

    def validate(self, record: Record) -> None:
        namespace = namespace_of(record.key)
        validator = self._by_namespace.get(namespace)
        if validator is None:
            raise RecordInvalid(f"no validator for namespace {namespace!r}: record refused")
        validator.validate(record)
        verify_signature(record, self._verify)
