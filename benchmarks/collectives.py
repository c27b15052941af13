"""Collectives benchmark: all-reduce among real daemons, beside Hivemind 1.1.12's figures.

    python benchmarks/collectives.py [--sizes 1M 4M 16M] [--codecs none fp16 int8]
                                     [--repeat 10] [--peers 4] [--algorithm ring|butterfly|direct]
                                     [--seed 0] [--set KEY=VALUE]... [--keep] [--json]

It starts ``--peers`` daemons on 127.0.0.1 (``p2pnode.swarm``, as ``p2pnode swarm`` does) and
one worker *process* per daemon (multiprocessing, spawn: each has its own client and its own
GIL), which join group ``bench`` of that size. For every size (float32 elements; 1M = 2**20)
and codec, each worker calls ``all_reduce(x, op="sum")`` 2 times to warm up, then ``--repeat``
times timed, with a ``barrier`` before every call so all start together. Each worker times
each call; a call's time is the max over the workers (the group is as slow as its slowest
member), and the cell's time is the median over the calls. Printed per cell:

- seconds per all-reduce, and Hivemind 1.1.12's (from issue 16: none / fp16 / uint8 for
  1M, 4M, 16M) with the ratio ours/theirs;
- MB/s: the array's bytes (1 MB = 10**6 bytes) over that time;
- the max abs error of the last call's result against the exact sum (inputs: standard normal
  float32 from a fixed seed per worker and size; the sum in float64 on the parent), and
  whether every worker got the same bytes;
- where the time goes: the daemons' CPU seconds per call (all daemons together, from
  /proc/<pid>/stat; barriers included), the payload bytes all members sent per call and the
  daemons' CPU per MB of it, the workers' CPU seconds per call, the daemons' own time in the
  operation (``group.status`` seconds, less the barriers' time: from the operation's start to
  its end, so wall minus it is the client and IPC side), and the codec's encode + decode of
  the whole array once in this process;
- the daemons' peak RSS (VmHWM, the max over daemons; read after each size, so it is the peak
  since start-up) beside Hivemind's 1.2 GiB per averaging peer.

When the group changes under a cell (a member declared dead by membership, an operation that
stalled), every worker refreshes the group and the cell runs again from its start; if the
refreshed group is not one group of them all (re-forming can split it into disjoint groups of
the same name), every worker leaves and then joins afresh. Each such event is counted in the
table and printed under it: the figures are those of the last, undisturbed run of the cell.

Every process it starts (daemons, workers) is stopped by its handle when it ends or fails.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
import tomllib
import traceback
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from p2pnode import Client
from p2pnode.collectives.codecs import codec_of, decode_part, encode_part
from p2pnode.collectives.engine import choose_algorithm
from p2pnode.ipc.errors import CollectiveFailed, GroupChangedError
from p2pnode.ipc.groups import Group
from p2pnode.swarm import SwarmNode, prepare, start, stop, wait_ready

M = 1 << 20
GROUP = "bench"
WARMUP = 2
OP_TIMEOUT = 120.0  # seconds one call (or barrier) may take before the run is abandoned
CELL_TIMEOUT = 900.0  # seconds the parent waits for the workers to finish one cell
REFRESH_TIMEOUT = 30.0  # seconds a worker waits for the re-formed group
MAX_REDO = 3  # a cell is run again at most this often when the group changed under it
#: Hivemind 1.1.12, issue 16: seconds per all-reduce for none / fp16 / uint8, by size
HIVEMIND = {1 * M: (0.19, 0.15, 0.13), 4 * M: (0.57, 0.44, 0.44), 16 * M: (1.70, 1.24, 1.36)}
HIVEMIND_CODEC = {"none": 0, "fp16": 1, "int8": 2}
HIVEMIND_RSS_GIB = 1.2


def parse_size(text: str) -> int:
    """``1M``, ``512K`` or a plain number of elements."""
    scale = {"K": 1 << 10, "M": M}.get(text[-1:].upper(), 1)
    return int(text[:-1] if scale > 1 else text) * scale


def setting(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with VALUE read as TOML (a number, a quoted string, true, ...)."""
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError("give KEY=VALUE")
    try:
        return key, tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        return key, value  # a bare word: a string


