"""PBFT benchmark: committees of real daemon processes on 127.0.0.1, driven through the IPC API.

For committees of 4 and 7 validators, unbatched (``consensus.max_batch = 1``) and batched (64):

- commit latency of one transaction at a time (the time ``consensus.submit`` takes, IPC
  included), p50/p99;
- throughput with many transactions in flight (spread over every validator's IPC socket), with
  the latency under that load;
- in the batched run, the time from SIGKILL of the primary (under load) to the first commit in
  the new view, as seen by a backup's ``commits`` subscription.

The aims of issue 5 are printed beside the figures.

    python benchmarks/pbft.py                 # n = 4 and 7
    python benchmarks/pbft.py --sizes 4 --seconds 5
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from p2pnode import AsyncClient
from p2pnode.consensus.genesis import genesis_validators
from p2pnode.swarm import SwarmNode, prepare, start, stop, wait_ready


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def line(name: str, lat: list[float], rate: float | None = None, aim: str = "") -> None:
    text = f"{name:<34} p50 {1e3 * pct(lat, 0.5):7.2f} ms  p99 {1e3 * pct(lat, 0.99):7.2f} ms"
    if rate is not None:
        text += f"  {rate:8.1f} tx/s"
    print(text + (f"   [{aim}]" if aim else ""), flush=True)


async def sequential(node: SwarmNode, count: int, tag: str) -> list[float]:
    lat = []
    async with AsyncClient.open(socket_path=node.socket, timeout=60) as c:
        for k in range(count):
            t = time.perf_counter()
            await c.consensus_submit({"type": "kv_put", "key": f"{tag}-{k}", "value": b"v"})
            lat.append(time.perf_counter() - t)
    return lat


async def loaded(
    nodes: list[SwarmNode], inflight: int, seconds: float, tag: str, stop_event: trio.Event | None
) -> tuple[list[float], int, float]:
    """``inflight`` submitters spread over ``nodes`` for ``seconds`` (or until stop_event)."""
    lat: list[float] = []
    done = 0
    t_end = time.perf_counter() + seconds

    async def worker(c: AsyncClient, w: int) -> None:
        nonlocal done
        k = 0
        while time.perf_counter() < t_end and not (stop_event is not None and stop_event.is_set()):
            t = time.perf_counter()
            try:
                await c.consensus_submit({"type": "kv_put", "key": f"{tag}-{w}-{k}", "value": b"v"})
            except Exception:
                return  # its node was killed
            lat.append(time.perf_counter() - t)
            done += 1
            k += 1

    t0 = time.perf_counter()
    async with trio.open_nursery() as n:
        per_node = max(1, inflight // len(nodes))
        for j, node in enumerate(nodes):
            # The daemon serves 64 requests at once per IPC connection: one connection per 64.
            for first in range(0, per_node, 64):

                async def one_conn(
                    node: SwarmNode = node,
                    base: int = j * per_node + first,
                    count: int = min(64, per_node - first),
                ) -> None:
                    async with (
                        AsyncClient.open(socket_path=node.socket, timeout=60) as c,
                        trio.open_nursery() as inner,
                    ):
                        for w in range(count):
                            inner.start_soon(worker, c, base + w)

                n.start_soon(one_conn)
    return lat, done, time.perf_counter() - t0


async def view_change(nodes: list[SwarmNode], inflight: int) -> float:
    """Kill the primary (node-1) under load; seconds to the first commit in a later view."""
    backups = nodes[1:]
    stop_load = trio.Event()
    result: list[float] = []
    async with trio.open_nursery() as n:
        n.start_soon(loaded, backups, inflight, 60.0, "vc", stop_load)
        await trio.sleep(1.0)
        async with (
            AsyncClient.open(socket_path=nodes[1].socket, timeout=60) as watcher,
            watcher.subscribe("commits") as events,
        ):
            proc = nodes[0].process
            assert proc is not None
            t_kill = time.perf_counter()
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)
            nodes[0].process = None
            with trio.move_on_after(30):
                async for ev in events:
                    if ev.get("event") == "commit" and (ev.get("view") or 0) >= 1:
                        result.append(time.perf_counter() - t_kill)
                        break
        stop_load.set()
    return result[0] if result else float("nan")


def run_committee(n: int, batch: int, args: argparse.Namespace, root: Path) -> None:
    parent = root / f"n{n}-b{batch}"
    ids = genesis_validators(parent, n)
    nodes = prepare(parent, n, {"consensus.validators": ids, "consensus.max_batch": batch})
    try:
        start(nodes)
        wait_ready(nodes, timeout=120)
        time.sleep(1.0 + 0.3 * n)  # identify and first streams settle
        mode = "unbatched" if batch == 1 else f"batched (max_batch {batch})"
        print(f"-- n={n}, {mode}", flush=True)
        trio.run(sequential, nodes[1], 20, "warm")
        lat = trio.run(sequential, nodes[1], args.sequential, "seq")
        aim = "aim p50 < 25 ms at n=4" if n == 4 and batch == 1 else ""
        line(f"n={n} {'unbatched' if batch == 1 else 'batched'} latency, 1 in flight", lat, aim=aim)
        inflight = args.inflight if batch > 1 else args.inflight_unbatched
        lat, done, wall = trio.run(loaded, nodes, inflight, args.seconds, "load", None)
        aim = "aim >= 1,000 tx/s batched at n=4" if n == 4 and batch > 1 else ""
        line(
            f"n={n} {'unbatched' if batch == 1 else 'batched'} throughput, {inflight} in flight",
            lat,
            done / wall,
            aim,
        )
        if batch > 1:
            took = trio.run(view_change, nodes, args.inflight_unbatched)
            print(
                f"n={n} view change: SIGKILL of the primary -> first commit in the new view "
                f"{took:.2f} s   [aim < 3 s]",
                flush=True,
            )
    finally:
        stop(nodes)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="4,7", help="committee sizes (default 4,7)")
    p.add_argument("--sequential", type=int, default=200, help="one-at-a-time submits")
    p.add_argument("--seconds", type=float, default=8.0, help="length of each loaded run")
    p.add_argument("--inflight", type=int, default=512, help="submits in flight, batched")
    p.add_argument(
        "--inflight-unbatched", type=int, default=32, help="submits in flight, unbatched"
    )
    p.add_argument("--keep", action="store_true", help="keep the data dirs")
    args = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="pbft-bench-"))
    print(f"PBFT on real daemons (127.0.0.1), {os.cpu_count()} cores; data in {root}")
    try:
        for n in [int(x) for x in args.sizes.split(",")]:
            for batch in (1, 64):
                run_committee(n, batch, args, root)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
