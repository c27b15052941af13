"""Blob benchmark: fetch throughput between real daemons beside a raw py-libp2p stream.

In one run it prints: a 64 MiB and a 256 MiB fetch from one provider, each beside a raw single
py-libp2p stream (noise + yamux, 1 MiB writes, two processes) moving the same number of bytes,
and their ratio; the 256 MiB fetch from three providers; the IPC cost of putting and getting a
64 MiB tensor through the socket; and the growth of the fetching daemon's peak RSS.

    python benchmarks/blobs.py
"""

from __future__ import annotations

import argparse
import os
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import multiaddr
import numpy as np
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.network.stream.exceptions import StreamEOF
from libp2p.peer.peerinfo import info_from_p2p_addr

from p2pnode import Client
from p2pnode.network.host import build_host
from p2pnode.swarm import prepare, start, stop, wait_ready

MiB = 1 << 20
RAW_PROTOCOL = "/p2pnode-bench/raw/1.0.0"
WRITE = 1 * MiB


# -- the raw baseline: one py-libp2p stream, same security and muxer as the daemons ------------


async def serve_raw() -> None:
    host = build_host(create_new_key_pair(), psk=None, dial_timeout=5)
    payload = os.urandom(WRITE)

    async def handler(stream) -> None:  # type: ignore[no-untyped-def]
        head = b""
        while len(head) < 8:
            head += await stream.read(8 - len(head))
        (size,) = struct.unpack(">Q", head)
        sent = 0
        while sent < size:
            n = min(WRITE, size - sent)
            await stream.write(payload[:n])
            sent += n
        await stream.close()

    host.set_stream_handler(RAW_PROTOCOL, handler)
    async with host.run(listen_addrs=[multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
        print(host.get_addrs()[0], flush=True)
        await trio.sleep(3600)


async def fetch_raw(addr: str, size: int) -> float:
    host = build_host(create_new_key_pair(), psk=None, dial_timeout=5)
    info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
    async with host.run(listen_addrs=[multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
        await host.connect(info)
        stream = await host.new_stream(info.peer_id, [RAW_PROTOCOL])
        t = time.perf_counter()
        await stream.write(struct.pack(">Q", size))
        got = 0
        while got < size:
            try:
                got += len(await stream.read(1 << 16))
            except StreamEOF:
                break
        took = time.perf_counter() - t
        assert got == size, (got, size)
        return size / MiB / took


# -- daemons -----------------------------------------------------------------------------------


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def random_file(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        for _ in range(size // (16 * MiB)):
            f.write(os.urandom(16 * MiB))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--serve-raw", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--repeat", type=int, default=2, help="runs per measurement (best kept)")
    args = ap.parse_args()
    if args.serve_raw:
        trio.run(serve_raw)
        return 0

    raw_server = subprocess.Popen(
        [sys.executable, __file__, "--serve-raw"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert raw_server.stdout is not None
        raw_addr = raw_server.stdout.readline().strip()
        with tempfile.TemporaryDirectory(prefix="p2pnode-blobs-") as tmp:
            nodes = prepare(Path(tmp) / "swarm", 6, {"log_level": "warning"})
            start(nodes)
            wait_ready(nodes)
            time.sleep(1.0)
            try:
                run(nodes, Path(tmp), raw_addr, args.repeat)
            finally:
                stop(nodes)
    finally:
        raw_server.terminate()
        raw_server.wait(10)
    return 0


def run(nodes, tmp: Path, raw_addr: str, repeat: int) -> None:  # type: ignore[no-untyped-def]
    def client(i: int) -> Client:
        return Client(socket_path=nodes[i].socket, timeout=600)

    files = {}
    for size in (64, 256):
        files[size] = tmp / f"{size}.bin"
        random_file(files[size], size * MiB)

    print("| transfer | daemon fetch MiB/s | raw stream MiB/s | ratio |")
    print("|---|---:|---:|---:|")
    fetcher_pid = nodes[1].process.pid
    rss_before = peak_rss_mib(fetcher_pid)
    results = {}
    for size in (64, 256):
        best_daemon, best_raw = 0.0, 0.0
        for _ in range(repeat):
            with client(0) as c0:
                key = c0.blob_put(path=files[size], pin=False)["key"]
            fetcher = 1
            t = time.perf_counter()
            with client(fetcher) as cf:
                cf.blob_fetch(key)
            took = time.perf_counter() - t
            best_daemon = max(best_daemon, size / took)
            best_raw = max(best_raw, trio.run(fetch_raw, raw_addr, size * MiB))
            forget(nodes[fetcher], key)
        results[size] = (best_daemon, best_raw)
        print(
            f"| {size} MiB, 1 provider | {best_daemon:.1f} | {best_raw:.1f} | "
            f"{best_daemon / best_raw:.2f}x |"
        )
    rss_after = peak_rss_mib(fetcher_pid)

    # Three providers: nodes 0, 2, 3 hold the 256 MiB blob; node 4 fetches it.
    with client(0) as c0:
        key = c0.blob_put(path=files[256], pin=False)["key"]
    for i in (2, 3):
        with client(i) as c:
            c.blob_fetch(key)
    best3 = 0.0
    for _ in range(repeat):
        t = time.perf_counter()
        with client(4) as c4:
            c4.blob_fetch(key)
        best3 = max(best3, 256 / (time.perf_counter() - t))
        forget(nodes[4], key)
    print(
        f"| 256 MiB, 3 providers | {best3:.1f} | - | {best3 / results[256][0]:.2f}x of 1 provider |"
    )

    # IPC: a 64 MiB float32 tensor through the socket, against the daemon reading a file.
    tensor = {"w": np.random.default_rng(0).standard_normal(16 * MiB).astype(np.float32)}
    with client(5) as c5:
        t = time.perf_counter()
        tkey = c5.put_tensors(tensor)
        put_s = time.perf_counter() - t
        t = time.perf_counter()
        back = c5.get_tensors(tkey)
        get_s = time.perf_counter() - t
        assert np.array_equal(back["w"], tensor["w"])
        t = time.perf_counter()
        c5.blob_put(path=files[64])
        file_s = time.perf_counter() - t
    print()
    print(
        f"IPC put_tensors 64 MiB: {put_s * 1e3:.0f} ms ({64 / put_s:.0f} MiB/s); "
        f"daemon ingesting the same size from a file: {file_s * 1e3:.0f} ms; "
        f"socket overhead {max(0.0, put_s - file_s) * 1e3:.0f} ms"
    )
    print(f"IPC get_tensors 64 MiB: {get_s * 1e3:.0f} ms ({64 / get_s:.0f} MiB/s)")
    print(
        f"fetching daemon peak RSS: {rss_before:.0f} MiB before, {rss_after:.0f} MiB after "
        f"fetching 64 + 256 MiB (growth {rss_after - rss_before:.0f} MiB)"
    )
    ok1 = results[256][0] >= 0.9 * results[256][1] and results[64][0] >= 0.9 * results[64][1]
    print(f"aim {'met ' if ok1 else 'MISSED'}  one provider >= 0.9x raw stream")
    print(f"aim {'met ' if best3 > results[256][0] else 'MISSED'}  3 providers faster than one")
    grew = rss_after - rss_before
    print(f"aim {'met ' if grew < 64 else 'MISSED'}  peak RSS growth well under the blob size")


def forget(node, key: str) -> None:  # type: ignore[no-untyped-def]
    """Make the next fetch start from nothing: unpin, then collect everything unpinned."""
    with Client(socket_path=node.socket) as c:
        c.call("blob.remove", {"key": key})


if __name__ == "__main__":
    sys.exit(main())
