"""Idle cost of the metrics endpoint and the web view: two daemons of one small swarm, compared.

A swarm of ``--nodes`` daemons (3 by default) on 127.0.0.1 idles for ``--duration`` seconds
(60): node-2 runs plain, node-3 with ``--metrics-port`` and ``--http-port`` (``--served-node 2``
swaps the two), a browser-like client attached to its web view (the page, its script and
``/api/snapshot`` loaded once, then the event stream open for the whole window: the page never
polls, the daemon pushes what changes) and ``/metrics`` scraped every 5 s, as Prometheus would.
node-1 is the bootstrap peer (and, with ``--validators``, the PBFT primary), plain. CPU seconds
(utime + stime from /proc/<pid>/stat) over the window and RSS at its end (VmRSS) are printed,
with the ratios; the aim is within 10%.

    python benchmarks/idle_cost.py                     # 3 daemons, 60 s, 10 s warm-up
    python benchmarks/idle_cost.py --duration 180 --validators 3 --served-node 2 --json

Membership probes are random, so two plain daemons differ by several percent too: node-1
against the plain one is printed as the noise floor, and the served daemon is also held
against the mean of both plain ones. After the window, bursts of requests to the served daemon
price one scrape and one page request (``/api/members``, what a polling page would pay) in CPU
milliseconds, and so what the window's scrapes cost, free of that noise.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from p2pnode.config.edit import set_config_value
from p2pnode.swarm import SwarmNode, free_ports, prepare, start, stop, wait_ready

TICKS = os.sysconf("SC_CLK_TCK")
SCRAPE_EVERY = 5.0
BURST = 200


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        # The command name (field 2) may hold spaces: the fields after it start past ')'.
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime (fields 14 and 15)


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def _get(port: int, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        reply = conn.getresponse()
        n = len(reply.read())
        if reply.status != 200:
            raise RuntimeError(f"GET {path}: {reply.status}")
        return n
    finally:
        conn.close()


class Browser:
    """What the page costs its daemon: its first load, then an open event stream."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.events = 0
        self.stream_bytes = 0
        self.requests = 3
        self.stop = threading.Event()
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.sendall(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        _get(port, "/")
        _get(port, "/static/app.js")
        _get(port, "/api/snapshot")

    def _read(self) -> None:
        self.sock.settimeout(1.0)
        while not self.stop.is_set():
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                break
            self.stream_bytes += len(chunk)
            self.events += chunk.count(b"event: ")  # compact JSON never holds this

    def close(self) -> None:
        self.stop.set()
        self.reader.join(timeout=5)
        self.sock.close()


def run(
    nodes_n: int, duration: float, warmup: float, validators: int, served_node: int = 3
) -> dict[str, Any]:
    parent = Path(tempfile.mkdtemp(prefix="p2pnode-idle-"))
    settings: dict[str, object] = {}
    if validators:
        from p2pnode.consensus.genesis import genesis_validators

        settings["consensus.validators"] = genesis_validators(parent, validators)
    nodes: list[SwarmNode] = prepare(parent, nodes_n, settings)
    metrics_port, http_port = free_ports(2)
    plain, served, control = (
        ("node-2", "node-3", "node-1") if served_node == 3 else ("node-3", "node-2", "node-1")
    )
    set_config_value(nodes[served_node - 1].data_dir, "metrics_port", [str(metrics_port)])
    set_config_value(nodes[served_node - 1].data_dir, "http.port", [str(http_port)])
    browser = None
    try:
        start(nodes)
        wait_ready(nodes)
        browser = Browser(http_port)
        _get(metrics_port, "/metrics")
        time.sleep(warmup)
        pids = {n.name: n.process.pid for n in nodes if n.process is not None}
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        t0 = time.monotonic()
        next_scrape = t0
        scrapes = 0
        while (now := time.monotonic()) < t0 + duration:
            if now >= next_scrape:
                _get(metrics_port, "/metrics")
                scrapes += 1
                next_scrape += SCRAPE_EVERY
            time.sleep(max(0.0, min(next_scrape, t0 + duration) - time.monotonic()))
        elapsed = time.monotonic() - t0
        after = {name: cpu_seconds(pid) for name, pid in pids.items()}
        rss = {name: rss_mib(pid) for name, pid in pids.items()}
        # Then the price of one request, from a burst (the idle window's own difference is
        # within the noise of membership's random probes): what the window's requests cost.
        served_pid = pids[served]
        burst = {}
        for label, port, path in (
            ("scrape", metrics_port, "/metrics"),
            ("members", http_port, "/api/members"),
        ):
            c0 = cpu_seconds(served_pid)
            for _ in range(BURST):
                _get(port, path)
            burst[label] = (cpu_seconds(served_pid) - c0) / BURST
    finally:
        if browser is not None:
            browser.close()
        stop(nodes)
    cpu = {name: after[name] - before[name] for name in pids}
    assert browser is not None
    attributable = scrapes * burst["scrape"]
    plain_mean = (cpu[plain] + cpu[control]) / 2
    return {
        "nodes": nodes_n,
        "served_node": served,
        "plain_node": plain,
        "validators": validators,
        "seconds": round(elapsed, 1),
        "plain": {"cpu_s": round(cpu[plain], 2), "rss_mib": round(rss[plain], 1)},
        "served": {"cpu_s": round(cpu[served], 2), "rss_mib": round(rss[served], 1)},
        "control": {"cpu_s": round(cpu[control], 2), "rss_mib": round(rss[control], 1)},
        "cpu_ratio": round(cpu[served] / cpu[plain], 3) if cpu[plain] else None,
        "rss_ratio": round(rss[served] / rss[plain], 3),
        "control_cpu_ratio": round(cpu[control] / cpu[plain], 3) if cpu[plain] else None,
        "cpu_ratio_to_both_plain": round(cpu[served] / plain_mean, 3) if plain_mean else None,
        "ms_per_request": {k: round(v * 1000, 2) for k, v in burst.items()},
        "attributable_cpu_s": round(attributable, 3),
        "attributable_ratio": round(1 + attributable / plain_mean, 3) if plain_mean else None,
        "scrapes": scrapes,
        "page_requests": browser.requests if browser else 0,
        "stream_events": browser.events if browser else 0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=3, help="daemons in the swarm (at least 3)")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds measured")
    ap.add_argument("--warmup", type=float, default=10.0, help="seconds idled before measuring")
    ap.add_argument("--validators", type=int, default=0, help="a genesis committee of N nodes")
    ap.add_argument(
        "--served-node",
        type=int,
        choices=(2, 3),
        default=3,
        help="which node gets the metrics and the web view (the other of 2 and 3 runs plain):"
        " run both to cancel a difference between the two positions",
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.nodes < 3:
        ap.error("--nodes must be at least 3")
    r = run(args.nodes, args.duration, args.warmup, args.validators, args.served_node)
    if args.json:
        print(json.dumps(r))
        return
    print(f"{r['nodes']} daemons ({r['validators']} validators), idle {r['seconds']} s")
    print(f"{'daemon':<38} {'CPU s':>7} {'RSS MiB':>8}")
    rows = (
        (f"{r['plain_node']} plain", r["plain"]),
        (f"{r['served_node']} --metrics-port --http-port", r["served"]),
        ("node-1 plain (bootstrap; noise floor)", r["control"]),
    )
    for label, m in rows:
        print(f"{label:<38} {m['cpu_s']:>7.2f} {m['rss_mib']:>8.1f}")
    print(
        f"served/plain: CPU {r['cpu_ratio']}, RSS {r['rss_ratio']}"
        f" (node-1/plain CPU {r['control_cpu_ratio']}); {r['scrapes']} scrapes,"
        f" {r['page_requests']} page requests (before the window), {r['stream_events']} events"
        " streamed"
    )
    ok = all(x is not None and x <= 1.10 for x in (r["cpu_ratio"], r["rss_ratio"]))
    print(
        f"served/mean of both plain: CPU {r['cpu_ratio_to_both_plain']}; per request (ms CPU,"
        f" burst of {BURST}): {r['ms_per_request']}; the window's scrapes cost"
        f" {r['attributable_cpu_s']} s, i.e. a ratio of {r['attributable_ratio']}"
    )
    print("within 10%: " + ("yes" if ok else "no"))


if __name__ == "__main__":
    main()
