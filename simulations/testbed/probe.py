"""Small network probes to run inside a testbed host (``ping`` and ``iperf`` are not installed).

``python -m p2pnode_simulations.testbed.probe COMMAND ...``; each command prints one JSON
object on stdout, and every one ends by itself (a count, a duration or a timeout):

- ``udp-echo --port P --duration S``: echo datagrams back for S seconds; prints ``{"echoed": n}``.
- ``udp-ping --to IP --port P --count N --interval S --timeout S``: N numbered datagrams,
  prints the round-trip times of those answered (``rtts``) and the count ``lost``.
- ``udp-sink --port P --duration S``: count datagrams for S seconds (``received``, ``bytes``).
- ``udp-flood --to IP --port P --count N --size B --rate R``: send N datagrams (at most R/s).
- ``tcp-echo --port P --duration S``: accept for S seconds, answer each connection with the
  peer address it saw (to see a NAT's masquerade), then echo.
- ``tcp-connect --to IP --port P --timeout S``: ``{"ok": true, "seen_as": ...}`` or the error.
- ``mcast-recv --group G --port P --duration S`` / ``mcast-send --group G --port P --count N``:
  join a multicast group and count what arrives; send N datagrams to it.
- ``tcp-sink --port P --duration S`` / ``tcp-send --to IP --port P --bytes N``: bulk transfer;
  the sender prints the seconds it took and the MiB/s.
"""

from __future__ import annotations

import argparse
import json
import socket
import struct
import sys
import time

MAX_DGRAM = 65_535


def udp_echo(port: int, duration: float) -> dict[str, object]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", port))
    end = time.monotonic() + duration
    n = 0
    while (left := end - time.monotonic()) > 0:
        s.settimeout(left)
        try:
            data, addr = s.recvfrom(MAX_DGRAM)
        except TimeoutError:
            break
        s.sendto(data, addr)
        n += 1
    return {"echoed": n}


def udp_ping(to: str, port: int, count: int, interval: float, timeout: float) -> dict[str, object]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setblocking(False)
    sent: dict[int, float] = {}
    rtts: dict[int, float] = {}
    end = None
    i = 0
    next_send = time.monotonic()
    while True:
        now = time.monotonic()
        if i < count and now >= next_send:
            sent[i] = now
            s.sendto(struct.pack("!I", i) + b"p" * 28, (to, port))
            i += 1
            next_send = now + interval
            if i == count:
                end = now + timeout
        if end is not None and (now >= end or len(rtts) == count):
            break
        try:
            data, _ = s.recvfrom(MAX_DGRAM)
        except BlockingIOError:
            time.sleep(0.0005)
            continue
        (k,) = struct.unpack("!I", data[:4])
        if k in sent and k not in rtts:
            rtts[k] = time.monotonic() - sent[k]
    return {"rtts": [rtts[k] for k in sorted(rtts)], "lost": count - len(rtts)}


def udp_sink(port: int, duration: float) -> dict[str, object]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind(("0.0.0.0", port))
    end = time.monotonic() + duration
    n = nbytes = 0
    first = last = None
    while (left := end - time.monotonic()) > 0:
        s.settimeout(left)
        try:
            data = s.recv(MAX_DGRAM)
        except TimeoutError:
            break
        now = time.monotonic()
        first = first if first is not None else now
        last = now
        n += 1
        nbytes += len(data)
    span = (last - first) if first is not None and last is not None else 0.0
    return {"received": n, "bytes": nbytes, "span": span}


def udp_flood(to: str, port: int, count: int, size: int, rate: float) -> dict[str, object]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    payload = b"x" * size
    t0 = time.monotonic()
    failed = 0
    for i in range(count):
        due = t0 + i / rate
        while (wait := due - time.monotonic()) > 0:
            time.sleep(wait)
        try:
            s.sendto(payload, (to, port))
        except OSError:  # a full socket buffer (ENOBUFS): counted, the flood goes on
            failed += 1
    return {"sent": count - failed, "failed": failed, "seconds": time.monotonic() - t0}


def mcast_recv(group: str, port: int, duration: float) -> dict[str, object]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("", port))
    mreq = socket.inet_aton(group) + socket.inet_aton("0.0.0.0")
    s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
    end = time.monotonic() + duration
    senders = []
    while (left := end - time.monotonic()) > 0:
        s.settimeout(left)
        try:
            _, addr = s.recvfrom(MAX_DGRAM)
        except TimeoutError:
            break
        senders.append(addr[0])
    return {"received": len(senders), "from": sorted(set(senders))}


