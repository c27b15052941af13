"""The machine's knobs from the ``membership.*`` config section, for the daemon
(:class:`~p2pnode.membership.service.MembershipService`). The section's values go over
``HeartbeatConfig.daemon()``, which the simulator (``p2pnode_simulations.heartbeat.daemon_config``)
runs as is, so a simulated swarm runs exactly the daemon's defaults (a test checks that the
section's defaults equal ``daemon()``'s). Light to import (no libp2p).
"""

from __future__ import annotations

from dataclasses import replace

from p2pnode.config import SCHEMA, MembershipConfig
from p2pnode_protocols.heartbeat import HeartbeatConfig

__all__ = ["default_membership", "heartbeat_config"]

_PREFIX = "membership."


def default_membership() -> MembershipConfig:
    """The ``membership.*`` section with every key at its default (from ``SCHEMA``)."""
    values = {s.key[len(_PREFIX) :]: s.default for s in SCHEMA if s.key.startswith(_PREFIX)}
    return MembershipConfig(**values)


def heartbeat_config(m: MembershipConfig | None = None, **overrides: object) -> HeartbeatConfig:
    """``HeartbeatConfig`` from a ``membership.*`` section (None: the defaults); knobs the
    section does not name keep ``HeartbeatConfig.daemon()``'s values."""
    if m is None:
        m = default_membership()
    # The knobs the section does not name come from the same constructor the simulator runs.
    cfg = HeartbeatConfig.daemon(
        probe_interval=m.probe_interval,
        probe_timeout=m.probe_timeout,
        indirect_checks=m.indirect_checks,
        ring_probe_every=m.ring_probe_every,
        suspicion_mult=m.suspicion_mult,
        suspicion_scale_cap=m.suspicion_scale_cap,
        suspicion_max_timeout_mult=m.suspicion_max_timeout_mult,
        suspicion_confirmations=m.suspicion_confirmations,
        gossip_interval=m.gossip_interval,
        gossip_nodes=m.gossip_nodes,
        retransmit_mult=m.retransmit_mult,
        retransmit_scale_cap=m.retransmit_scale_cap,
        push_pull_interval=m.push_pull_interval,
    )
    return replace(cfg, **overrides) if overrides else cfg  # type: ignore[arg-type]
