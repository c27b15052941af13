"""Daemons on the testbed: one ``p2pnode daemon`` per host, each in its host's namespace.

:class:`TestbedSwarm` has the surface of the integration tests' ``LocalSwarm``
(``client(i)``, ``node(i)``, ``start``, ``kill``, ``wait_connected``, ``stop``; nodes are
1-based in the order of ``hosts``) plus ``restart``, ``pid`` and ``signal`` for chaos runs. It
reuses :mod:`p2pnode.swarm`: the same data dirs (``parent/node-i``), configs and start-up path
as ``p2pnode swarm``, with two differences: node i listens on ``/ip4/<its host's ip>/tcp/4001``
(every namespace has its own ports), and its command is prefixed with ``ip netns exec NS``,
which execs the daemon, so a pid here is the daemon's own. The IPC socket is a file in the
node's data dir, so clients in the machine's own namespace reach it like any other.
"""

from __future__ import annotations

import os
import signal as signals
import time
from pathlib import Path

from p2pnode.ipc.client import Client
from p2pnode.swarm import SwarmError, SwarmNode, prepare, start, stop, wait_ready

__all__ = ["PORT", "SwarmError", "TestbedSwarm"]
from p2pnode_simulations.testbed.testbed import Testbed, TestbedError

PORT = 4001
READY_TIMEOUT = 90.0  # start-up on a loaded 2-core machine, many daemons at once


class TestbedSwarm:
    """Daemons on ``hosts`` of a testbed that is up; node i runs on ``hosts[i - 1]``."""

    __test__ = False

    def __init__(
        self,
        testbed: Testbed,
        parent: Path,
        hosts: list[str],
        settings: dict[str, object] | None = None,
    ) -> None:
        for h in hosts:
            if h not in testbed.hosts:
                raise TestbedError(f"no host {h!r} on the testbed")
        if len(set(hosts)) != len(hosts):
            raise TestbedError("one daemon per host")
        self.testbed = testbed
        self.hosts = [testbed.hosts[h] for h in hosts]
        self.nodes = prepare(parent, len(hosts), settings, listen=lambda i, _port: self._listen(i))
        for i, (n, h) in enumerate(zip(self.nodes, self.hosts, strict=True), start=1):
            if n.listen != self._listen(i):  # a reused data dir from another topology
                raise SwarmError(f"{n.data_dir} listens on {n.listen}, not on {h.name}'s address")
        self._boot: SwarmNode | None = None
        self._no_bootstrap = False

    def _listen(self, i: int) -> str:
        return f"/ip4/{self.hosts[i - 1].ip}/tcp/{PORT}"

    def _prefix(self, node: SwarmNode) -> list[str]:
        return ["ip", "netns", "exec", self.hosts[self.nodes.index(node)].netns]

    def client(self, i: int, timeout: float = 30) -> Client:
        """Client of node i (1-based, as in the node names)."""
        return Client(socket_path=self.nodes[i - 1].socket, timeout=timeout)

    def node(self, i: int) -> SwarmNode:
        return self.nodes[i - 1]

    def host_of(self, i: int) -> str:
        return self.hosts[i - 1].name

    def start(
        self,
        which: list[int] | None = None,
        bootstrap: int | None = None,
        *,
        no_bootstrap: bool = False,
    ) -> float:
        """Start nodes ``which`` (default all), dialling node ``bootstrap`` (default 1), or
        nobody with ``no_bootstrap`` (discovery by mDNS); waits until each answers on its IPC
        socket and returns the seconds it took."""
        chosen = [self.nodes[i - 1] for i in which] if which else self.nodes
        self._no_bootstrap = no_bootstrap
        if no_bootstrap:
            for node in chosen:  # a node that is its own bootstrap is given no --bootstrap
                start([node], bootstrap=node, command_prefix=self._prefix)
        else:
            self._boot = self.nodes[(bootstrap or 1) - 1]
            start(chosen, bootstrap=self._boot, command_prefix=self._prefix)
        return wait_ready(chosen, timeout=READY_TIMEOUT)

    def restart(self, i: int) -> float:
        """Start node i again (after ``kill``), with the bootstrap of the last ``start``."""
        node = self.nodes[i - 1]
        if node.process is not None and node.process.poll() is None:
            raise SwarmError(f"{node.name} is running")
        boot = node if self._no_bootstrap else (self._boot or self.nodes[0])
        start([node], bootstrap=boot, command_prefix=self._prefix)
        return wait_ready([node], timeout=READY_TIMEOUT)

    def pid(self, i: int) -> int | None:
        """The daemon's pid (None if not running)."""
        p = self.nodes[i - 1].process
        return None if p is None or p.poll() is not None else p.pid

    def signal(self, i: int, sig: int) -> None:
        """Send ``sig`` (SIGSTOP, SIGCONT, ...) to node i's daemon."""
        pid = self.pid(i)
        if pid is None:
            raise SwarmError(f"{self.nodes[i - 1].name} is not running")
        os.kill(pid, sig)

    def kill(self, i: int, sig: int = signals.SIGKILL) -> None:
        node = self.nodes[i - 1]
        assert node.process is not None
        os.kill(node.process.pid, sig)
        if sig != signals.SIGKILL:
            os.kill(node.process.pid, signals.SIGCONT)  # a stopped daemon cannot handle SIGTERM
        node.process.wait(timeout=20)
        node.process = None

    def wait_connected(self, min_peers: int, timeout: float = 60) -> None:
        """Until every running node is bootstrapped with ``min_peers`` in its routing table."""
        deadline = time.monotonic() + timeout
        for i, node in enumerate(self.nodes, start=1):
            if node.process is None:
                continue
            while True:
                with self.client(i) as c:
                    status = c.status()
                    if status["bootstrapped"] and status["routing_table_size"] >= min_peers:
                        break
                if time.monotonic() >= deadline:
                    raise AssertionError(
                        f"{node.name} on {self.host_of(i)} has too few peers: "
                        f"{status['routing_table_size']} < {min_peers}"
                    )
                time.sleep(0.1)

    def stop(self) -> None:
        """Stop every daemon by its pid (SIGTERM, then SIGKILL after a grace period)."""
        for n in self.nodes:
            if n.process is not None and n.process.poll() is None:
                os.kill(n.process.pid, signals.SIGCONT)  # a SIGSTOPped daemon must see SIGTERM
        stop(self.nodes)
        for n in self.nodes:
            n.process = None
