"""The testbed's switch: one process forwarding Ethernet frames between TAP ports, shaping links.

Run as ``python -m p2pnode_simulations.testbed.switch --control PATH --seed N`` inside the
testbed's switch namespace (``ip netns exec``). :class:`~.testbed.Testbed` starts it; nobody
else needs to.

How it works. For each host (or NAT router) the switch opens a TAP device (``/dev/net/tun``,
``IFF_TAP | IFF_NO_PI``) in its own namespace and moves it into the host's namespace with
``ip link set NAME netns NS``; its file descriptor keeps working, so every frame the host sends
on that interface is read here, and every frame written here arrives there. The switch learns
which MAC address lives behind which port, floods broadcast, multicast (so mDNS works) and
unknown destinations to every other port, and passes each frame through the
:class:`~.links.Shaper` of its directed pair of ports (delay, jitter, loss, rate) and the
partition check before it is written out. Frames wait for their release time in one heap.

Control: JSON lines over a unix socket, one request per line, one reply per line
(``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``):

- ``{"op": "add_port", "host": H, "netns": NS, "mac": M?}`` -> ``{"ifname": ...}``
- ``{"op": "set_link", "a": A, "b": B, "spec": {...}, "both": true}``
- ``{"op": "set_default", "spec": {...}}``
- ``{"op": "partition", "groups": [[...], ...]}`` (ports in no group form one more group)
- ``{"op": "heal"}``, ``{"op": "stats"}``, ``{"op": "ping"}``

Bounds: a read takes at most :data:`~.links.MAX_FRAME` bytes and at most :data:`READ_BATCH`
frames per port per turn; at most :data:`MAX_PENDING` frames wait in the heap (beyond that a
frame is dropped as ``queue``); a control line is at most :data:`MAX_LINE` bytes; at most
:data:`MAX_PORTS` ports, :data:`MAX_MACS` learned addresses and :data:`MAX_CLIENTS` control
connections. The switch exits when its parent (the testbed) is gone, so a killed test leaves
no switch running.
"""

from __future__ import annotations

import argparse
import fcntl
import heapq
import json
import os
import random
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field

from p2pnode_simulations.testbed.links import MAX_FRAME, PERFECT, LinkSpec, LinkSpecError, Shaper

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
READ_BATCH = 64
MAX_PENDING = 50_000
MAX_LINE = 64 * 1024
MAX_PORTS = 64
MAX_MACS = 4096
MAX_CLIENTS = 16
PARENT_CHECK = 1.0  # seconds between checks that the testbed is still there
NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MAC_RE = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
PAIR_COUNTERS = (
    "sent",
    "sent_bytes",
    "delivered",
    "delivered_bytes",
    "dropped_loss",
    "dropped_partition",
    "dropped_queue",
)


class ControlError(Exception):
    """A bad control request: the reply carries the message, the switch carries on."""


@dataclass
class Port:
    name: str
    netns: str
    ifname: str
    fd: int
    rx_frames: int = 0
    rx_bytes: int = 0
    tx_frames: int = 0
    tx_bytes: int = 0
    tx_dropped: int = 0  # the host's TAP queue was full


@dataclass
class Pair:
    shaper: Shaper
    explicit: bool = False  # has its own set_link, so set_default leaves it alone
    counters: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PAIR_COUNTERS, 0))


