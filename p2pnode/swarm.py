"""``p2pnode swarm``: N daemons on 127.0.0.1, each its own process, for trying things locally.

Each node gets ``DIR/node-i`` (initialised on first use with a fixed free port, so a restarted
swarm keeps its addresses) and bootstraps from node-1, whose address is known before anything
starts because its key is on disk. The launcher waits until every IPC socket answers, prints
a table, and on Ctrl-C or SIGTERM stops the daemons it started (SIGTERM, then SIGKILL after
a grace period), by their pids and no others. Before it writes anything it checks that no
daemon holds any of the node dirs (:mod:`p2pnode.datadir`): a swarm already running there is an
error, not a second swarm. Daemons run as ``python -P -m p2pnode``: the launcher's own working
directory may hold a ``p2pnode/`` checkout, which plain ``-m`` would import instead of the
package. Their dirs, configs and logs are private (0700/0600) whatever the umask.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from p2pnode.config import ConfigError, load_config, render_config_template
from p2pnode.datadir import DataDirInUse, check_not_in_use, open_private_log, write_private
from p2pnode.identity import create_identity, load_identity_file, peer_id_of
from p2pnode.ipc.client import Client
from p2pnode.ipc.errors import IpcError

# -P: no working directory on the daemon's sys.path, so a ``p2pnode/`` there (a checkout of
# the repository, say) cannot shadow the installed package, as it would with ``-m`` alone.
DAEMON_COMMAND = (sys.executable, "-P", "-m", "p2pnode")
READY_TIMEOUT = 60.0
STOP_GRACE = 8.0
MAX_NODES = 64


class SwarmError(Exception):
    pass


@dataclass
class SwarmNode:
    name: str
    data_dir: Path
    peer_id: str
    listen: str
    process: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> Path:
        return self.data_dir / "p2pnode.sock"

    @property
    def addr(self) -> str:
        return f"{self.listen}/p2p/{self.peer_id}"


def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on 127.0.0.1 (held open together so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def prepare(
    parent: Path,
    n: int,
    settings: dict[str, object] | None = None,
    *,
    listen: Callable[[int, int], str] | None = None,
) -> list[SwarmNode]:
    """Create (or reuse) DIR/node-1..N; returns their identities and listen addresses.

    ``settings`` (dotted config keys) are written into each new node's config.toml.
    ``listen(i, port)`` gives node i's (1-based) listen multiaddr, ``port`` a free port on
    127.0.0.1; without it a node listens on ``/ip4/127.0.0.1/tcp/PORT``. Either way the address
    must name a fixed port, so that the bootstrap address is known before anything starts.
    """
    if not 1 <= n <= MAX_NODES:
        raise SwarmError(f"--nodes must be between 1 and {MAX_NODES}")
    check_free(parent, n)
    parent.mkdir(parents=True, exist_ok=True)
    ports = iter(free_ports(n))
    nodes = []
    for i in range(1, n + 1):
        d = parent / f"node-{i}"
        d.mkdir(exist_ok=True)
        os.chmod(d, 0o700)
        port = next(ports)
        addr = f"/ip4/127.0.0.1/tcp/{port}" if listen is None else listen(i, port)
        if not (d / "identity.key").exists():
            create_identity(d / "identity.key")
        if not (d / "config.toml").exists():
            write_private(
                d / "config.toml",
                render_config_template({**(settings or {}), "listen": [addr]}),
            )
        cfg = load_config(d, env={})
        got = cfg.listen[0]
        if "/tcp/0" in got or (listen is None and not got.startswith("/ip4/127.0.0.1/")):
            raise SwarmError(f"{d}/config.toml must listen on a fixed 127.0.0.1 port")
        if "/tcp/0" in got or "/0.0.0.0/" in got:
            raise SwarmError(f"{d}/config.toml must listen on a fixed address and port")
        peer_id = peer_id_of(load_identity_file(d / "identity.key")).to_base58()
        nodes.append(SwarmNode(f"node-{i}", d, peer_id, got))
    return nodes


def check_free(parent: Path, n: int) -> None:
    """Raise :class:`SwarmError` if a daemon is running in any of ``parent``/node-1..n."""
    for i in range(1, n + 1):
        try:
            check_not_in_use(parent / f"node-{i}")
        except DataDirInUse as exc:
            raise SwarmError(str(exc)) from None


def start(
    nodes: list[SwarmNode],
    *,
    metrics_base_port: int | None = None,
    bootstrap: SwarmNode | None = None,
    extra_args: list[str] | None = None,
    command_prefix: Callable[[SwarmNode], list[str]] | None = None,
) -> None:
    """Spawn a daemon per node; each dials ``bootstrap`` (default: the first node).

    ``command_prefix(node)`` is put before each daemon's command (the testbed's
    ``ip netns exec NS``); it must exec the command, so that the process is the daemon."""
    boot = bootstrap or nodes[0]
    env = {k: v for k, v in os.environ.items() if not k.startswith("P2PNODE_")}
    for i, node in enumerate(nodes, start=1):
        cmd = [*DAEMON_COMMAND, "--data-dir", str(node.data_dir), "daemon"]
        if node is not boot:
            cmd += ["--bootstrap", boot.addr]
        if metrics_base_port is not None:
            cmd += ["--metrics-port", str(metrics_base_port + i)]
        cmd += extra_args or []
        if command_prefix is not None:
            cmd = [*command_prefix(node), *cmd]
        log = open_private_log(node.data_dir / "daemon.log")  # handed to the child
        try:
            node.process = subprocess.Popen(
                cmd, stdout=log, stderr=log, env=env, start_new_session=True
            )
        finally:
            os.close(log)


def wait_ready(nodes: list[SwarmNode], timeout: float = READY_TIMEOUT) -> float:
    """Block until every node's IPC answers ``status``; returns the seconds it took."""
    t0 = time.monotonic()
    pending = list(nodes)
    while pending:
        for node in list(pending):
            assert node.process is not None
            if node.process.poll() is not None:
                tail = (node.data_dir / "daemon.log").read_text(errors="replace")[-600:]
                raise SwarmError(f"{node.name} exited with code {node.process.returncode}:\n{tail}")
            try:
                with Client(socket_path=node.socket, timeout=2) as c:
                    c.status()
                pending.remove(node)
            except IpcError:
                pass
        if time.monotonic() - t0 > timeout:
            names = ", ".join(n.name for n in pending)
            raise SwarmError(f"not ready after {timeout:g} s: {names}")
        if pending:
            time.sleep(0.02)
    return time.monotonic() - t0


