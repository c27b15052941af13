"""SQLite access for the daemon: connection set-up, migrations and the node's tables.

Durability: WAL journal with ``synchronous=NORMAL``. Each change is its own transaction, so a
committed change survives ``kill -9`` of the daemon (the WAL is in the OS page cache); only a
power loss can take the last few. Calls are synchronous and short (one indexed row each): they
run on the trio thread, which is cheaper than a thread hop for sub-millisecond statements.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cbor2

from p2pnode.store.migrations import MIGRATIONS

SCHEMA_VERSION = len(MIGRATIONS)


def _statements(script: str) -> Iterator[str]:
    """Split a migration into statements, by SQLite's own tokenizer (so a ';' inside a
    comment or a string does not end a statement)."""
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            yield pending
            pending = ""
    if pending.strip():
        raise StoreError(f"migration ends with an incomplete statement: {pending.strip()[:80]}")


class StoreError(Exception):
    """The database cannot be opened, is from a newer p2pnode, or is corrupt."""


class Store:
    """One node's SQLite database. Not shared between processes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{path}: {exc}") from None

    def _migrate(self) -> None:
        (version,) = self._db.execute("PRAGMA user_version").fetchone()
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"database schema version {version} is newer than this p2pnode "
                f"({SCHEMA_VERSION}); upgrade p2pnode"
            )
        for number in range(version + 1, SCHEMA_VERSION + 1):
            script = MIGRATIONS[number - 1]
            # executescript would COMMIT first; run statements one by one inside BEGIN so a
            # failed migration leaves the database at the previous version.
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for statement in _statements(script):
                    self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {number}")
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    @property
    def db(self) -> sqlite3.Connection:
        """The connection, for services that keep their own tables (blobs)."""
        return self._db

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Several statements as one atomic change."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    @property
    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def close(self) -> None:
        self._db.close()

    # -- peers ---------------------------------------------------------------------------------

    def remember_peer(self, peer_id: str, addrs: list[str], now: float | None = None) -> None:
        self._db.execute(
            "INSERT INTO peers (peer_id, addrs, last_seen) VALUES (?, ?, ?) "
            "ON CONFLICT (peer_id) DO UPDATE SET addrs = excluded.addrs, "
            "last_seen = excluded.last_seen",
            (peer_id, cbor2.dumps(addrs), time.time() if now is None else now),
        )

    def known_peers(self, limit: int = 64) -> list[tuple[str, list[str]]]:
        rows = self._db.execute(
            "SELECT peer_id, addrs FROM peers ORDER BY last_seen DESC LIMIT ?", (limit,)
        )
        return [(pid, list(cbor2.loads(addrs))) for pid, addrs in rows]

    # -- records -------------------------------------------------------------------------------

    def put_record(self, key: str, record: bytes, expires_at: float, *, owned: bool) -> None:
        # An owned record stays owned when a replica copy of a newer version arrives.
        self._db.execute(
            "INSERT INTO records (key, record, expires_at, owned) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (key) DO UPDATE SET record = excluded.record, "
            "expires_at = max(records.expires_at, excluded.expires_at), "
            "owned = max(records.owned, excluded.owned)",
            (key, record, expires_at, int(owned)),
        )

    def disown_record(self, key: str) -> None:
        self._db.execute("UPDATE records SET owned = 0 WHERE key = ?", (key,))

    def get_record(self, key: str) -> tuple[bytes, float, bool] | None:
        row = self._db.execute(
            "SELECT record, expires_at, owned FROM records WHERE key = ?", (key,)
        ).fetchone()
        return None if row is None else (row[0], row[1], bool(row[2]))

    def iter_records(self) -> Iterator[tuple[str, bytes, float, bool]]:
        for key, record, expires_at, owned in self._db.execute(
            "SELECT key, record, expires_at, owned FROM records"
        ):
            yield key, record, expires_at, bool(owned)

    def owned_records(self) -> list[tuple[str, bytes]]:
        return list(self._db.execute("SELECT key, record FROM records WHERE owned = 1"))

    def expire(self, now: float) -> int:
        """Drop expired replica records and provider entries; owned records are kept."""
        cur = self._db.execute("DELETE FROM records WHERE expires_at < ? AND owned = 0", (now,))
        n = cur.rowcount
        cur = self._db.execute("DELETE FROM providers WHERE expires_at < ?", (now,))
        return n + cur.rowcount

    # -- providers -----------------------------------------------------------------------------

    def add_provider(self, key: str, peer_id: str, addrs: list[str], expires_at: float) -> None:
        self._db.execute(
            "INSERT INTO providers (key, peer_id, addrs, expires_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (key, peer_id) DO UPDATE SET addrs = excluded.addrs, "
            "expires_at = excluded.expires_at",
            (key, peer_id, cbor2.dumps(addrs), expires_at),
        )

    def providers(self, key: str, now: float, limit: int = 64) -> list[tuple[str, list[str]]]:
        rows = self._db.execute(
            "SELECT peer_id, addrs FROM providers WHERE key = ? AND expires_at >= ? "
            "ORDER BY expires_at DESC LIMIT ?",
            (key, now, limit),
        )
        return [(pid, list(cbor2.loads(addrs))) for pid, addrs in rows]

    def provided_by(self, peer_id: str) -> list[str]:
        rows = self._db.execute("SELECT key FROM providers WHERE peer_id = ?", (peer_id,))
        return [k for (k,) in rows]