def size_name(n: int) -> str:
    return f"{n // M}M" if n % M == 0 else f"{n:,}"


def inputs(seed: int, worker: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, worker, n]).standard_normal(n, dtype=np.float32)


# -- the workers ---------------------------------------------------------------------------------


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(143)  # so the worker's finally removes its shared-memory buffer


def worker(index: int, socket: str, peers: int, seed: int, conn: Connection) -> None:
    """One member: joins the group, then runs each cell the parent sends until told to stop.

    A cell ends with ``("cell", ...)`` or, if the group changed under it (a member declared
    dead, say) or an operation failed, ``("changed", reason)``; the parent then has every
    worker refresh the group and run the cell again from its start, so the members' calls
    stay paired.
    """
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    g: Group | None = None
    try:
        with Client(socket_path=socket, timeout=OP_TIMEOUT + 30) as c:
            daemon_pid = int(c.status()["pid"])
            g = c.join_group(GROUP, size=peers, timeout=OP_TIMEOUT)
            conn.send(("joined", g.generation, g.members))
            x: np.ndarray | None = None
            while True:
                msg = conn.recv()
                if msg[0] == "stop":
                    g.leave()
                    return
                if msg[0] == "refresh":
                    try:
                        g.refresh(timeout=REFRESH_TIMEOUT)
                        conn.send(("refreshed", g.generation, g.members))
                    except CollectiveFailed:  # not re-formed in time: the parent rejoins
                        conn.send(("refreshed", -1, []))
                    continue
                if msg[0] == "leave":
                    g.leave()
                    conn.send(("left",))
                    continue
                if msg[0] == "join":
                    g = c.join_group(GROUP, size=peers, timeout=OP_TIMEOUT)
                    conn.send(("joined", g.generation, g.members))
                    continue
                _, n, codec, repeat, algorithm, out_path = msg
                if x is None or x.size != n:
                    x = inputs(seed, index, n)
                try:
                    conn.send(cell(g, x, codec, repeat, algorithm, out_path, daemon_pid))
                except (GroupChangedError, CollectiveFailed) as exc:
                    # A failed operation re-forms the group too: both mean refresh and redo.
                    conn.send(("changed", f"{type(exc).__name__}: {exc}"))
    except BaseException:
        conn.send(("error", traceback.format_exc()))
    finally:
        if g is not None:
            g._close_buffer()  # no IPC: the daemon may be gone, or the socket mid-call


def cell(
    g: Group,
    x: np.ndarray,
    codec: str,
    repeat: int,
    algorithm: str | None,
    out_path: str,
    daemon_pid: int,
) -> tuple[Any, ...]:
    """One size and codec: the timed calls' seconds, and over them this worker's CPU, its
    daemon's CPU, the daemon's op seconds and the payload bytes the daemon sent."""

    def call() -> tuple[float, float, np.ndarray]:
        t = time.perf_counter()
        g.barrier(timeout=OP_TIMEOUT)
        t1 = time.perf_counter()
        out = g.all_reduce(x, op="sum", codec=codec, algorithm=algorithm, timeout=OP_TIMEOUT)
        return t1 - t, time.perf_counter() - t1, out

    for _ in range(WARMUP):
        call()
    stats = g.stats
    cpu0, daemon_cpu0 = time.process_time(), cpu_seconds(daemon_pid)
    times = []
    barriers = 0.0  # the daemon counts barriers in its op seconds too
    out = x
    for _ in range(repeat):
        barrier, took, out = call()
        barriers += barrier
        times.append(took)
    cpu, daemon_cpu = time.process_time() - cpu0, cpu_seconds(daemon_pid) - daemon_cpu0
    after = g.stats
    daemon_seconds = after.get("seconds", 0.0) - stats.get("seconds", 0.0) - barriers
    sent = after.get("bytes_sent", 0) - stats.get("bytes_sent", 0)
    np.save(out_path, out)
    st = g.status()
    view = {
        "handle": [g.generation, g.rank, g.members],
        "daemon": [st["generation"], st["rank"], st["members"], st["formed"]],
    }
    return ("cell", times, cpu, daemon_seconds, sent, daemon_cpu, view)


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- the parent ----------------------------------------------------------------------------------


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def wait_connected(nodes: list[SwarmNode], timeout: float = 60.0) -> None:
    """Until every daemon is bootstrapped and knows the others (the group is found in the DHT)."""
    deadline = time.monotonic() + timeout
    for node in nodes:
        while True:
            with Client(socket_path=node.socket, timeout=10) as c:
                s = c.status()
            if s["bootstrapped"] and s["routing_table_size"] >= len(nodes) - 1:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{node.name} has too few peers after {timeout:g} s")
            time.sleep(0.1)


