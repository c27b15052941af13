"""The testbed on real namespaces: measured delay, loss, rate, partitions, multicast and NAT.

One testbed for the module: public hosts ``a``, ``b``; ``c`` behind NAT ``n1``, ``d`` behind
NAT ``n2``. Each test sets the links it needs and puts them back. Measurements go through
the probes of :mod:`p2pnode_simulations.testbed.probe` (Python sockets in each namespace).
"""

from __future__ import annotations

import statistics
import subprocess
from collections.abc import Iterator

import pytest

from p2pnode_simulations.testbed import LinkSpec, Testbed, TestbedError
from p2pnode_simulations.testbed.testbed import list_netns
from tests.testbed.helpers import answer, needs_testbed, probe, probe_bg, wait_bound

pytestmark = [needs_testbed, pytest.mark.timeout(120)]

PERFECT = LinkSpec()


@pytest.fixture(scope="module")
def tb() -> Iterator[Testbed]:
    t = Testbed("tbt", seed=7)
    t.add_host("a")
    t.add_host("b")
    t.add_nat("n1")
    t.add_nat("n2")
    t.add_host("c", behind="n1")
    t.add_host("d", behind="n2")
    with t:
        yield t
    assert not [ns for ns in list_netns() if ns.startswith(t.prefix)]


def _ping(tb: Testbed, src: str, dst: str, port: int, **kw: float) -> dict[str, object]:
    server = probe_bg(tb.hosts[dst], "udp-echo", "--port", str(port), "--duration", "30")
    try:
        wait_bound(tb.hosts[dst], port)
        args = [f"--{k}={v}" for k, v in kw.items()]
        return probe(
            tb.hosts[src], "udp-ping", "--to", tb.hosts[dst].ip, "--port", str(port), *args
        )
    finally:
        server.kill()
        server.wait()


def test_round_trip_time_is_twice_the_link_delay(tb: Testbed) -> None:
    tb.set_link("a", "b", LinkSpec(delay=0.040))
    try:
        got = _ping(tb, "a", "b", 7001, count=30, interval=0.03, timeout=1.0)
    finally:
        tb.set_link("a", "b", PERFECT)
    rtts = got["rtts"]
    assert isinstance(rtts, list) and len(rtts) >= 28
    # Python on both ends and the switch add a little; the first ping also waits for ARP.
    assert 0.078 <= statistics.median(rtts) <= 0.100, rtts
    assert min(rtts) >= 0.079


def test_jitter_varies_the_delay_and_keeps_order(tb: Testbed) -> None:
    tb.set_link("a", "b", LinkSpec(delay=0.040, jitter=0.010))
    try:
        got = _ping(tb, "a", "b", 7002, count=60, interval=0.05, timeout=1.0)
    finally:
        tb.set_link("a", "b", PERFECT)
    rtts = got["rtts"]
    assert isinstance(rtts, list) and len(rtts) >= 58
    assert min(rtts) >= 0.059 and max(rtts) <= 0.13
    assert statistics.pstdev(rtts) > 0.003  # two directions of ±10 ms: about 8 ms


def test_loss_is_close_to_the_setting(tb: Testbed) -> None:
    before = tb.stats()["pairs"].get("a>b", {"sent": 0, "dropped_loss": 0})
    tb.set_link("a", "b", LinkSpec(loss=0.10))
    try:
        got = _ping(tb, "a", "b", 7003, count=2000, interval=0.001, timeout=1.0)
    finally:
        tb.set_link("a", "b", PERFECT)
    after = tb.stats()["pairs"]["a>b"]
    sent = after["sent"] - before["sent"]
    lost = after["dropped_loss"] - before["dropped_loss"]
    assert sent >= 2000
    assert lost / sent == pytest.approx(0.10, abs=0.025)
    # A ping is lost if either direction drops it: 1 - 0.9 * 0.9 = 19%.
    assert got["lost"] / 2000 == pytest.approx(0.19, abs=0.04)  # type: ignore[operator]


def test_rate_limits_a_tcp_transfer(tb: Testbed) -> None:
    rate = 1_000_000
    tb.set_link("a", "b", LinkSpec(rate=rate))
    sink = probe_bg(tb.hosts["b"], "tcp-sink", "--port", "7004", "--duration", "30")
    try:
        wait_bound(tb.hosts["b"], 7004, "tcp")
        nbytes = 3_000_000
        got = probe(tb.hosts["a"], "tcp-send", "--to", tb.hosts["b"].ip, "--port", "7004",
                    "--bytes", str(nbytes))  # fmt: skip
        assert answer(sink)["bytes"] == nbytes
    finally:
        tb.set_link("a", "b", PERFECT)
    # Headers add ~4%, the burst and queue take off a little: about 1 MB/s either way.
    assert 0.8 * rate <= nbytes / got["seconds"] <= 1.1 * rate, got