def mcast_send(group: str, port: int, count: int, interval: float) -> dict[str, object]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
    for _ in range(count):
        s.sendto(b"hello", (group, port))
        time.sleep(interval)
    return {"sent": count}


def tcp_echo(port: int, duration: float) -> dict[str, object]:
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("0.0.0.0", port))
    ls.listen(8)
    end = time.monotonic() + duration
    seen = []
    while (left := end - time.monotonic()) > 0:
        ls.settimeout(left)
        try:
            c, addr = ls.accept()
        except TimeoutError:
            break
        with c:
            c.settimeout(5)
            seen.append(addr[0])
            c.sendall(addr[0].encode() + b"\n")
    return {"accepted": seen}


def tcp_connect(to: str, port: int, timeout: float) -> dict[str, object]:
    try:
        with socket.create_connection((to, port), timeout=timeout) as c:
            c.settimeout(timeout)
            line = c.makefile("rb").readline(256)
        return {"ok": True, "seen_as": line.decode().strip()}
    except OSError as exc:
        return {"ok": False, "error": type(exc).__name__}


def tcp_sink(port: int, duration: float) -> dict[str, object]:
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("0.0.0.0", port))
    ls.listen(1)
    ls.settimeout(duration)
    try:
        c, _ = ls.accept()
    except TimeoutError:
        return {"bytes": 0}
    n = 0
    end = time.monotonic() + duration
    with c:
        while (left := end - time.monotonic()) > 0:
            c.settimeout(left)
            try:
                data = c.recv(1 << 20)
            except TimeoutError:
                break
            if not data:
                break
            n += len(data)
    return {"bytes": n}


def tcp_send(to: str, port: int, nbytes: int, timeout: float) -> dict[str, object]:
    chunk = b"\0" * (1 << 16)
    t0 = time.monotonic()
    with socket.create_connection((to, port), timeout=timeout) as c:
        c.settimeout(timeout)
        left = nbytes
        while left > 0:
            c.sendall(chunk[: min(left, len(chunk))])
            left -= min(left, len(chunk))
        c.shutdown(socket.SHUT_WR)
        c.recv(1)  # the sink closes when it has everything
    took = time.monotonic() - t0
    return {"bytes": nbytes, "seconds": took, "mib_s": nbytes / took / (1 << 20)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m p2pnode_simulations.testbed.probe")
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("udp-echo", "udp-sink", "tcp-echo", "tcp-sink"):
        p = sub.add_parser(name)
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--duration", type=float, default=10.0)
    p = sub.add_parser("udp-ping")
    p.add_argument("--to", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--count", type=int, default=10)
    p.add_argument("--interval", type=float, default=0.01)
    p.add_argument("--timeout", type=float, default=1.0)
    p = sub.add_parser("udp-flood")
    p.add_argument("--to", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--rate", type=float, default=10_000.0)
    for name in ("mcast-recv", "mcast-send"):
        p = sub.add_parser(name)
        p.add_argument("--group", required=True)
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--duration", type=float, default=5.0)
        p.add_argument("--count", type=int, default=10)
        p.add_argument("--interval", type=float, default=0.05)
    p = sub.add_parser("tcp-connect")
    p.add_argument("--to", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--timeout", type=float, default=3.0)
    p = sub.add_parser("tcp-send")
    p.add_argument("--to", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--bytes", type=int, required=True)
    p.add_argument("--timeout", type=float, default=60.0)
    a = ap.parse_args(argv)
    if a.cmd == "udp-echo":
        out = udp_echo(a.port, a.duration)
    elif a.cmd == "udp-sink":
        out = udp_sink(a.port, a.duration)
    elif a.cmd == "tcp-echo":
        out = tcp_echo(a.port, a.duration)
    elif a.cmd == "tcp-sink":
        out = tcp_sink(a.port, a.duration)
    elif a.cmd == "udp-ping":
        out = udp_ping(a.to, a.port, a.count, a.interval, a.timeout)
    elif a.cmd == "udp-flood":
        out = udp_flood(a.to, a.port, a.count, a.size, a.rate)
    elif a.cmd == "mcast-recv":
        out = mcast_recv(a.group, a.port, a.duration)
    elif a.cmd == "mcast-send":
        out = mcast_send(a.group, a.port, a.count, a.interval)
    elif a.cmd == "tcp-connect":
        out = tcp_connect(a.to, a.port, a.timeout)
    else:
        out = tcp_send(a.to, a.port, a.bytes, a.timeout)
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