def receive(conns: list[Connection], timeout: float) -> list[tuple[Any, ...]]:
    """One message from every worker; a worker's error (or silence) ends the run."""
    deadline = time.monotonic() + timeout
    out = []
    for i, conn in enumerate(conns):
        if not conn.poll(max(0.0, deadline - time.monotonic())):
            raise RuntimeError(f"worker {i} said nothing for {timeout:g} s")
        msg = conn.recv()
        if msg[0] == "error":
            raise RuntimeError(f"worker {i} failed:\n{msg[1]}")
        out.append(msg)
    return out


def split_views(replies: list[tuple[Any, ...]], peers: int) -> str:
    """'' if the workers' (generation, members) replies describe one group of ``peers``, else
    what they describe instead (a group re-formed in pieces, say)."""
    views = {(r[1], tuple(r[2])) for r in replies}
    if len(views) == 1 and len(next(iter(views))[1]) == peers:
        return ""
    return "; ".join(
        f"generation {gen} of {len(members)} ({', '.join(m[-6:] for m in members)})"
        for gen, members in sorted(views)
    )


def codec_seconds(x: np.ndarray, codec: str) -> float:
    """Encode + decode of the whole array once, in this process (the codec's CPU cost): the
    best of two after a first call (which also pays for fresh pages)."""
    c = codec_of(codec)
    rng = np.random.default_rng(0)
    best = math.inf
    for _ in range(3):
        t = time.perf_counter()
        decode_part(c, encode_part(c, x, rng), x.size)
        best = min(best, time.perf_counter() - t)
    return best


def run_cell(
    conns: list[Connection], args: argparse.Namespace, n: int, codec: str, paths: list[Path]
) -> tuple[list[tuple[Any, ...]], list[str]]:
    """One cell on every worker: their replies, and what disturbed it (each disturbance made
    the cell run again from its start, after a refresh or a fresh join of the group)."""
    breaks: list[str] = []
    while True:
        for i, conn in enumerate(conns):
            conn.send(("cell", n, codec, args.repeat, args.algorithm, str(paths[i])))
        replies = receive(conns, CELL_TIMEOUT)
        changed = [r[1] for r in replies if r[0] == "changed"]
        if not changed:
            break
        breaks.append(changed[0])
        print(f"# {size_name(n)} {codec}: group changed: {changed[0]}", file=sys.stderr)
        if len(breaks) > MAX_REDO:
            raise RuntimeError(f"the group broke {len(breaks)} times: {breaks}")
        for conn in conns:
            conn.send(("refresh",))
        split = split_views(receive(conns, OP_TIMEOUT + 30), args.peers)
        if split:
            # The refreshed group is not one group of them all: leave it and
            # form it afresh (all leave before any joins, so no one is admitted
            # into a remnant).
            breaks.append(f"refresh gave {split}: all left and joined again")
            print(f"# {size_name(n)} {codec}: {breaks[-1]}", file=sys.stderr)
            for msg in (("leave",), ("join",)):
                for conn in conns:
                    conn.send(msg)
                replies = receive(conns, OP_TIMEOUT + 30)
            split = split_views(replies, args.peers)
            if split:
                raise RuntimeError(f"joined again, the group is still {split}")
    return replies, breaks