def test_a_partition_drops_everything_between_groups_and_heal_restores(tb: Testbed) -> None:
    tb.partition({"a"}, {"b", "c"})
    try:
        got = _ping(tb, "a", "b", 7005, count=10, interval=0.02, timeout=0.5)
        assert got["lost"] == 10
        assert tb.stats()["pairs"]["a>b"]["dropped_partition"] > 0
        with pytest.raises(TestbedError, match="two groups"):
            tb.partition({"a", "c"}, {"n1"})  # c is behind n1: they move together
    finally:
        tb.heal()
    got = _ping(tb, "a", "b", 7006, count=10, interval=0.02, timeout=1.0)
    assert got["lost"] == 0


def test_multicast_is_flooded_to_every_host(tb: Testbed) -> None:
    recv = probe_bg(tb.hosts["b"], "mcast-recv", "--group", "239.7.7.7", "--port", "7007",
                    "--duration", "4")  # fmt: skip
    wait_bound(tb.hosts["b"], 7007)
    probe(tb.hosts["a"], "mcast-send", "--group", "239.7.7.7", "--port", "7007", "--count", "5")
    got = answer(recv)
    assert got["received"] == 5 and got["from"] == [tb.hosts["a"].ip]


def _tcp_echo(tb: Testbed, host: str, port: int) -> subprocess.Popen[str]:
    p = probe_bg(tb.hosts[host], "tcp-echo", "--port", str(port), "--duration", "8")
    wait_bound(tb.hosts[host], port, "tcp")
    return p


def test_a_natted_host_reaches_a_public_one_as_its_router(tb: Testbed) -> None:
    server = _tcp_echo(tb, "b", 7008)
    got = probe(tb.hosts["c"], "tcp-connect", "--to", tb.hosts["b"].ip, "--port", "7008")
    server.kill()
    server.wait()
    assert got == {"ok": True, "seen_as": tb.routers["n1"].ip}


def test_nothing_new_gets_in_through_a_nat(tb: Testbed) -> None:
    server = _tcp_echo(tb, "c", 7009)
    try:
        n1 = tb.routers["n1"].ip
        # Not from a public host, to the router's public address (no port forwarding) ...
        got = probe(tb.hosts["b"], "tcp-connect", "--to", n1, "--port", "7009", "--timeout", "2")
        assert got == {"ok": False, "error": "TimeoutError"}  # dropped, not refused
        # ... nor to the private address (no route to it from outside) ...
        got = probe(tb.hosts["b"], "tcp-connect", "--to", tb.hosts["c"].ip, "--port", "7009",
                    "--timeout", "2")  # fmt: skip
        assert got["ok"] is False
        # ... nor from a host behind another NAT.
        got = probe(tb.hosts["d"], "tcp-connect", "--to", n1, "--port", "7009", "--timeout", "2")
        assert got == {"ok": False, "error": "TimeoutError"}
    finally:
        server.kill()
        server.wait()


def test_names_are_checked() -> None:
    t = Testbed("tbx")
    t.add_host("a")
    with pytest.raises(TestbedError, match="exists"):
        t.add_host("a")
    with pytest.raises(TestbedError, match="no NAT"):
        t.add_host("b", behind="nat9")
    with pytest.raises(TestbedError, match="lower case"):
        t.add_host("Bad_Name")
    with pytest.raises(TestbedError, match="testbed name"):
        Testbed("this-is-too-long")


def test_down_after_a_failed_up_leaves_nothing_and_stale_runs_are_cleaned() -> None:
    t = Testbed("tbf")
    t.add_host("a")
    t.add_nat("n")
    t.add_host("x", behind="n")
    t.set_link("a", "n", LinkSpec(delay=0.01))
    t.set_link("a", "x", LinkSpec(delay=0.01))  # x is behind n: the same pair
    t._pending.append({"op": "set_link", "a": "a", "b": "nobody", "spec": {}})
    with pytest.raises(TestbedError, match="no port 'nobody'"):
        t.up()
    assert not [ns for ns in list_netns() if ns.startswith(t.prefix)]

    # A run killed before down(): its namespaces stay, and its owner file names a dead pid.
    stale = "tbf-0a0b0c-h"
    subprocess.run(["ip", "netns", "add", stale], check=True, timeout=30)
    try:
        live = Testbed("tbf")
        live.add_host("a")
        with live:
            gone = Testbed.cleanup_stale("tbf")
            assert gone == [stale]
            mine = [ns for ns in list_netns() if ns.startswith(live.prefix)]
            assert sorted(mine) == sorted([live.prefix + "a", live.prefix + "sw"])
    finally:
        subprocess.run(["ip", "netns", "del", stale], capture_output=True, timeout=30)
    assert not [ns for ns in list_netns() if ns.startswith("tbf-")]
