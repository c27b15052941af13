"""The record layer of p2pnode's DHT, sans-I/O: signed records, namespace validators, RPC shapes.

Peer routing (who is out there, who is closest to a key) comes from py-libp2p's Kademlia
routing table; values and provider records travel over p2pnode's own RPC stream protocol so a
lookup is one multiplexed round trip on a reused stream instead of a new stream per query.
"""
