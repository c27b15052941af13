"""Support code for the tests (in-memory libp2p host)."""
