"""A testbed of hosts on one machine: network namespaces, a user-space switch, NAT routers.

Each host is a Linux network namespace with its own address and its own ports. Public hosts
and NAT routers each have one port (a TAP device, ``eth0``) on the testbed's switch, a Python
process in a namespace of its own (:mod:`.switch`) that forwards Ethernet frames and emulates
each directed link's delay, jitter, loss and rate (the kernel here has no ``netem``). A host
``behind`` a NAT sits on a private LAN (``192.168.k.0/24``, a veth pair to its router, not
shaped); the router masquerades its traffic out of its WAN port, so on the switch a NATed
host's traffic is its router's: link settings and partitions name the router.

Everything is created inside namespaces named ``{name}-{tag}-{node}`` (``tag`` random), so
nothing appears in the machine's own namespace; :meth:`Testbed.down` deletes them all, even
after a failed :meth:`Testbed.up`, and :meth:`Testbed.cleanup_stale` deletes those left by a
killed run (a run records its pid in an owner file, so a live run's namespaces are left alone).

Needs root, ``/dev/net/tun``, iproute2's ``ip`` and ``iptables``: :func:`testbed_unavailable`
says what is missing.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from p2pnode_simulations.testbed.links import LinkSpec

NAME_RE = re.compile(r"^[a-z][a-z0-9]{0,11}$")
PREFIX_RE = re.compile(r"^[a-z][a-z0-9]{0,7}$")
OWNER_DIR = Path(tempfile.gettempdir()) / "p2pnode-testbed"
SWITCH_READY_TIMEOUT = 20.0
CONTROL_TIMEOUT = 30.0
MAX_NATS = 200


class TestbedError(Exception):
    """The testbed could not be built or asked for something it does not have."""

    __test__ = False  # not a pytest class, whatever its name


def testbed_unavailable() -> str | None:
    """Why a testbed cannot run here (not root, no /dev/net/tun, no ip/iptables), or None."""
    if sys.platform != "linux":
        return "the testbed needs Linux network namespaces"
    if os.geteuid() != 0:
        return "the testbed needs root (to make network namespaces)"
    if not os.path.exists("/dev/net/tun"):
        return "the testbed needs /dev/net/tun (TAP devices)"
    for tool in ("ip", "iptables"):
        if shutil.which(tool) is None:
            return f"the testbed needs `{tool}` (apt-get install iproute2 iptables)"
    return None


def _run(args: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(args, capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise TestbedError(f"{' '.join(args)}: {r.stderr.strip() or r.returncode}")
    return r


@dataclass
class Host:
    """A machine of the testbed: its namespace, its address, and the NAT it sits behind."""

    name: str
    netns: str
    ip: str
    behind: str | None = None

    def argv(self, cmd: list[str]) -> list[str]:
        """``cmd`` run in this host's namespace (``ip netns exec`` execs it: same pid)."""
        return ["ip", "netns", "exec", self.netns, *cmd]

    def popen(self, cmd: list[str], **kw: Any) -> subprocess.Popen[Any]:
        """Start ``cmd`` in this host's namespace; the Popen's pid is the command's."""
        return subprocess.Popen(self.argv(cmd), **kw)

    def run(
        self, cmd: list[str], timeout: float = 30, **kw: Any
    ) -> subprocess.CompletedProcess[Any]:
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        return subprocess.run(self.argv(cmd), timeout=timeout, **kw)


@dataclass
class Router:
    """A home NAT router: WAN port on the switch, private LAN ``lan`` behind it."""

    name: str
    netns: str
    ip: str  # the WAN (public) address
    lan: str  # the private network, e.g. 192.168.1.0/24
    hosts: list[str] = field(default_factory=list)

    @property
    def lan_ip(self) -> str:
        return str(next(ipaddress.ip_network(self.lan).hosts()))