def cell_row(
    args: argparse.Namespace,
    n: int,
    codec: str,
    replies: list[tuple[Any, ...]],
    breaks: list[str],
    paths: list[Path],
    exact: np.ndarray,
) -> dict[str, Any]:
    """A cell's figures from the workers' replies and results (whose files it removes)."""
    calls = args.repeat
    per_call = [max(r[1][k] for r in replies) for k in range(args.repeat)]
    med = statistics.median(per_call)
    results = [np.load(p, mmap_mode="r") for p in paths]
    err = max(float(np.max(np.abs(r - exact))) for r in results)
    same = all(np.array_equal(results[0], r) for r in results[1:])
    del results
    for p in paths:
        p.unlink()
    # Every member must see one group: the same generation and members, and its own
    # rank in them (a wrong sum with a split view is the daemons' bug, not noise).
    views = [r[6] for r in replies]
    gens = {(v["handle"][0], v["daemon"][0], tuple(v["daemon"][2])) for v in views}
    ranks = sorted(v["daemon"][1] for v in views)
    consistent = len(gens) == 1 and ranks == list(range(args.peers))
    if not consistent or not same:
        print(f"# {size_name(n)} {codec}: views {views}", file=sys.stderr)
    algorithm = args.algorithm or str(choose_algorithm(4 * n, args.peers, codec))
    row = {
        "size": n,
        "codec": codec,
        "algorithm": algorithm,
        "seconds": med,
        "p90": sorted(per_call)[int(0.9 * (len(per_call) - 1))],
        "calls": per_call,
        "mb_per_s": 4 * n / 1e6 / med,
        "max_abs_error": err,
        "identical": same,
        "one_view": consistent,
        "generation": views[0]["daemon"][0],
        "daemon_cpu": sum(r[5] for r in replies) / calls,
        "worker_cpu": sum(r[2] for r in replies) / calls,
        "daemon_op_seconds": max(r[3] for r in replies) / calls,
        "mb_sent": sum(r[4] for r in replies) / calls / 1e6,
        "codec_seconds": codec_seconds(inputs(args.seed, 0, n), codec),
        "group_breaks": breaks,
    }
    ref = HIVEMIND.get(n)
    if ref is not None and codec in HIVEMIND_CODEC:
        row["hivemind"] = ref[HIVEMIND_CODEC[codec]]
    return row


def run(args: argparse.Namespace, tmp: Path, scratch: Path) -> dict[str, Any]:
    nodes = prepare(tmp / "swarm", args.peers, {"log_level": "warning", **dict(args.set)})
    ctx = mp.get_context("spawn")
    procs: list[Any] = []
    conns: list[Connection] = []
    rows: list[dict[str, Any]] = []
    load_before = os.getloadavg()
    try:
        t0 = time.monotonic()
        start(nodes)
        wait_ready(nodes)
        wait_connected(nodes)
        pids = [n.process.pid for n in nodes if n.process is not None]
        for i, node in enumerate(nodes):
            parent_end, child_end = ctx.Pipe()
            p = ctx.Process(
                target=worker,
                args=(i, str(node.socket), args.peers, args.seed, child_end),
                name=f"bench-worker-{i}",
            )
            p.start()
            child_end.close()
            procs.append(p)
            conns.append(parent_end)
        split = split_views(receive(conns, OP_TIMEOUT + 30), args.peers)
        if split:
            raise RuntimeError(f"the group formed as {split}")
        ready = time.monotonic() - t0
        print(f"# {args.peers} daemons up and grouped in {ready:.1f} s", file=sys.stderr)
        for n in args.sizes:
            exact = np.zeros(n, np.float64)
            for i in range(args.peers):
                exact += inputs(args.seed, i, n)
            for codec in args.codecs:
                paths = [scratch / f"w{i}.npy" for i in range(args.peers)]
                replies, breaks = run_cell(conns, args, n, codec, paths)
                row = cell_row(args, n, codec, replies, breaks, paths, exact)
                rows.append(row)
                print(
                    f"# {size_name(n)} {codec}: {row['seconds']:.3f} s", file=sys.stderr, flush=True
                )
            rss = max(peak_rss_mib(p) for p in pids)
            for row in rows:
                if row["size"] == n:
                    row["peak_rss_mib"] = rss
        for conn in conns:
            conn.send(("stop",))
        for p in procs:
            p.join(30)
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join(10)
        stop(nodes)
    return {
        "peers": args.peers,
        "repeat": args.repeat,
        "seed": args.seed,
        "cores": os.cpu_count(),
        "ready_seconds": ready,
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "rows": rows,
    }