def stop(nodes: list[SwarmNode], grace: float = STOP_GRACE) -> None:
    live = [n.process for n in nodes if n.process is not None and n.process.poll() is None]
    for p in live:
        p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for p in live:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def run_swarm(
    *, nodes: int, parent: Path, metrics_base_port: int | None = None, validators: int = 0
) -> int:
    try:
        check_free(parent.expanduser().absolute(), nodes)  # before the genesis keys are written
        settings: dict[str, object] = {}
        if validators:
            # node-1..K are the genesis committee: their keys exist before any config names them.
            from p2pnode.consensus.genesis import genesis_validators

            if not 1 <= validators <= nodes:
                raise SwarmError("--validators must be between 1 and --nodes")
            parent = parent.expanduser().absolute()
            settings["consensus.validators"] = genesis_validators(parent, validators)
        swarm = prepare(parent.expanduser().absolute(), nodes, settings)
    except (ConfigError, OSError) as exc:
        raise SwarmError(str(exc)) from None
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        start(swarm, metrics_base_port=metrics_base_port)
        took = wait_ready(swarm)
        width = max(len(n.peer_id) for n in swarm)
        print(f"{'NAME':<8} {'PEER ID':<{width}} SOCKET")
        for n in swarm:
            print(f"{n.name:<8} {n.peer_id:<{width}} {n.socket}")
        print(f"{len(swarm)} daemons ready in {took:.2f} s; Ctrl-C stops them.", flush=True)
        while not stopping:
            for n in swarm:
                if n.process is not None and n.process.poll() is not None:
                    print(f"{n.name} exited with code {n.process.returncode}", file=sys.stderr)
                    n.process = None
            time.sleep(0.2)
        print("stopping...", flush=True)
        return 0
    finally:
        stop(swarm)
        for s, handler in old.items():
            signal.signal(s, handler)
