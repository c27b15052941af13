"""DHT benchmark: a swarm of real daemon processes on 127.0.0.1, driven through the IPC API.

Prints, for 1 KiB values: put and get latency (p50/p95/p99) and throughput, sequential and
with 32 requests in flight; gets measured cold (asked of a node that does not hold the record,
so the lookup crosses the network) and warm (asked of a holder); idle RSS per daemon; time from
process start to IPC ready, for one daemon alone and for the whole swarm. The aims of issue 2
are printed beside the figures.

    python benchmarks/dht.py            # 8 daemons
    python benchmarks/dht.py --nodes 16
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import base58
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from p2pnode import AsyncClient
from p2pnode.swarm import SwarmNode, prepare, start, stop, wait_ready

VALUE = os.urandom(1024)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def row(name: str, lat: list[float], wall: float, ok: int, total: int) -> dict[str, float]:
    r = {
        "p50": 1e3 * pct(lat, 0.50),
        "p95": 1e3 * pct(lat, 0.95),
        "p99": 1e3 * pct(lat, 0.99),
        "ops": ok / wall,
        "ok": ok,
        "total": total,
    }
    print(
        f"{name:<28} p50 {r['p50']:7.2f} ms  p95 {r['p95']:7.2f} ms  p99 {r['p99']:7.2f} ms"
        f"  {r['ops']:8.1f} ops/s  {ok}/{total} ok"
    )
    return r


def holders(key: str, nodes: list[SwarmNode], publisher: int, replication: int) -> set[int]:
    """Indexes of the nodes that hold ``key``: the closest ``replication`` peers + publisher."""
    target = int.from_bytes(hashlib.sha256(key.encode()).digest(), "big")

    def dist(i: int) -> int:
        raw = base58.b58decode(nodes[i].peer_id)
        return int.from_bytes(hashlib.sha256(raw).digest(), "big") ^ target

    others = sorted((i for i in range(len(nodes)) if i != publisher), key=dist)
    return {publisher, *others[:replication]}


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def timed(fn, lat: list[float]) -> bool:  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    try:
        await fn()
    except Exception as exc:
        print("  error:", exc)
        return False
    lat.append(time.perf_counter() - t)
    return True


async def workload(nodes: list[SwarmNode], n_ops: int, replication: int) -> dict[str, dict]:
    results: dict[str, dict] = {}
    n = len(nodes)
    async with trio.open_nursery() as nursery:
        clients = []
        for node in nodes:
            cm = AsyncClient.open(socket_path=node.socket)
            clients.append(await nursery.start(_hold, cm))
        run = f"{time.time_ns()}"

        # -- sequential puts, round-robin over publishers
        keys: list[tuple[str, int]] = []
        lat: list[float] = []
        t0 = time.perf_counter()
        ok = 0
        for k in range(n_ops):
            pub = k % n
            name = f"bench-{run}-s{k}"
            ok += await timed(lambda c=clients[pub], nm=name: c.dht_put(nm, VALUE), lat)
            keys.append((name, pub))
        results["put sequential"] = row("put sequential", lat, time.perf_counter() - t0, ok, n_ops)

        # -- sequential gets, cold (non-holder) and warm (holder)
        for mode in ("cold", "warm"):
            lat, ok = [], 0
            t0 = time.perf_counter()
            for name, pub in keys:
                hold = holders("/p2pnode/kv/" + name, nodes, pub, replication)
                pool = [i for i in range(n) if (i not in hold) == (mode == "cold")]
                reader = clients[pool[hash(name) % len(pool)]]

                async def get(c=reader, nm=name) -> None:
                    got = await c.dht_get(nm)
                    assert got["value"] == VALUE

                ok += await timed(get, lat)
            label = f"get {mode} sequential"
            results[label] = row(label, lat, time.perf_counter() - t0, ok, len(keys))

        # -- 32 in flight
        for label, op in (("put 32 in flight", "put"), ("get cold 32 in flight", "get")):
            lat = []
            ok_box = [0]
            work = list(enumerate(keys))
            limit = trio.Semaphore(32)
            t0 = time.perf_counter()

            async def one(
                k: int, name: str, pub: int, op=op, limit=limit, lat=lat, ok_box=ok_box
            ) -> None:
                async with limit:
                    if op == "put":
                        c = clients[(k + 1) % n]
                        fn = lambda: c.dht_put(f"{name}-c", VALUE)  # noqa: E731
                    else:
                        hold = holders("/p2pnode/kv/" + name, nodes, pub, replication)
                        pool = [i for i in range(n) if i not in hold]
                        c = clients[pool[k % len(pool)]]

                        async def fn() -> None:
                            got = await c.dht_get(name)
                            assert got["value"] == VALUE

                    # Not `ok_box[0] += await ...`: that reads the counter before the await.
                    good = await timed(fn, lat)
                    ok_box[0] += good

            async with trio.open_nursery() as inner:
                for k, (name, pub) in work:
                    inner.start_soon(one, k, name, pub)
            results[label] = row(label, lat, time.perf_counter() - t0, ok_box[0], len(work))
        nursery.cancel_scope.cancel()
    return results


async def _hold(cm, *, task_status=trio.TASK_STATUS_IGNORED):  # type: ignore[no-untyped-def]
    async with cm as client:
        task_status.started(client)
        await trio.sleep_forever()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=8)
    ap.add_argument("--ops", type=int, default=400, help="operations per workload")
    ap.add_argument("--replication", type=int, default=5)
    args = ap.parse_args()
    settings = {"dht.replication": args.replication, "log_level": "warning"}

    with tempfile.TemporaryDirectory(prefix="p2pnode-bench-") as tmp:
        # One daemon alone: process start -> IPC ready.
        solo = prepare(Path(tmp) / "solo", 1, settings)
        singles = []
        for _ in range(3):
            t = time.perf_counter()
            start(solo)
            wait_ready(solo)
            singles.append(time.perf_counter() - t)
            stop(solo)
        one_ready = statistics.median(singles)

        nodes = prepare(Path(tmp) / "swarm", args.nodes, settings)
        t = time.perf_counter()
        start(nodes)
        wait_ready(nodes)
        swarm_ready = time.perf_counter() - t
        try:
            time.sleep(2.0)  # let bootstrap refreshes settle before measuring
            print(
                f"# {args.nodes} daemons, replication {args.replication}, 1 KiB values, "
                f"{args.ops} ops per workload"
            )
            res = trio.run(workload, nodes, args.ops, args.replication)
            time.sleep(3.0)
            rss = [rss_mib(n.process.pid) for n in nodes if n.process is not None]
        finally:
            stop(nodes)

    print(
        f"idle RSS per daemon           median {statistics.median(rss):.1f} MiB, "
        f"max {max(rss):.1f} MiB"
    )
    print(f"one daemon: start -> IPC ready {one_ready:.2f} s (median of 3)")
    print(f"{args.nodes} daemons: start -> all ready {swarm_ready:.2f} s")
    if args.nodes == 8:
        checks = [
            ("cold get p50 <= 6 ms", res["get cold sequential"]["p50"] <= 6),
            ("cold gets >= 150/s sequential", res["get cold sequential"]["ops"] >= 150),
            ("put p50 <= 20 ms", res["put sequential"]["p50"] <= 20),
            ("puts >= 50/s", res["put sequential"]["ops"] >= 50),
            (
                "32 in flight: every op succeeds",
                all(
                    res[k]["ok"] == res[k]["total"]
                    for k in ("put 32 in flight", "get cold 32 in flight")
                ),
            ),
            ("32 in flight: cold gets >= 200/s", res["get cold 32 in flight"]["ops"] >= 200),
            ("idle RSS < 120 MB", max(rss) * 1.048576 < 120),
            ("one daemon ready < 1.5 s", one_ready < 1.5),
            ("8-daemon swarm ready < 4 s", swarm_ready < 4),
        ]
        for name, passed in checks:
            print(f"aim {'met ' if passed else 'MISSED'}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
