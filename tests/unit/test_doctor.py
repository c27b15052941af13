"""``p2pnode doctor``'s verdicts on hand-made facts (the gathering is tested on real daemons in
tests/integration/test_doctor.py)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from p2pnode.cli.doctor import MIN_FREE_BYTES, Check, Facts, diagnose

ME, A, B, C = "12D3me", "12D3aa", "12D3bb", "12D3cc"
BOOT = f"/ip4/10.0.0.2/tcp/4001/p2p/{A}"


def _healthy() -> Facts:
    member: dict[str, Any] = {"self": False, "state": "alive", "version": "0.1.0"}
    return Facts(
        data_dir="/data",
        status={
            "peer_id": ME,
            "version": "0.1.0",
            "uptime": 60.0,
            "connected_peers": 3,
            "services": [{"name": "dht", "state": "running", "error": None}],
            "listen_addrs": ["/ip4/0.0.0.0/tcp/4001"],
            "addrs": [],
            "reachability": "public",
            "bootstrap": [BOOT],
            "private_network": True,
            "handshake_failures": {"count": 0, "last": None},
        },
        members=[
            {"self": True, "state": "alive", "version": "0.1.0", "peer_id": ME},
            *({**member, "peer_id": p} for p in (A, B, C)),
        ],
        consensus={"committee": [ME, A, B, C], "f": 1, "error": None},
        probe={
            "addrs": [{"addr": BOOT, "reachable": True, "peer_id": A, "clock_offset": 0.01}],
            "peers": [
                {"peer_id": p, "reachable": True, "clock_offset": 0.02, "rtt": 0.001}
                for p in (A, B, C)
            ],
        },
        disk={
            "exists": True,
            "mode": "0o700",
            "writable": True,
            "free_bytes": 50 << 30,
        },
    )


def _by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


@pytest.mark.timeout(10)
def test_a_healthy_node_passes_every_check() -> None:
    checks = _by_name(diagnose(_healthy()))
    assert set(checks) == {
        "services", "listen", "bootstrap", "psk", "clock", "committee", "versions", "data_dir"
    }  # fmt: skip
    assert {c.status for c in checks.values()} == {"ok"}, checks


@pytest.mark.timeout(10)
def test_no_daemon_fails_but_the_data_dir_is_still_checked() -> None:
    f = Facts(data_dir="/data", daemon_error="no daemon at /data/p2pnode.sock", disk=None)
    checks = _by_name(diagnose(f))
    assert checks["daemon"].status == "fail" and "p2pnode daemon" in checks["daemon"].message
    assert checks["data_dir"].status == "fail"


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    ("reach", "status", "words"),
    [("relayed", "warn", "only through a relay"), ("private", "fail", "unreachable"),
     ("unknown", "warn", "not known yet")],
)  # fmt: skip
def test_reachability_in_plain_words(reach: str, status: str, words: str) -> None:
    f = _healthy()
    assert f.status is not None
    f.status["reachability"] = reach
    check = _by_name(diagnose(f))["listen"]
    assert check.status == status and words in check.message


@pytest.mark.timeout(10)
def test_a_dead_bootstrap_peer_is_named() -> None:
    f = _healthy()
    assert f.probe is not None
    f.probe["addrs"] = [{"addr": BOOT, "reachable": False, "error": "Connection refused"}]
    check = _by_name(diagnose(f))["bootstrap"]
    assert check.status == "fail" and BOOT in check.message and "refused" in check.message


@pytest.mark.timeout(10)
def test_failed_handshakes_with_no_peer_point_at_the_psk() -> None:
    f = _healthy()
    assert f.status is not None
    f.status["connected_peers"] = 0
    f.status["handshake_failures"] = {"count": 3, "last": "handshake with x did not complete"}
    checks = _by_name(diagnose(f))
    assert checks["psk"].status == "fail"
    assert "same swarm.key" in checks["psk"].message
    assert checks["services"].status == "fail" and "alone" in checks["services"].message


@pytest.mark.timeout(10)
def test_clock_skew_warns_then_fails() -> None:
    for offset, status in ((0.8, "warn"), (-3.5, "fail")):
        f = _healthy()
        assert f.probe is not None
        f.probe["peers"][1]["clock_offset"] = offset
        check = _by_name(diagnose(f))["clock"]
        assert check.status == status and B in check.message


@pytest.mark.timeout(10)
def test_a_committee_below_quorum_cannot_commit() -> None:
    f = _healthy()
    assert f.probe is not None
    one_down = copy.deepcopy(f)
    assert one_down.probe is not None
    one_down.probe["peers"][0] = {"peer_id": A, "reachable": False, "error": "timeout"}
    check = _by_name(diagnose(one_down))["committee"]
    assert check.status == "warn" and "one more failure" in check.message
    for row in f.probe["peers"][:2]:
        row.update(reachable=False)
    check = _by_name(diagnose(f))["committee"]
    assert check.status == "fail"
    assert "only 2 of 4 validators are reachable and 3 are needed" in check.message


@pytest.mark.timeout(10)
def test_version_skew_is_reported() -> None:
    f = _healthy()
    assert f.members is not None
    f.members[2]["version"] = "0.0.9"
    check = _by_name(diagnose(f))["versions"]
    assert check.status == "warn" and "1 run 0.0.9" in check.message


@pytest.mark.timeout(10)
def test_an_open_or_full_data_dir_fails() -> None:
    f = _healthy()
    assert f.disk is not None
    f.disk.update(mode="0o755", free_bytes=MIN_FREE_BYTES - 1)
    check = _by_name(diagnose(f))["data_dir"]
    assert check.status == "fail"
    assert "chmod 700" in check.message and "MiB free" in check.message
