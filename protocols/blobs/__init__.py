"""Content addressing for blobs, sans-I/O: multihashes, CIDs, manifests, exchange messages."""
