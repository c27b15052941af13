"""The daemon's libp2p side: host construction, guarded handlers, RPC streams and the DHT."""