def _ratio(ours: float, theirs: float | None) -> str:
    return "-" if not theirs else f"{ours / theirs:.2f}x"


def table(report: dict[str, Any]) -> str:
    lines = [
        f"{report['peers']} daemons on 127.0.0.1, one worker process each; median of "
        f"{report['repeat']} all-reduces (op sum) after {WARMUP} warm-ups, each the max over the "
        f"workers; seed {report['seed']}; {report['cores']} cores; load average "
        f"{report['load_before'][0]:.1f} before, {report['load_after'][0]:.1f} after",
        "",
        "| size | codec | algorithm | s / all-reduce (p90) | Hivemind s | ours/theirs | MB/s "
        "| max abs error | identical | daemons' CPU s / op | workers' CPU s / op "
        "| daemon's op s | MB sent / op (all) | daemons' CPU ms / MB sent | codec enc+dec s "
        "| peak RSS MiB / daemon (Hivemind 1229) | group breaks |",
        "|---|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["rows"]:
        ref = r.get("hivemind")
        lines.append(
            f"| {size_name(r['size'])} | {r['codec']} | {r['algorithm']} "
            f"| {r['seconds']:.3f} ({r['p90']:.3f}) | {ref if ref is not None else '-'} "
            f"| {_ratio(r['seconds'], ref)} | {r['mb_per_s']:.0f} "
            f"| {r['max_abs_error']:.2e} | {r['identical']} | {r['daemon_cpu']:.2f} "
            f"| {r['worker_cpu']:.2f} | {r['daemon_op_seconds']:.3f} | {r['mb_sent']:.0f} "
            f"| {1e3 * r['daemon_cpu'] / max(r['mb_sent'], 1e-9):.1f} | {r['codec_seconds']:.3f} "
            f"| {r['peak_rss_mib']:.0f} ({r['peak_rss_mib'] / (HIVEMIND_RSS_GIB * 1024):.2f}x) "
            f"| {len(r['group_breaks'])} (generation {r['generation']}"
            f"{'' if r['one_view'] else ', VIEWS DIFFER'}) |"
        )
    breaks = [(r, b) for r in report["rows"] for b in r["group_breaks"]]
    if breaks:
        lines.append("")
        lines.append("Cells run again after the group changed under them:")
        lines += [f"- {size_name(r['size'])} {r['codec']}: {b}" for r, b in breaks]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--sizes",
        nargs="+",
        type=parse_size,
        default=[1 * M, 4 * M, 16 * M],
        help="elements (1M = 2**20)",
    )
    ap.add_argument("--codecs", nargs="+", default=["none", "fp16", "int8"])
    ap.add_argument("--repeat", type=int, default=10, help="timed calls per cell")
    ap.add_argument("--peers", type=int, default=4, help="daemons and workers")
    ap.add_argument(
        "--algorithm",
        choices=("direct", "ring", "butterfly"),
        help="the schedule (default: the daemon's choice)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        type=setting,
        metavar="KEY=VALUE",
        help="a daemon setting (docs/configuration.md; VALUE as TOML), e.g. "
        "membership.probe_timeout=0.8 (repeatable)",
    )
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    ap.add_argument(
        "--keep", action="store_true", help="keep the daemons' dirs (their logs) and say where"
    )
    args = ap.parse_args()
    if args.peers < 2 or args.repeat < 1:
        ap.error("--peers 2 or more, --repeat 1 or more")
    shm = "/dev/shm" if Path("/dev/shm").is_dir() else None
    tmp = Path(tempfile.mkdtemp(prefix="p2pnode-coll-"))
    scratch = Path(tempfile.mkdtemp(prefix="p2pnode-coll-out-", dir=shm))
    try:
        report = run(args, tmp, scratch)
    except BaseException:
        print(f"# failed: the daemons' logs are kept in {tmp}/swarm/node-*/", file=sys.stderr)
        raise
    else:
        if args.keep:
            print(f"# the daemons' dirs are kept in {tmp}/swarm/", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps(report, indent=2) if args.json else table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
