"""Deterministic simulations of p2pnode's protocols and in-process training runs."""
