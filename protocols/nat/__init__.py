"""NAT traversal, sans-I/O: the dial-back wire format and whom to dial back
(:mod:`.dialback`), and what a node concludes about its own reachability from the answers
(:mod:`.reachability`). The daemon's side is ``p2pnode/network/nat/``; docs/networking.md
says how the parts fit."""
