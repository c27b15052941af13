"""The daemon's local door: a Unix socket speaking length-prefixed CBOR frames."""
