"""The nat.*, relay.* and discovery.* settings: defaults and the values they refuse."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2pnode.config import ConfigError, load_config

RELAY = "/ip4/198.51.100.1/tcp/4001/p2p/12D3KooWRBCQ53x5U73cRRH54DTiHNQxaCLKA6GhWavjWu1mcr77"


def test_defaults(tmp_path: Path) -> None:
    cfg = load_config(tmp_path, env={})
    assert cfg.nat.reachability == "auto" and cfg.nat.hole_punch == "auto"
    assert cfg.nat.relays == ()
    assert cfg.relay.service == "auto" and cfg.relay.max_circuit_bytes == 128 << 20
    assert cfg.discovery.mdns is False  # opt-in: it announces the node to the whole LAN


def test_values_are_read(tmp_path: Path) -> None:
    cfg = load_config(
        tmp_path,
        env={"P2PNODE_NAT_RELAYS": RELAY, "P2PNODE_DISCOVERY_MDNS": "on"},
        overrides={"relay.max_circuit_bytes": 16 << 20},
    )
    assert cfg.nat.relays == (RELAY,)
    assert cfg.discovery.mdns is True
    assert cfg.relay.max_circuit_bytes == 16 << 20


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        ("nat.reachability", "maybe", "must be one of auto, public, private"),
        ("nat.hole_punch", "always", "must be one of auto, manual, off"),
        ("relay.service", "yes", "must be one of auto, on, off"),
        ("nat.relays", "/ip4/198.51.100.1/tcp/4001", "with /p2p/"),
        ("nat.relays", RELAY + "/p2p-circuit", "direct address"),
        ("relay.max_circuit_duration", 0, "between"),
        ("nat.confirmations", 0, "between"),
    ],
)
def test_bad_values_are_refused(tmp_path: Path, key: str, value: object, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason):
        load_config(tmp_path, env={}, overrides={key: value})
