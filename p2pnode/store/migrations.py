"""Schema migrations, applied in order; ``PRAGMA user_version`` records the last one applied.

Append new steps, never edit an old one: a node's database may be at any earlier version.
"""

MIGRATIONS: tuple[str, ...] = (
    # 1: peers we have met, records we hold (owned ones are republished), provider records.
    """
    CREATE TABLE peers (
        peer_id   TEXT PRIMARY KEY,
        addrs     BLOB NOT NULL,          -- CBOR list of multiaddr strings
        last_seen REAL NOT NULL
    );
    CREATE TABLE records (
        key        TEXT PRIMARY KEY,
        record     BLOB NOT NULL,         -- the signed record exactly as received
        expires_at REAL NOT NULL,         -- unix time, the record is dropped after it
        owned      INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX records_expiry ON records (expires_at);
    CREATE TABLE providers (
        key        TEXT NOT NULL,
        peer_id    TEXT NOT NULL,
        addrs      BLOB NOT NULL,
        expires_at REAL NOT NULL,
        PRIMARY KEY (key, peer_id)
    );
    CREATE INDEX providers_expiry ON providers (expires_at);
    """,
    # 2: content-addressed blobs: chunk files on disk, manifests, which blob uses which chunk.
    """
    CREATE TABLE chunks (
        hash BLOB PRIMARY KEY,            -- sha2-256 multihash of the chunk
        size INTEGER NOT NULL
    );
    CREATE TABLE blobs (
        key         TEXT PRIMARY KEY,     -- CIDv1 of the manifest
        manifest    BLOB NOT NULL,
        size        INTEGER NOT NULL,
        complete    INTEGER NOT NULL,     -- every chunk is on disk
        pinned      INTEGER NOT NULL,     -- never garbage-collected
        last_access REAL NOT NULL
    );
    CREATE TABLE blob_chunks (
        blob TEXT NOT NULL,
        idx  INTEGER NOT NULL,
        hash BLOB NOT NULL,
        PRIMARY KEY (blob, idx)
    );
    CREATE INDEX blob_chunks_hash ON blob_chunks (hash);
    CREATE INDEX blobs_lru ON blobs (pinned, last_access);
    """,
    # 3: PBFT (docs/pbft.md, "In the daemon"): the replica's durable state and the committed log.
    """
    CREATE TABLE consensus_meta (
        key   TEXT PRIMARY KEY,           -- view, view_change, new_view, stable, boot
        value BLOB NOT NULL               -- CBOR or a PBFT codec message/envelope
    );
    CREATE TABLE consensus_slots (
        seq         INTEGER PRIMARY KEY,
        view        INTEGER NOT NULL,
        pre_prepare BLOB,                 -- the accepted PrePrepare (codec bytes)
        prepared    BLOB,                 -- highest-view PreparedProof (envelope)
        sent_commit INTEGER NOT NULL
    );
    CREATE TABLE consensus_certified (
        seq   INTEGER PRIMARY KEY,        -- above the stable checkpoint only
        entry BLOB NOT NULL               -- CertifiedEntry (envelope)
    );
    CREATE TABLE consensus_log (
        seq          INTEGER PRIMARY KEY, -- every committed entry, kept; idempotent per seq
        digest       BLOB NOT NULL,
        entry        BLOB NOT NULL,       -- CertifiedEntry with its certificate (envelope)
        results      BLOB,                -- CBOR results where this node executed it
        committed_at REAL NOT NULL
    );
    """,
    # 4: storage policy (docs/blobs.md, "Storage policy"): what a blob is for, and when it came.
    """
    ALTER TABLE blobs ADD COLUMN kind TEXT NOT NULL DEFAULT 'user';  -- user, model or update
    ALTER TABLE blobs ADD COLUMN job TEXT;                           -- training job, if any
    ALTER TABLE blobs ADD COLUMN round INTEGER;                      -- its round, if any
    ALTER TABLE blobs ADD COLUMN created REAL NOT NULL DEFAULT 0;    -- unix time first stored
    UPDATE blobs SET created = last_access;
    CREATE INDEX blobs_job ON blobs (job, kind, round);
    CREATE INDEX blobs_kind ON blobs (kind, pinned, created);
    """,
)
