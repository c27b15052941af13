"""NAT traversal in the daemon: reachability by dial-back, relay reservations and relayed
dials, serving as a relay, hole punching; :class:`~.service.NatService` runs them.
docs/networking.md has the story and what py-libp2p 0.8.1 does and does not do."""
