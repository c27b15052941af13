"""The SQLite store: migrations, durability across reopen, refusal of a newer schema."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from p2pnode.store import SCHEMA_VERSION, Store, StoreError


def test_migrates_a_new_database_and_reopens(tmp_path: Path) -> None:
    db = tmp_path / "node.db"
    s = Store(db)
    assert s.schema_version == SCHEMA_VERSION
    s.put_record("/p2pnode/kv/a", b"rec", 100.0, owned=True)
    s.remember_peer("peerA", ["/ip4/127.0.0.1/tcp/1"], now=5.0)
    s.add_provider("/p2pnode/prov/x", "peerA", ["/ip4/127.0.0.1/tcp/1"], 50.0)
    s.close()
    s = Store(db)
    assert s.get_record("/p2pnode/kv/a") == (b"rec", 100.0, True)
    assert s.known_peers() == [("peerA", ["/ip4/127.0.0.1/tcp/1"])]
    assert s.providers("/p2pnode/prov/x", now=10.0) == [("peerA", ["/ip4/127.0.0.1/tcp/1"])]
    assert s.owned_records() == [("/p2pnode/kv/a", b"rec")]
    assert sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_expiry_keeps_owned_records(tmp_path: Path) -> None:
    s = Store(tmp_path / "node.db")
    s.put_record("/p2pnode/kv/mine", b"1", 10.0, owned=True)
    s.put_record("/p2pnode/kv/theirs", b"2", 10.0, owned=False)
    s.add_provider("/p2pnode/prov/x", "p", [], 10.0)
    assert s.expire(now=20.0) == 2
    assert s.get_record("/p2pnode/kv/mine") is not None
    assert s.get_record("/p2pnode/kv/theirs") is None


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "node.db"
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer than this p2pnode"):
        Store(db)


def test_a_corrupt_file_is_a_store_error(tmp_path: Path) -> None:
    db = tmp_path / "node.db"
    db.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError):
        Store(db)