def open_tap(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
    except OSError:
        os.close(fd)
        raise
    return fd


def _ip(*args: str) -> None:
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise ControlError(f"ip {' '.join(args)}: {r.stderr.strip()}")


class Switch:
    def __init__(self, seed: int, now: float) -> None:
        self.rng = random.Random(seed)
        self.ports: dict[str, Port] = {}
        self.by_fd: dict[int, Port] = {}
        self.macs: dict[bytes, Port] = {}
        self.pairs: dict[tuple[str, str], Pair] = {}
        self.default = PERFECT
        self.group_of: dict[str, int] | None = None
        self.heap: list[tuple[float, int, Port, bytes, Pair]] = []
        self.seq = 0
        self.started = now
        self.forwarded = 0

    # ---- control ----
    def handle(self, req: object) -> dict[str, object]:
        if not isinstance(req, dict) or not isinstance(req.get("op"), str):
            raise ControlError("a request is an object with an 'op'")
        op = req["op"]
        if op == "ping":
            return {}
        if op == "add_port":
            return self.add_port(req.get("host"), req.get("netns"), req.get("mac"))
        if op == "set_link":
            a, b = self._port_name(req.get("a")), self._port_name(req.get("b"))
            spec = _spec(req.get("spec"))
            both = req.get("both", True)
            if not isinstance(both, bool):
                raise ControlError("both must be true or false")
            self._set_pair(a, b, spec)
            if both:
                self._set_pair(b, a, spec)
            return {}
        if op == "set_default":
            self.default = _spec(req.get("spec"))
            for p in self.pairs.values():
                if not p.explicit:
                    p.shaper.set_spec(self.default)
            return {}
        if op == "partition":
            self.partition(req.get("groups"))
            return {}
        if op == "heal":
            self.group_of = None
            return {}
        if op == "stats":
            return self.stats()
        raise ControlError(f"unknown op {op!r}")

    def add_port(self, host: object, netns: object, mac: object) -> dict[str, object]:
        if not isinstance(host, str) or not NAME_RE.match(host):
            raise ControlError(f"bad host name {host!r}")
        if not isinstance(netns, str) or not NAME_RE.match(netns):
            raise ControlError(f"bad namespace name {netns!r}")
        if host in self.ports:
            raise ControlError(f"port {host!r} exists")
        if len(self.ports) >= MAX_PORTS:
            raise ControlError(f"at most {MAX_PORTS} ports")
        if mac is not None and (not isinstance(mac, str) or not MAC_RE.match(mac)):
            raise ControlError(f"bad MAC address {mac!r}")
        ifname = f"tbp{len(self.ports)}"
        fd = open_tap(ifname)
        try:
            if mac is not None:
                _ip("link", "set", "dev", ifname, "address", mac)
            _ip("link", "set", "dev", ifname, "netns", netns)
        except ControlError:
            os.close(fd)
            raise
        port = Port(host, netns, ifname, fd)
        self.ports[host] = port
        self.by_fd[fd] = port
        if mac is not None:
            self.macs[bytes.fromhex(mac.replace(":", ""))] = port
        return {"ifname": ifname}

    def partition(self, groups: object) -> None:
        if not isinstance(groups, list) or not all(isinstance(g, list) for g in groups):
            raise ControlError("groups is a list of lists of port names")
        group_of: dict[str, int] = {}
        for i, g in enumerate(groups):
            for name in g:
                name = self._port_name(name)
                if name in group_of:
                    raise ControlError(f"{name} is in two groups")
                group_of[name] = i
        rest = len(groups)
        for name in self.ports:
            group_of.setdefault(name, rest)
        self.group_of = group_of

    def _port_name(self, name: object) -> str:
        if not isinstance(name, str) or name not in self.ports:
            raise ControlError(f"no port {name!r}")
        return name

    def _pair(self, a: str, b: str) -> Pair:
        pair = self.pairs.get((a, b))
        if pair is None:
            pair = self.pairs[(a, b)] = Pair(Shaper(self.default))
        return pair

    def _set_pair(self, a: str, b: str, spec: LinkSpec) -> None:
        pair = self._pair(a, b)
        pair.explicit = True
        pair.shaper.set_spec(spec)

    def stats(self) -> dict[str, object]:
        ports = {
            p.name: {
                "ifname": p.ifname,
                "netns": p.netns,
                "rx_frames": p.rx_frames,
                "rx_bytes": p.rx_bytes,
                "tx_frames": p.tx_frames,
                "tx_bytes": p.tx_bytes,
                "tx_dropped": p.tx_dropped,
            }
            for p in self.ports.values()
        }
        pairs = {f"{a}>{b}": dict(p.counters) for (a, b), p in self.pairs.items()}
        return {
            "ports": ports,
            "pairs": pairs,
            "pending": len(self.heap),
            "forwarded": self.forwarded,
            "partitioned": self.group_of is not None,
        }

    # ---- frames ----
    def receive(self, port: Port, frame: bytes, now: float) -> None:
        port.rx_frames += 1
        port.rx_bytes += len(frame)
        if len(frame) < 14:
            return
        dst, src = frame[0:6], frame[6:12]
        if not src[0] & 1 and self.macs.get(src) is not port:
            if len(self.macs) >= MAX_MACS and src not in self.macs:
                self.macs.pop(next(iter(self.macs)))  # forget the oldest address
            self.macs[src] = port
        out = None if dst[0] & 1 else self.macs.get(dst)
        if out is None:
            for other in self.ports.values():
                if other is not port:
                    self._offer(port, other, frame, now)
        elif out is not port:
            self._offer(port, out, frame, now)

    def _offer(self, src: Port, dst: Port, frame: bytes, now: float) -> None:
        pair = self._pair(src.name, dst.name)
        c = pair.counters
        c["sent"] += 1
        c["sent_bytes"] += len(frame)
        groups = self.group_of
        if groups is not None and groups.get(src.name) != groups.get(dst.name):
            c["dropped_partition"] += 1
            return
        if len(self.heap) >= MAX_PENDING:
            c["dropped_queue"] += 1
            return
        d = pair.shaper.offer(len(frame), now, self.rng)
        if d.release is None:
            c["dropped_" + (d.drop or "queue")] += 1
            return
        self.seq += 1
        heapq.heappush(self.heap, (d.release, self.seq, dst, frame, pair))

    def release_due(self, now: float) -> None:
        heap = self.heap
        while heap and heap[0][0] <= now:
            _, _, port, frame, pair = heapq.heappop(heap)
            try:
                os.write(port.fd, frame)
            except (BlockingIOError, OSError):
                port.tx_dropped += 1
                pair.counters["dropped_queue"] += 1
                continue
            port.tx_frames += 1
            port.tx_bytes += len(frame)
            pair.counters["delivered"] += 1
            pair.counters["delivered_bytes"] += len(frame)
            self.forwarded += 1

    def next_timeout(self, now: float) -> float:
        if not self.heap:
            return PARENT_CHECK
        return min(PARENT_CHECK, max(0.0, self.heap[0][0] - now))


def _spec(d: object) -> LinkSpec:
    try:
        return LinkSpec.from_dict(d)
    except LinkSpecError as exc:
        raise ControlError(str(exc)) from None


@dataclass
class _Client:
    sock: socket.socket
    buf: bytearray = field(default_factory=bytearray)


def serve(control: str, seed: int) -> None:
    parent = os.getppid()
    sw = Switch(seed, time.monotonic())
    lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)  # the control socket is the testbed's alone
    try:
        lsock.bind(control)
    finally:
        os.umask(old)
    lsock.listen(MAX_CLIENTS)
    lsock.setblocking(False)
    clients: dict[int, _Client] = {}
    ep = select.epoll()
    ep.register(lsock.fileno(), select.EPOLLIN)
    stopping = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    last_check = time.monotonic()
    try:
        while not stopping:
            now = time.monotonic()
            events = ep.poll(sw.next_timeout(now))
            now = time.monotonic()
            for fd, _ in events:
                port = sw.by_fd.get(fd)
                if port is not None:
                    for _ in range(READ_BATCH):
                        try:
                            frame = os.read(fd, MAX_FRAME)
                        except BlockingIOError:
                            break
                        sw.receive(port, frame, now)
                elif fd == lsock.fileno():
                    try:
                        conn, _ = lsock.accept()
                    except BlockingIOError:
                        continue
                    if len(clients) >= MAX_CLIENTS:
                        conn.close()
                        continue
                    conn.setblocking(False)
                    clients[conn.fileno()] = _Client(conn)
                    ep.register(conn.fileno(), select.EPOLLIN)
                elif fd in clients:
                    _serve_client(sw, ep, clients, clients[fd])
            sw.release_due(time.monotonic())
            if now - last_check >= PARENT_CHECK:
                last_check = now
                if os.getppid() != parent:
                    break  # the testbed is gone: so is its network
    finally:
        for c in clients.values():
            c.sock.close()
        for p in sw.ports.values():
            os.close(p.fd)
        lsock.close()
        ep.close()


