"""The trust service: the daemon's side of the trust ledger (docs/trust.md)."""
