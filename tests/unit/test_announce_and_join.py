"""Advertised addresses (wildcards expanded, ``announce`` first) and join tokens."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import multiaddr
import pytest

from p2pnode.config import ConfigError, load_config
from p2pnode.config.join import JoinToken, committee_fingerprint, decode_token, peer_of
from p2pnode.network.addresses import addrs_factory, expand_wildcards
from tests.unit.test_cli import run

IPS = [
    ipaddress.ip_address("127.0.0.1"),
    ipaddress.ip_address("10.77.0.2"),
    ipaddress.ip_address("::1"),
    ipaddress.ip_address("fd00::2"),
]
PEER = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"
PEER2 = "12D3KooWAfPDpPRRRBrmqy9is2zjU5srQ4hKuZitiGmh4NTTpS2d"


def _m(text: str) -> multiaddr.Multiaddr:
    return multiaddr.Multiaddr(text)


def test_wildcards_become_interface_addresses_routable_first() -> None:
    out = expand_wildcards([_m("/ip4/0.0.0.0/tcp/4001"), _m("/ip6/::/tcp/4002")], IPS)
    assert [str(a) for a in out] == [
        "/ip4/10.77.0.2/tcp/4001",
        "/ip6/fd00::2/tcp/4002",
        "/ip4/127.0.0.1/tcp/4001",
        "/ip6/::1/tcp/4002",
    ]


def test_specific_addresses_are_kept_and_announce_leads() -> None:
    factory = addrs_factory(["/ip4/203.0.113.7/tcp/4001"])
    out = factory([_m("/ip4/127.0.0.1/tcp/5"), _m("/ip4/203.0.113.7/tcp/4001")])
    assert [str(a) for a in out] == ["/ip4/203.0.113.7/tcp/4001", "/ip4/127.0.0.1/tcp/5"]


def test_announce_setting_is_checked(tmp_path: Path) -> None:
    cfg = load_config(tmp_path, env={"P2PNODE_ANNOUNCE": "/ip4/203.0.113.7/tcp/4001"})
    assert cfg.announce == ("/ip4/203.0.113.7/tcp/4001",)
    with pytest.raises(ConfigError, match="wildcard"):
        load_config(tmp_path, env={"P2PNODE_ANNOUNCE": "/ip4/0.0.0.0/tcp/4001"})
    with pytest.raises(ConfigError, match="without /p2p/"):
        load_config(tmp_path, env={"P2PNODE_ANNOUNCE": f"/ip4/1.2.3.4/tcp/1/p2p/{PEER}"})


def test_token_round_trip_and_fingerprint() -> None:
    token = JoinToken((f"/ip4/10.77.0.1/tcp/4001/p2p/{PEER}",), (PEER, PEER2))
    back = decode_token("  " + token.encode() + "\n")
    assert back == token
    assert back.fingerprint == committee_fingerprint([PEER, PEER2])
    assert committee_fingerprint([PEER2, PEER]) != back.fingerprint  # order is part of the set
    assert peer_of(token.bootstrap[0]) == PEER
    assert JoinToken(token.bootstrap).fingerprint is None


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("hello", "must start with"),
        ("p2pnode-join-v1:@@@", "damaged"),
        (JoinToken(("/ip4/10.0.0.1/tcp/1",)).encode(), "no /p2p/"),
        (JoinToken((f"/ip4/10.0.0.1/tcp/1/p2p/{PEER}",), (PEER, PEER)).encode(), "distinct"),
        (JoinToken(()).encode(), "no address"),
        ("p2pnode-join-v1:" + "A" * 20000, "longer than"),
    ],
)
def test_bad_tokens_are_refused(text: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason):
        decode_token(text)


# -- the command line: init --announce / --join, join ------------------------------------------


def _peer_id(d: Path) -> str:
    from p2pnode.identity import load_identity_file, peer_id_of

    return peer_id_of(load_identity_file(d / "identity.key")).to_base58()


def test_init_writes_announce_and_a_join_token(tmp_path: Path) -> None:
    token = JoinToken((f"/ip4/10.77.0.1/tcp/4001/p2p/{PEER}",), (PEER, PEER2))
    d = tmp_path / "b"
    r = run("--data-dir", str(d), "init", "--announce", "/ip4/203.0.113.7/tcp/4001",
            "--join", token.encode())  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert f"committee fingerprint {token.fingerprint}" in r.stdout
    cfg = load_config(d, env={})
    assert cfg.announce == ("/ip4/203.0.113.7/tcp/4001",)
    assert cfg.bootstrap == token.bootstrap
    assert cfg.consensus.validators == token.validators
    # On an initialised dir, init points at `join` instead of rewriting config.toml.
    r = run("--data-dir", str(d), "init", "--join", token.encode())
    assert r.returncode == 1 and "join TOKEN" in r.stderr


def test_join_applies_a_committee_and_skips_its_own_address(tmp_path: Path) -> None:
    d = tmp_path / "a"
    assert run("--data-dir", str(d), "init").returncode == 0
    me = _peer_id(d)
    own = f"/ip4/10.77.0.1/tcp/4001/p2p/{me}"
    token = JoinToken((own,), (me, PEER))
    r = run("--data-dir", str(d), "join", token.encode(), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["role"] == "validator 1 of 2" and out["fingerprint"] == token.fingerprint
    cfg = load_config(d, env={})
    assert cfg.bootstrap == () and cfg.consensus.validators == (me, PEER)
    r = run("--data-dir", str(d), "join", "p2pnode-join-v1:!!")
    assert r.returncode == 1 and r.stderr.startswith("p2pnode: join token: damaged")
