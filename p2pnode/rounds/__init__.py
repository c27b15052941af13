"""The rounds service: the rounds machine bound to the daemon (consensus, blobs, membership)
and the learning it asks for (compute)."""
