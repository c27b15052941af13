"""Real daemons for integration tests: separate processes, real hosts on 127.0.0.1, real SQLite.

Built on :mod:`p2pnode.swarm` so the tests exercise the same start-up path as
``p2pnode swarm``. Every process started here is stopped by its pid when the block exits.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from p2pnode import Client
from p2pnode.swarm import SwarmNode, prepare, start, stop, wait_ready


class LocalSwarm:
    def __init__(self, parent: Path, n: int, settings: dict[str, object] | None = None) -> None:
        self.nodes = prepare(parent, n, settings)

    def client(self, i: int, timeout: float = 30) -> Client:
        """Client of node i (1-based, as in the node names)."""
        return Client(socket_path=self.nodes[i - 1].socket, timeout=timeout)

    def node(self, i: int) -> SwarmNode:
        return self.nodes[i - 1]

    def start(self, which: list[int] | None = None, **kwargs: object) -> float:
        chosen = [self.nodes[i - 1] for i in which] if which else self.nodes
        start(chosen, **kwargs)  # type: ignore[arg-type]
        return wait_ready(chosen, timeout=60)

    def kill(self, i: int, sig: int = signal.SIGKILL) -> None:
        node = self.nodes[i - 1]
        assert node.process is not None
        os.kill(node.process.pid, sig)
        node.process.wait(timeout=15)
        node.process = None

    def wait_connected(self, min_peers: int, timeout: float = 40) -> None:
        deadline = time.monotonic() + timeout
        for i in range(1, len(self.nodes) + 1):
            if self.nodes[i - 1].process is None:
                continue
            while True:
                with self.client(i) as c:
                    status = c.status()
                    if status["bootstrapped"] and status["routing_table_size"] >= min_peers:
                        break
                assert time.monotonic() < deadline, f"node-{i} has too few peers"
                time.sleep(0.05)

    def stop(self) -> None:
        stop(self.nodes)


@contextmanager
def local_swarm(
    parent: Path, n: int, settings: dict[str, object] | None = None, *, connected: bool = True
) -> Iterator[LocalSwarm]:
    swarm = LocalSwarm(parent, n, settings)
    try:
        swarm.start()
        if connected and n > 1:
            swarm.wait_connected(n - 1)
        yield swarm
    finally:
        swarm.stop()


def clean_accuracy(spec: str, shards: int, rounds: int, updates: list[int] | None = None) -> float:
    """The job of ``spec`` without faults, in process (each shard trained once per round, by
    the same learning code the daemons run): what a swarm's accuracy is held against.

    ``updates`` (one count per round, from a job's history) trains only that many shards in
    each round, as the swarm did when a slow trainer missed a deadline: a fault-free run with
    the same participation, so that load on the machine is not mistaken for an attack."""
    import tomllib

    from p2pnode.jobs.spec import parse_spec
    from p2pnode.rounds.compute import JobCompute
    from p2pnode_protocols.rounds import UpdateRef

    c = JobCompute.build("clean", parse_spec(tomllib.loads(spec)))
    model = c.initial_tensors()
    for r in range(1, rounds + 1):
        ups = []
        for shard in range(shards if updates is None else min(shards, updates[r - 1])):
            out = c.train_task(model, r, shard, seed=[shard])
            ref = UpdateRef(
                node=bytes([shard + 1]),
                round=r,
                key=f"k{shard}",
                size=1,
                samples=out.samples,
                sig=b"-",
            )
            ups.append((ref, out.update))
        model, res = c.aggregate(model, "b", r, ups)
    return float(res.accuracy)


def mount_tmpfs(data_dir: Path, size: str) -> None:
    """Put a node's prepared data dir on a tmpfs of ``size`` (its files copied over); skips
    the test where that cannot be done (not root, no mount). Unmount with ``umount -l``."""
    import pytest

    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    saved = data_dir.parent / f".{data_dir.name}.saved"
    shutil.copytree(data_dir, saved)
    cmd = ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(data_dir)]
    try:
        subprocess.run(cmd, check=True, capture_output=True)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"cannot mount a tmpfs: {exc.stderr.decode().strip()}")
    shutil.copytree(saved, data_dir, dirs_exist_ok=True)
    shutil.rmtree(saved)
