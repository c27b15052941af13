"""p2pnode: a peer-to-peer daemon for training models across a swarm of machines.

The package's public face is the IPC client (:class:`p2pnode.Client`); the daemon itself is
started with ``p2pnode daemon``.
"""

__version__ = "0.1.0"
