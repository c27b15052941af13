"""The cost of real latency: DHT and blob figures on the testbed beside loopback, in one run.

Runs the same workload twice, on 6 daemons on 127.0.0.1 and on 6 daemons in the testbed's
namespaces with every link shaped (default 40 ms one way, no loss; ``--loss 0.01`` for the
lan6 setting), and prints the two side by side:

- DHT: ``dht_put`` latency and ``dht_get`` latency from a node that did not publish
  (p50/p95, sequential, 1 KiB values);
- blobs: MiB/s of ``blob_get`` of a fresh blob put on another node (1 and 16 MiB by default;
  the time includes finding the provider);
- the switch itself (testbed only): frames/s it forwards (a UDP flood of small datagrams
  between two hosts with perfect links) and a bulk TCP transfer's MiB/s through it.

Needs root for the testbed (see docs/testbed.md).

    python benchmarks/testbed.py
    python benchmarks/testbed.py --delay 0.04 --loss 0.01 --ops 100 --sizes 1 16 64
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from p2pnode import Client
from p2pnode.swarm import prepare, start, stop, wait_ready
from p2pnode_simulations.testbed import LinkSpec, Testbed, testbed_unavailable
from p2pnode_simulations.testbed.swarm import TestbedSwarm

N = 6
MiB = 1 << 20
VALUE = os.urandom(1024)
SETTINGS: dict[str, object] = {"log_level": "warning", "dht.replication": 3}
PROBE = [sys.executable, "-P", "-m", "p2pnode_simulations.testbed.probe"]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def workload(sockets: list[Path], ops: int, sizes: list[int], tmp: Path) -> dict[str, float]:
    out: dict[str, float] = {}
    clients = [Client(socket_path=s, timeout=300) for s in sockets]
    try:
        run = time.time_ns()
        puts, gets = [], []
        for k in range(ops):
            pub = k % N
            name = f"bench-{run}-{k}"
            t = time.perf_counter()
            clients[pub].dht_put(name, VALUE)
            puts.append(time.perf_counter() - t)
            reader = clients[(pub + 1 + k % (N - 1)) % N]
            t = time.perf_counter()
            got = reader.dht_get(name)
            gets.append(time.perf_counter() - t)
            assert got["value"] == VALUE
        for label, lat in (("put", puts), ("get", gets)):
            out[f"dht {label} p50 (ms)"] = 1e3 * pct(lat, 0.5)
            out[f"dht {label} p95 (ms)"] = 1e3 * pct(lat, 0.95)
        for size in sizes:
            rates = []
            for rep in range(2):
                src = tmp / f"blob-{size}-{rep}.bin"
                src.write_bytes(os.urandom(size * MiB))
                key = clients[0].blob_put(path=src)["key"]
                dst = tmp / f"blob-{size}-{rep}.out"
                getter = clients[1 + rep]
                t = time.perf_counter()
                getter.blob_get(key, path=dst)
                took = time.perf_counter() - t
                assert dst.stat().st_size == size * MiB
                rates.append(size / took)
                src.unlink()
                dst.unlink()
            out[f"blob {size} MiB fetch (MiB/s)"] = statistics.median(rates)
    finally:
        for c in clients:
            c.close()
    return out


def loopback(ops: int, sizes: list[int], tmp: Path) -> dict[str, float]:
    nodes = prepare(tmp / "loop", N, SETTINGS)
    try:
        start(nodes)
        wait_ready(nodes)
        _wait_peers([n.socket for n in nodes])
        return workload([n.socket for n in nodes], ops, sizes, tmp)
    finally:
        stop(nodes)


def _wait_peers(sockets: list[Path], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    for s in sockets:
        while True:
            with Client(socket_path=s) as c:
                st = c.status()
            if st["bootstrapped"] and st["routing_table_size"] >= N - 1:
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"{s}: only {st['routing_table_size']} peers after {timeout} s")
            time.sleep(0.1)


def _probe(tb: Testbed, host: str, *args: str, bg: bool = False):  # type: ignore[no-untyped-def]
    cmd = [*PROBE, *args]
    if bg:
        return tb.hosts[host].popen(cmd, stdout=subprocess.PIPE, text=True)
    r = tb.hosts[host].run(cmd, timeout=120)
    return json.loads(r.stdout)


def switch_figures(tb: Testbed) -> dict[str, float]:
    """frames/s and TCP MiB/s through the switch between h5 and h6 (perfect links)."""
    tb.set_link("h5", "h6", LinkSpec())
    out: dict[str, float] = {}
    count = 200_000
    sink = _probe(tb, "h6", "udp-sink", "--port", "9100", "--duration", "12", bg=True)
    time.sleep(1.0)
    _probe(tb, "h5", "udp-flood", "--to", tb.hosts["h6"].ip, "--port", "9100",
           "--count", str(count), "--size", "32", "--rate", "1000000")  # fmt: skip
    got = json.loads(sink.communicate(timeout=30)[0])
    out["switch frames/s (32 B UDP)"] = got["received"] / got["span"] if got["span"] else 0.0
    out["switch UDP delivered (%)"] = 100 * got["received"] / count
    sink = _probe(tb, "h6", "tcp-sink", "--port", "9101", "--duration", "60", bg=True)
    time.sleep(1.0)
    sent = _probe(tb, "h5", "tcp-send", "--to", tb.hosts["h6"].ip, "--port", "9101",
                  "--bytes", str(128 * MiB))  # fmt: skip
    sink.communicate(timeout=60)
    out["switch TCP bulk (MiB/s)"] = sent["mib_s"]
    return out


def testbed(
    ops: int, sizes: list[int], tmp: Path, spec: LinkSpec
) -> tuple[dict[str, float], dict[str, float]]:
    tb = Testbed("tbb", seed=1)
    for i in range(1, N + 1):
        tb.add_host(f"h{i}")
    tb.set_default(spec)
    with tb:
        swarm = TestbedSwarm(tb, tmp / "tb", [f"h{i}" for i in range(1, N + 1)], SETTINGS)
        try:
            swarm.start()
            _wait_peers([n.socket for n in swarm.nodes])
            res = workload([n.socket for n in swarm.nodes], ops, sizes, tmp)
        finally:
            swarm.stop()
        sw = switch_figures(tb)
    return res, sw


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--delay", type=float, default=0.040, help="one-way seconds per link")
    ap.add_argument("--jitter", type=float, default=0.0)
    ap.add_argument("--loss", type=float, default=0.0)
    ap.add_argument("--ops", type=int, default=60, help="DHT puts (and gets) per setting")
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 16], help="blob sizes, MiB")
    args = ap.parse_args()
    reason = testbed_unavailable()
    if reason:
        print(f"error: {reason}", file=sys.stderr)
        return 2
    spec = LinkSpec(delay=args.delay, jitter=args.jitter, loss=args.loss)
    with tempfile.TemporaryDirectory(prefix="p2pnode-tbbench-") as d:
        tmp = Path(d)
        loop = loopback(args.ops, args.sizes, tmp)
        tbres, sw = testbed(args.ops, args.sizes, tmp, spec)
    head = (
        f"testbed: {args.delay * 1e3:g} ms ± {args.jitter * 1e3:g} ms one way, {args.loss:.1%} loss"
    )
    print(f"# {N} daemons; {args.ops} DHT ops of 1 KiB; blobs put on one node, got on another")
    print(f"{'':<28} {'loopback':>10} {head}")
    for k in loop:
        print(f"{k:<28} {loop[k]:>10.2f} {tbres[k]:>10.2f}")
    print("# the switch (perfect links between two hosts)")
    for k, v in sw.items():
        print(f"{k:<28} {v:>10.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