def _serve_client(
    sw: Switch, ep: select.epoll, clients: dict[int, _Client], client: _Client
) -> None:
    fd = client.sock.fileno()
    try:
        data = client.sock.recv(MAX_LINE)
    except BlockingIOError:
        return
    except OSError:
        data = b""
    if not data:
        ep.unregister(fd)
        clients.pop(fd).sock.close()
        return
    client.buf += data
    while b"\n" in client.buf:
        line, _, rest = bytes(client.buf).partition(b"\n")
        client.buf = bytearray(rest)
        before = set(sw.by_fd)
        try:
            reply: dict[str, object] = {"ok": True, **sw.handle(json.loads(line))}
        except (ControlError, ValueError, OSError) as exc:
            reply = {"ok": False, "error": str(exc)}
        for new in set(sw.by_fd) - before:
            ep.register(new, select.EPOLLIN)
        # Replies are small and the client waits for each: a blocking send is bounded.
        client.sock.setblocking(True)
        client.sock.settimeout(5)
        try:
            client.sock.sendall(json.dumps(reply).encode() + b"\n")
        except OSError:
            ep.unregister(fd)
            clients.pop(fd).sock.close()
            return
        finally:
            client.sock.setblocking(False)
    if len(client.buf) > MAX_LINE:
        ep.unregister(fd)
        clients.pop(fd).sock.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m p2pnode_simulations.testbed.switch")
    ap.add_argument("--control", required=True, help="path of the control unix socket")
    ap.add_argument("--seed", type=int, default=0, help="seed of the loss and jitter draws")
    args = ap.parse_args(argv)
    serve(args.control, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
