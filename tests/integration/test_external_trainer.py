"""An external trainer on real daemons: examples/torch_trainer.py takes one node's tasks.

Four daemons, all validators; a job over all four; node 4's tasks go to the PyTorch example
(a subprocess on node 4's socket) instead of the built-in numpy trainer, and node 3's to a numpy
trainer in this process on the trio client (``AsyncClient.tasks``). Checks: the job completes,
both trainers train rounds and then stop by themselves when the job does, every round one
submitted for lists its node among the committed contributors, and the model still learns.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio

from p2pnode import AsyncClient
from p2pnode.consensus.genesis import genesis_validators
from p2pnode.training.data import Dataset
from p2pnode.training.local import local_sgd
from p2pnode.training.models import make_model

from .harness import local_swarm

pytestmark = [
    pytest.mark.slow,  # four daemon processes and a torch process
    pytest.mark.skipif(
        importlib.util.find_spec("torch") is None,
        reason="needs PyTorch for examples/torch_trainer.py (pip install 'p2pnode[torch]')",
    ),
]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "torch_trainer.py"
ROUNDS = 20  # rounds take about a second: torch's import alone spans several
SPEC = f"""
name = "torch-external"
rounds = {ROUNDS}
[participants]
max = 4
[sync]
deadline = 60  # a busy machine's torch may be slow; every round waits for all four
"""
SUBMITTED = re.compile(r"^round (\d+) shard (\d+):")


def fit(params: dict[str, Any], x: np.ndarray, y: np.ndarray, rnd: int, hidden: list[int]) -> Any:
    model = make_model("mlp", in_features=x.shape[1], hidden=tuple(hidden), num_classes=10)
    rng = np.random.default_rng(rnd)
    new, _ = local_sgd(model, params, Dataset(x, y), epochs=2, batch_size=32, lr=0.05, rng=rng)
    return new


async def numpy_trainer(socket: Path, job: str) -> set[int]:
    """A node's tasks trained with the daemon's own numpy code, on the trio client; the rounds."""
    trained: set[int] = set()
    async with AsyncClient.open(socket_path=socket, timeout=60) as client:
        async for task in client.tasks(job, timeout=5):
            params = await task.model()
            x, y = task.data()
            hidden = list(task.spec["learning"]["hidden"])
            new = await trio.to_thread.run_sync(fit, params, x, y, task.round, hidden)
            await task.submit(new)
            trained.add(task.round)
    return trained


@pytest.mark.timeout(240)
def test_torch_trainer_takes_a_nodes_tasks(tmp_path: Path) -> None:
    settings = {"consensus.validators": genesis_validators(tmp_path, 4)}
    with local_swarm(tmp_path, 4, settings) as swarm:
        with swarm.client(4) as c:
            trainer_peer = c.status()["peer_id"]
        with swarm.client(3) as c:
            numpy_peer = c.status()["peer_id"]
        with swarm.client(1, timeout=60) as c:
            job = c.create_job(SPEC)
            assert any(row["job"] == job for row in c.jobs())
        log = tmp_path / "trainer.log"
        with open(log, "w") as out:
            socket = str(swarm.node(4).socket)
            proc = subprocess.Popen(
                [sys.executable, str(EXAMPLE), "--socket", socket, "--job", job, "--wait", "5"],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=os.environ.copy(),
            )
        try:
            # The iterator ends by itself once the job no longer runs.
            trained_np = trio.run(lambda: _bounded(150, numpy_trainer(swarm.node(3).socket, job)))
            deadline = time.monotonic() + 30
            with swarm.client(1) as c:
                while (st := c.job_status(job))["status"] == "running":
                    assert time.monotonic() < deadline, f"job stuck: {st['rounds_done']} rounds"
                    time.sleep(1)
            rc = proc.wait(timeout=30)  # it sees the job end within one --wait
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        output = log.read_text()
        assert rc == 0, output
        assert "job no longer running" in output, output
        assert st["status"] == "completed" and st["rounds_done"] == ROUNDS, st
        trained = {int(m.group(1)) for line in output.splitlines() if (m := SUBMITTED.match(line))}
        assert len(trained) >= 3, f"the torch trainer trained only rounds {trained}:\n{output}"
        history = {h["round"]: h for h in st["history"]}
        for rnd in sorted(trained):
            assert trainer_peer in history[rnd]["contributors"], (rnd, history[rnd], output)
        assert st["nodes"][trainer_peer]["contributed"] >= len(trained)
        assert len(trained_np) >= 3, trained_np
        for rnd in sorted(trained_np):
            assert numpy_peer in history[rnd]["contributors"], (rnd, history[rnd])
        assert st["accuracy"] > 0.7, st["accuracy"]
        with swarm.client(2) as c:
            model = c.get_model(job)
        assert model["layers.0.weight"].shape == (64, 128)


async def _bounded(seconds: float, work: Any) -> Any:
    with trio.fail_after(seconds):
        return await work
