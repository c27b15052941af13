"""The swarms a chaos run can hurt: daemons in testbed namespaces, or on loopback.

Both give the runner one surface: an IPC client per node, and the faults (kill and restart,
stop and continue, partition and heal, link settings). The testbed cluster can do them all; the
loopback one only the process faults (there is no network between its daemons to cut or slow),
and says so with :class:`Unsupported` rather than pretending.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any, Protocol

from p2pnode.consensus.genesis import genesis_validators
from p2pnode.ipc.client import Client
from p2pnode.swarm import SwarmNode, prepare, start, stop, wait_ready

from .schedule import Links


class Unsupported(Exception):
    """The cluster cannot apply this kind of fault."""


class Cluster(Protocol):
    size: int

    def client(self, i: int, timeout: float = 10.0) -> Client: ...
    def peer_id(self, i: int) -> str: ...
    def kill(self, i: int) -> None: ...
    def restart(self, i: int) -> None: ...
    def stop(self, i: int) -> None: ...
    def cont(self, i: int) -> None: ...
    def partition(self, groups: tuple[tuple[int, ...], ...]) -> None: ...
    def heal(self) -> None: ...
    def set_links(self, links: Links) -> None: ...
    def close(self) -> None: ...


def node_settings(parent: Path, committee: int, extra: dict[str, Any] | None) -> dict[str, Any]:
    """Config shared by every node of a chaos swarm: the genesis committee, a timeout that
    lets a round give up on a dead trainer quickly, and every model kept (by default a node
    keeps a job's last few; the checkers fetch every round's)."""
    return {
        "consensus.validators": genesis_validators(parent, committee),
        "training.result_timeout": 3.0,
        "blobs.keep_models": 100_000,
        **(extra or {}),
    }


class LoopbackCluster:
    """Daemons on 127.0.0.1 (``p2pnode.swarm``): process faults only."""

    def __init__(
        self, parent: Path, size: int, committee: int, settings: dict[str, Any] | None = None
    ) -> None:
        self.size = size
        self.nodes: list[SwarmNode] = prepare(
            parent, size, node_settings(parent, committee, settings)
        )
        self.down: set[int] = set()

    def start(self) -> None:
        start(self.nodes)
        wait_ready(self.nodes, timeout=90)

    def client(self, i: int, timeout: float = 10.0) -> Client:
        return Client(socket_path=self.nodes[i - 1].socket, timeout=timeout)

    def peer_id(self, i: int) -> str:
        return self.nodes[i - 1].peer_id

    def _pid(self, i: int) -> int:
        proc = self.nodes[i - 1].process
        assert proc is not None, f"node-{i} is not running"
        return proc.pid

    def kill(self, i: int) -> None:
        proc = self.nodes[i - 1].process
        assert proc is not None
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=15)
        self.nodes[i - 1].process = None
        self.down.add(i)

    def restart(self, i: int) -> None:
        boot = next(n for j, n in enumerate(self.nodes, 1) if j != i and j not in self.down)
        start([self.nodes[i - 1]], bootstrap=boot)
        self.down.discard(i)
        wait_ready([self.nodes[i - 1]], timeout=90)

    def stop(self, i: int) -> None:
        os.kill(self._pid(i), signal.SIGSTOP)
        self.down.add(i)

    def cont(self, i: int) -> None:
        os.kill(self._pid(i), signal.SIGCONT)
        self.down.discard(i)

    def partition(self, groups: tuple[tuple[int, ...], ...]) -> None:
        raise Unsupported("a loopback swarm has no network to partition (use the testbed)")

    def heal(self) -> None:
        raise Unsupported("a loopback swarm has no network to partition (use the testbed)")

    def set_links(self, links: Links) -> None:
        raise Unsupported("a loopback swarm has no links to change (use the testbed)")

    def close(self) -> None:
        for i in list(self.down):
            proc = self.nodes[i - 1].process
            if proc is not None:  # stopped, not killed: let it take SIGTERM
                os.kill(proc.pid, signal.SIGCONT)
        stop(self.nodes)


class TestbedCluster:
    """Daemons in the namespaces of the testbed's ``chaos8`` topology (or any testbed)."""

    __test__ = False  # not a pytest class, whatever its name

    def __init__(
        self,
        parent: Path,
        committee: int,
        settings: dict[str, Any] | None = None,
        *,
        seed: int = 0,
        base: Links | None = None,
        testbed: Any = None,
    ) -> None:
        from p2pnode_simulations.testbed import LinkSpec, topologies
        from p2pnode_simulations.testbed.swarm import TestbedSwarm

        self._spec = LinkSpec
        self.tb = testbed if testbed is not None else topologies.chaos8(seed=seed)
        self.base = base
        self.hosts = list(self.tb.hosts)
        self.size = len(self.hosts)
        self.down: set[int] = set()
        self.tb.up()
        try:
            if base is not None:
                self.set_links(base)
            self.swarm = TestbedSwarm(
                self.tb, parent, self.hosts, node_settings(parent, committee, settings)
            )
        except BaseException:
            self.tb.down()
            raise

    def start(self) -> None:
        self.swarm.start()

    def client(self, i: int, timeout: float = 10.0) -> Client:
        return self.swarm.client(i, timeout=timeout)  # type: ignore[no-any-return]

    def peer_id(self, i: int) -> str:
        return str(self.swarm.node(i).peer_id)

    def kill(self, i: int) -> None:
        self.swarm.kill(i)
        self.down.add(i)

    def restart(self, i: int) -> None:
        # through a node that is up: node 1, the first start's bootstrap, may be down itself
        boot = next(j for j in range(1, self.size + 1) if j != i and j not in self.down)
        self.swarm.start([i], bootstrap=boot)
        self.down.discard(i)

    def stop(self, i: int) -> None:
        self.swarm.signal(i, signal.SIGSTOP)
        self.down.add(i)

    def cont(self, i: int) -> None:
        self.swarm.signal(i, signal.SIGCONT)
        self.down.discard(i)

    def partition(self, groups: tuple[tuple[int, ...], ...]) -> None:
        self.tb.partition(*({self.hosts[i - 1] for i in g} for g in groups))

    def heal(self) -> None:
        self.tb.heal()

    def set_links(self, links: Links) -> None:
        self.tb.set_default(self._spec(delay=links.delay, jitter=links.jitter, loss=links.loss))

    def close(self) -> None:
        try:
            for i in sorted(self.down):
                if self.swarm.pid(i) is not None:  # stopped: it must run to take SIGTERM
                    self.swarm.signal(i, signal.SIGCONT)
            self.swarm.stop()
        finally:
            self.tb.down()


__all__ = ["Cluster", "LoopbackCluster", "TestbedCluster", "Unsupported", "node_settings"]