class Testbed:
    """Hosts in namespaces on a shaping switch; a context manager (up on enter, down on exit).

    Names of hosts and routers: lower case letters and digits, at most 12 characters, unique
    across both. ``set_link``, ``partition`` and ``stats`` name switch ports: public hosts and
    routers (a NATed host's name is taken as its router's in ``set_link`` and ``partition``).
    """

    __test__ = False

    def __init__(self, name: str = "tb", *, seed: int = 0, subnet: str = "10.77.0.0/16") -> None:
        if not PREFIX_RE.match(name):
            raise TestbedError(f"testbed name {name!r}: 1-8 lower case letters and digits")
        self.name = name
        self.seed = seed
        self.subnet = ipaddress.ip_network(subnet)
        if self.subnet.version != 4 or self.subnet.prefixlen > 28:
            raise TestbedError(f"subnet {subnet}: an IPv4 network of /28 or larger")
        self.tag = secrets.token_hex(3)
        self.hosts: dict[str, Host] = {}
        self.routers: dict[str, Router] = {}
        self._addrs = iter(self.subnet.hosts())
        self._made: list[str] = []
        self._switch: subprocess.Popen[bytes] | None = None
        self._workdir: Path | None = None
        self._control: socket.socket | None = None
        self._control_buf = b""
        self._owner: Path | None = None
        self._is_up = False
        # set_link/set_default before up() are kept and applied once the switch runs.
        self._pending: list[dict[str, object]] = []

    # ---- building ----
    @property
    def prefix(self) -> str:
        """Every namespace of this testbed starts with this."""
        return f"{self.name}-{self.tag}-"

    def _check_new(self, name: str) -> None:
        if self._is_up:
            raise TestbedError("add hosts and NATs before up()")
        if not NAME_RE.match(name) or name == "sw":
            raise TestbedError(
                f"name {name!r}: 1-12 lower case letters and digits, a letter first, not 'sw'"
            )
        if name in self.hosts or name in self.routers:
            raise TestbedError(f"{name!r} exists")

    def _next_public(self) -> str:
        try:
            return str(next(self._addrs))
        except StopIteration:
            raise TestbedError(f"subnet {self.subnet} is full") from None

    def add_nat(self, name: str) -> Router:
        """A NAT router (before up()): a WAN port on the switch, a private /24 behind it."""
        self._check_new(name)
        k = len(self.routers) + 1
        if k > MAX_NATS:
            raise TestbedError(f"at most {MAX_NATS} NATs")
        r = Router(name, self.prefix + name, self._next_public(), f"192.168.{k}.0/24")
        self.routers[name] = r
        return r

    def add_host(self, name: str, *, behind: str | None = None) -> Host:
        """A host (before up()): public on the switch, or on the LAN of the NAT ``behind``."""
        self._check_new(name)
        if behind is None:
            ip = self._next_public()
        else:
            r = self.routers.get(behind)
            if r is None:
                raise TestbedError(f"no NAT {behind!r} (add_nat first)")
            hosts = list(ipaddress.ip_network(r.lan).hosts())
            ip = str(hosts[9 + len(r.hosts)])  # .10, .11, ...
            r.hosts.append(name)
        h = Host(name, self.prefix + name, ip, behind)
        self.hosts[name] = h
        return h

    def up(self) -> None:
        """Create the namespaces, start the switch, wire every host and router."""
        if self._is_up:
            raise TestbedError("already up")
        reason = testbed_unavailable()
        if reason:
            raise TestbedError(reason)
        self._is_up = True
        try:
            self._up()
        except BaseException:
            self.down()
            raise

    def _up(self) -> None:
        OWNER_DIR.mkdir(mode=0o700, exist_ok=True)
        self._owner = OWNER_DIR / f"{self.name}-{self.tag}.owner"
        self._owner.write_text(str(os.getpid()))
        self._workdir = Path(tempfile.mkdtemp(prefix=f"tb-{self.name}-{self.tag}-"))
        sw_ns = self.prefix + "sw"
        for ns in [sw_ns, *(r.netns for r in self.routers.values())] + [
            h.netns for h in self.hosts.values()
        ]:
            _run(["ip", "netns", "add", ns])
            self._made.append(ns)
            _run(["ip", "-n", ns, "link", "set", "lo", "up"])
        control = self._workdir / "switch.sock"
        log = open(self._workdir / "switch.log", "wb")  # noqa: SIM115 - the child keeps it
        with log:
            cmd = ["ip", "netns", "exec", sw_ns, sys.executable, "-P", "-m",
                   "p2pnode_simulations.testbed.switch", "--control", str(control),
                   "--seed", str(self.seed)]  # fmt: skip
            self._switch = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)
        # The switch binds, then listens: connect until it answers (or gives up, or dies).
        deadline = time.monotonic() + SWITCH_READY_TIMEOUT
        while True:
            if self._switch.poll() is not None or time.monotonic() > deadline:
                raise TestbedError(f"the switch did not start: {self._switch_log()}")
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(CONTROL_TIMEOUT)
            try:
                sock.connect(str(control))
            except OSError:
                sock.close()
                time.sleep(0.02)
                continue
            self._control = sock
            break
        self._request({"op": "ping"})
        bits = self.subnet.prefixlen
        for node in [*self.routers.values(), *(h for h in self.hosts.values() if not h.behind)]:
            ifname = self._request({"op": "add_port", "host": node.name, "netns": node.netns})[
                "ifname"
            ]
            ns = node.netns
            _run(["ip", "-n", ns, "link", "set", ifname, "name", "eth0"])
            _run(["ip", "-n", ns, "addr", "add", f"{node.ip}/{bits}", "dev", "eth0"])
            _run(["ip", "-n", ns, "link", "set", "eth0", "up"])
            # Multicast (mDNS) goes out of eth0: public hosts have no default route to take.
            _run(["ip", "-n", ns, "route", "add", "224.0.0.0/4", "dev", "eth0"])
        for r in self.routers.values():
            self._wire_nat(r)
        for req in self._pending:
            self._request(req)

    def _wire_nat(self, r: Router) -> None:
        ns = r.netns
        lan_bits = ipaddress.ip_network(r.lan).prefixlen
        ipt = ["ip", "netns", "exec", ns, "iptables", "-w", "5"]
        _run(["ip", "netns", "exec", ns, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"])
        # A home router: outbound connections are masqueraded (port-preserving: no --random,
        # which is what lets a hole punch work later), replies come back, and nothing new gets
        # in from the WAN. DROP, not REJECT, as home routers do.
        _run([*ipt, "-t", "nat", "-A", "POSTROUTING", "-o", "eth0", "-j", "MASQUERADE"])
        _run([*ipt, "-P", "FORWARD", "DROP"])
        _run([*ipt, "-A", "FORWARD", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED",
              "-j", "ACCEPT"])  # fmt: skip
        _run([*ipt, "-A", "FORWARD", "-i", "lan0", "-o", "eth0", "-j", "ACCEPT"])
        _run([*ipt, "-A", "INPUT", "-i", "eth0", "-m", "conntrack", "--ctstate", "NEW",
              "-j", "DROP"])  # fmt: skip
        _run(["ip", "-n", ns, "link", "add", "lan0", "type", "bridge"])
        _run(["ip", "-n", ns, "addr", "add", f"{r.lan_ip}/{lan_bits}", "dev", "lan0"])
        _run(["ip", "-n", ns, "link", "set", "lan0", "up"])
        for j, hname in enumerate(r.hosts):
            h = self.hosts[hname]
            # Both ends are made where they belong: nothing in the machine's own namespace.
            _run(["ip", "-n", ns, "link", "add", f"l{j}", "type", "veth", "peer", "name", "eth0",
                  "netns", h.netns])  # fmt: skip
            _run(["ip", "-n", ns, "link", "set", f"l{j}", "master", "lan0", "up"])
            _run(["ip", "-n", h.netns, "addr", "add", f"{h.ip}/{lan_bits}", "dev", "eth0"])
            _run(["ip", "-n", h.netns, "link", "set", "eth0", "up"])
            _run(["ip", "-n", h.netns, "route", "add", "default", "via", r.lan_ip])

    def down(self) -> None:
        """Stop the switch and delete every namespace of this testbed (safe to call twice)."""
        if self._control is not None:
            self._control.close()
            self._control = None
        if self._switch is not None:
            if self._switch.poll() is None:
                self._switch.send_signal(signal.SIGTERM)
                try:
                    self._switch.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self._switch.kill()
                    self._switch.wait(timeout=5)
            self._switch = None
        for ns in reversed(self._made):
            _kill_netns_pids(ns)
            _run(["ip", "netns", "del", ns], check=False)
        self._made.clear()
        # Anything of ours the list missed (an exception between add and append).
        for ns in list_netns():
            if ns.startswith(self.prefix):
                _run(["ip", "netns", "del", ns], check=False)
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
        if self._owner is not None:
            self._owner.unlink(missing_ok=True)
            self._owner = None
        self._is_up = False

    def __enter__(self) -> Testbed:
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    @staticmethod
    def cleanup_stale(prefix: str = "tb") -> list[str]:
        """Delete namespaces ``{prefix}-{tag}-*`` whose testbed process is gone; returns them.

        A run writes its pid to an owner file while it is up; namespaces whose owner is alive
        are left alone, so this is safe beside a running testbed. Processes still inside a
        stale namespace (daemons of the killed run) are killed first."""
        gone = []
        pat = re.compile(rf"^{re.escape(prefix)}-([0-9a-f]{{6}})-")
        for ns in list_netns():
            m = pat.match(ns)
            if not m:
                continue
            owner = OWNER_DIR / f"{prefix}-{m.group(1)}.owner"
            if _owner_alive(owner):
                continue
            _kill_netns_pids(ns)
            _run(["ip", "netns", "del", ns], check=False)
            gone.append(ns)
            owner.unlink(missing_ok=True)
        return gone

    # ---- the switch ----
    def _request(self, req: dict[str, object]) -> dict[str, Any]:
        if self._control is None:
            raise TestbedError("the testbed is not up")
        self._control.sendall(json.dumps(req).encode() + b"\n")
        while b"\n" not in self._control_buf:
            chunk = self._control.recv(1 << 20)
            if not chunk:
                raise TestbedError(f"the switch closed its control socket: {self._switch_log()}")
            self._control_buf += chunk
        line, _, self._control_buf = self._control_buf.partition(b"\n")
        reply = json.loads(line)
        if not reply.pop("ok"):
            raise TestbedError(f"switch: {reply['error']}")
        return reply

    def _switch_log(self) -> str:
        if self._workdir is None:
            return ""
        try:
            return (self._workdir / "switch.log").read_text(errors="replace")[-1500:]
        except OSError:
            return ""

    def port_of(self, name: str) -> str:
        """The switch port carrying ``name``'s traffic: itself, or its router if NATed."""
        if name in self.routers:
            return name
        h = self.hosts.get(name)
        if h is None:
            raise TestbedError(f"no host or router {name!r}")
        return h.behind or name

    def set_link(self, a: str, b: str, spec: LinkSpec) -> None:
        """Both directions between ``a`` and ``b`` (hosts or routers) get ``spec`` (before
        up() too: then it is applied when the switch starts)."""
        pa, pb = self.port_of(a), self.port_of(b)
        if pa == pb:
            raise TestbedError(f"{a} and {b} share one switch port (one NAT): nothing to shape")
        self._configure({"op": "set_link", "a": pa, "b": pb, "spec": spec.to_dict(), "both": True})

    def set_default(self, spec: LinkSpec) -> None:
        """Every directed pair without its own ``set_link`` gets ``spec``."""
        self._configure({"op": "set_default", "spec": spec.to_dict()})

    def _configure(self, req: dict[str, object]) -> None:
        """Link settings: sent to the switch, or kept for up() if it is not running yet."""
        if self._control is None:
            if self._is_up:
                raise TestbedError("the testbed is not up")
            self._pending.append(req)
        else:
            self._request(req)

    def partition(self, *groups: set[str]) -> None:
        """Frames between groups are dropped; ports named in no group form one more group."""
        ports: list[list[str]] = []
        for g in groups:
            ports.append(sorted({self.port_of(n) for n in g}))
        seen: dict[str, int] = {}
        for i, g in enumerate(ports):
            for p in g:
                if seen.setdefault(p, i) != i:
                    raise TestbedError(f"{p} is in two groups (hosts behind one NAT move together)")
        self._request({"op": "partition", "groups": ports})

    def heal(self) -> None:
        self._request({"op": "heal"})

    def stats(self) -> dict[str, Any]:
        """Per port (``rx_``/``tx_frames``/``bytes``) and per directed pair ``"a>b"``: frames
        and bytes sent, delivered, dropped by loss, partition and full queue."""
        return self._request({"op": "stats"})

    @property
    def switch_pid(self) -> int | None:
        return None if self._switch is None else self._switch.pid


def list_netns() -> list[str]:
    r = _run(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in r.stdout.splitlines() if line.strip()]


def _owner_alive(owner: Path) -> bool:
    try:
        pid = int(owner.read_text().strip())
    except (OSError, ValueError):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_netns_pids(ns: str) -> None:
    """SIGKILL what still runs in one of our namespaces (only the testbed starts things there)."""
    r = _run(["ip", "netns", "pids", ns], check=False)
    for tok in r.stdout.split():
        with contextlib.suppress(ValueError, ProcessLookupError, PermissionError):
            os.kill(int(tok), signal.SIGKILL)
