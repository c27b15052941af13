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
# A long job, cancelled once both trainers have been counted in 3 rounds: torch's import and
# first backward pass can outlast a whole short job on a busy machine.
ROUNDS = 200
ENOUGH = 3
SPEC = f"""
name = "torch-external"
rounds = {ROUNDS}
[participants]
max = 4
[sync]
deadline = 60  # a busy machine's torch may be slow; every round waits for all four
[verify]
spot_check = 0  # external trainers do not compute what the built-in trainer would
"""
SUBMITTED = re.compile(r"^round (\d+) shard (\d+):")


def fit(params: dict[str, Any], x: np.ndarray, y: np.ndarray, rnd: int, hidden: list[int]) -> Any:
    model = make_model("mlp", in_features=x.shape[1], hidden=tuple(hidden), num_classes=10)
    rng = np.random.default_rng(rnd)
    new, _ = local_sgd(model, params, Dataset(x, y), epochs=2, batch_size=32, lr=0.05, rng=rng)
    return new


async def numpy_trainer(socket: Path, job: str, trained: set[int] | None = None) -> set[int]:
    """A node's tasks trained with the daemon's own numpy code, on the trio client; the rounds
    (also added to ``trained`` as they go)."""
    trained = set() if trained is None else trained
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
            # The iterators end by themselves once the job no longer runs.
            trained_np = trio.run(
                lambda: _bounded(
                    180,
                    _train_then_cancel(swarm.node(3).socket, swarm.node(1).socket, job, log),
                )
            )
            with swarm.client(1) as c:
                st = c.job_status(job)
            rc = proc.wait(timeout=30)  # it sees the job end within one --wait
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        output = log.read_text()
        assert rc == 0, output
        assert "job no longer running" in output, output
        assert st["status"] == "cancelled" and st["rounds_done"] >= ENOUGH, st
        trained = {int(m.group(1)) for line in output.splitlines() if (m := SUBMITTED.match(line))}
        assert len(trained) >= ENOUGH, f"the torch trainer trained only rounds {trained}:\n{output}"
        history = {h["round"]: h for h in st["history"]}
        for rnd in sorted(trained):
            if rnd in history:
                assert trainer_peer in history[rnd]["contributors"], (rnd, history[rnd], output)
        assert st["nodes"][trainer_peer]["contributed"] >= len(trained)
        assert len(trained_np) >= ENOUGH, trained_np
        for rnd in sorted(trained_np):
            if rnd in history:  # its last update may have come after the cancel
                assert numpy_peer in history[rnd]["contributors"], (rnd, history[rnd])
        assert st["accuracy"] > 0.7, st["accuracy"]
        with swarm.client(2) as c:
            model = c.get_model(job)
        assert model["layers.0.weight"].shape == (64, 128)


async def _train_then_cancel(
    trainer_socket: Path, watch_socket: Path, job: str, torch_log: Path
) -> set[int]:
    """Run the numpy trainer; once it and the torch trainer (its log) each submitted ENOUGH
    rounds, cancel the job (which ends both trainers)."""
    trained: set[int] = set()

    def torch_rounds() -> int:
        text = torch_log.read_text() if torch_log.exists() else ""
        return sum(1 for line in text.splitlines() if SUBMITTED.match(line))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(numpy_trainer, trainer_socket, job, trained)
        async with AsyncClient.open(socket_path=watch_socket, timeout=60) as c:
            while len(trained) < ENOUGH + 1 or torch_rounds() < ENOUGH + 1:
                if (await c.job_status(job))["status"] != "running":
                    return trained
                await trio.sleep(0.5)
            await c.cancel_job(job, reason="enough rounds for the test")
    return trained


async def _bounded(seconds: float, work: Any) -> Any:
    with trio.fail_after(seconds):
        return await work
