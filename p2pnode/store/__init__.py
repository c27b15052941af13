"""The node's durable state in one SQLite file (WAL mode), with versioned migrations."""

from p2pnode.store.db import SCHEMA_VERSION, Store, StoreError

__all__ = ["SCHEMA_VERSION", "Store", "StoreError"]
