"""The records and provider entries this node holds: in memory, and persisted in SQLite.

Records (ours and the replica copies peers sent us) are kept decoded in a dict for the hot
paths (a ``find_value`` answer, a replica's local get) and written through to the ``records``
table on every change, so a restarted node holds what it held. Provider entries live only in
the ``providers`` table: they are read rarely and a query wants them ordered and limited.

Versions: a holder keeps the newest version of a key (:attr:`Record.version`) and refuses an
older one; an equal version refreshes the expiry (that is how an owner's republish works).

Ownership: a record this node published is *owned*: it never expires here and the service
republishes it. A newer version signed by someone else ends our ownership.

Time is passed in by the caller (``now``, wall-clock seconds), so this module never reads a
clock and tests can step expiry by hand.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from p2pnode.network.dht.keys import PROVIDER_PREFIX
from p2pnode.store import Store
from p2pnode_protocols.dht.errors import LocalProtocolError, RecordInvalid
from p2pnode_protocols.dht.records import Record, decode_record
from p2pnode_protocols.dht.validators import Validators


@dataclass(slots=True)
class HeldRecord:
    """One key's record as held here: decoded, its exact signed bytes, and when it expires."""

    record: Record
    raw: bytes
    expires_at: float
    owned: bool


class RecordStore:
    """Records by key and provider entries by key, for one node (``local_b58``).

    Errors: :meth:`accept` raises ``RecordInvalid`` for a record that does not decode, fails its
    namespace's validator or is older than the held version; :meth:`claim_seq` raises
    ``LocalProtocolError`` for a sequence number that is not above the held one.

    Resources: bounded only by ``max_record`` per record and the TTL, as in Kademlia (the RPC
    handler rate-limits the stores each peer may make).
    """

    def __init__(
        self,
        store: Store,
        validators: Validators,
        *,
        local_b58: str,
        max_record: int,
        on_record: Callable[[str, int, str], None] | None = None,
    ) -> None:
        self.store = store
        self.validators = validators
        self.local_b58 = local_b58
        self.max_record = max_record
        #: Called with (key, seq, publisher) whenever a record is stored here.
        self.on_record: Callable[[str, int, str], None] = on_record or (lambda k, s, p: None)
        self._held: dict[str, HeldRecord] = {}
        self._last_seq: dict[str, int] = {}
        for key, raw, expires_at, owned in store.iter_records():
            try:
                record = decode_record(raw, max_size=max_record)
            except RecordInvalid:
                continue
            self._held[key] = HeldRecord(record, raw, expires_at, owned)

    def __len__(self) -> int:
        """Records held, expired replica copies not yet swept included."""
        return len(self._held)

    # -- records -------------------------------------------------------------------------------

    def local(self, key: str, now: float) -> HeldRecord | None:
        """The record held for ``key`` if it is ours or has not expired at ``now``."""
        held = self._held.get(key)
        if held is None:
            return None
        if held.expires_at < now and not held.owned:
            return None
        return held

    def accept(self, raw: bytes, *, owned: bool, now: float) -> Record:
        """Validate and store a record if it is at least as new as ours. Raises RecordInvalid."""
        record = decode_record(raw, max_size=self.max_record)
        self.validators.validate(record)
        current = self._held.get(record.key)
        if current is not None and record.version < current.record.version:
            raise RecordInvalid(
                f"older than the held version (seq {record.seq} < {current.record.seq})"
            )
        expires_at = now + float(record.ttl)
        keep_owned = owned or (current is not None and current.owned)
        if current is not None and current.owned and record.publisher != self.local_b58:
            keep_owned = False  # someone else wrote a newer version: it is theirs to refresh
        self._held[record.key] = HeldRecord(record, raw, expires_at, keep_owned)
        self.store.put_record(record.key, raw, expires_at, owned=keep_owned)
        if current is not None and current.owned and not keep_owned:
            self.store.disown_record(record.key)
        self.on_record(record.key, record.seq, record.publisher)
        return record

    def claim_seq(self, key: str, seq: int) -> None:
        """Reserve an explicit ``seq`` for our next version of ``key``: it must be above the
        held version's, and later clock-based numbers go past it."""
        held = self._held.get(key)
        if held is not None and seq <= held.record.seq:
            raise LocalProtocolError(
                f"sequence {seq} is not above the held version's {held.record.seq}"
            )
        self._last_seq[key] = seq

    def next_seq(self, key: str, now_ms: int) -> int:
        """The sequence number for our next version of ``key``: the clock in milliseconds,
        bumped past the held version and past any number we handed out before."""
        held = self._held.get(key)
        floor = max(self._last_seq.get(key, 0), held.record.seq if held else 0)
        seq = max(now_ms, floor + 1)
        self._last_seq[key] = seq
        return seq

    def owned(self) -> list[tuple[str, bytes]]:
        """(key, signed bytes) of every record we own, as of this call: what a republish sends."""
        return [
            (key, held.raw)
            for key, held in list(self._held.items())
            if held.owned and not key.startswith(PROVIDER_PREFIX)
        ]

    def expire(self, now: float) -> None:
        """Forget replica records and provider entries that expired before ``now``."""
        for key, held in list(self._held.items()):
            if held.expires_at < now and not held.owned:
                del self._held[key]
        self.store.expire(now)

    # -- providers -----------------------------------------------------------------------------

    def add_provider(self, key: str, peer_b58: str, addrs: list[str], expires_at: float) -> None:
        """Record (or refresh) that ``peer_b58`` provides ``key`` at ``addrs``."""
        self.store.add_provider(key, peer_b58, addrs, expires_at)

    def providers(self, key: str, now: float, limit: int) -> list[tuple[str, list[str]]]:
        """Up to ``limit`` unexpired providers of ``key``, latest expiry first."""
        return self.store.providers(key, now, limit)

    def provided_by(self, peer_b58: str) -> list[str]:
        """The keys ``peer_b58`` has provider entries for (ours, for a republish)."""
        return self.store.provided_by(peer_b58)
