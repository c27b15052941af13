"""Train a node's tasks of a job with PyTorch instead of the daemon's built-in numpy trainer.

Usage: ``python examples/torch_trainer.py --socket PATH --job JOB`` (or ``--data-dir DIR``).

While this script runs, the daemon gives it the node's tasks of the job (its connection is the
node's trainer for the job); it stops when the job does, and the daemon takes the tasks back
if it exits. Each task: the round's model as numpy arrays, this node's shard of the job's data,
a few epochs of SGD in torch with the job's local settings, and the new parameters back. The
network mirrors the daemon's models from the parameter names alone: ``layers.<i>.weight``
``(fan_in, fan_out)`` and ``layers.<i>.bias`` (the MLP, ReLU between layers), or ``weight`` and
``bias`` (softmax regression). Needs the ``torch`` extra: ``pip install 'p2pnode[torch]'``.

The job must turn spot-checks off (``[verify] spot_check = 0``): validators re-run a checked
task with the built-in trainer, and a torch update is not bit-identical to it (see docs/jobs.md).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from p2pnode import Client


def layer_names(params: Mapping[str, np.ndarray]) -> list[tuple[str, str]]:
    """(weight, bias) names in forward order."""
    if set(params) == {"weight", "bias"}:
        return [("weight", "bias")]
    n = len(params) // 2
    names = [(f"layers.{i}.weight", f"layers.{i}.bias") for i in range(n)]
    if {x for pair in names for x in pair} != set(params):
        raise SystemExit(f"not a model this example knows: {sorted(params)}")
    return names


def forward(layers: list[tuple[torch.Tensor, torch.Tensor]], x: torch.Tensor) -> torch.Tensor:
    h = x
    for i, (w, b) in enumerate(layers):
        h = h @ w + b  # weights are (fan_in, fan_out), as the daemon stores them
        if i < len(layers) - 1:
            h = torch.relu(h)
    return h


def local_lr(learning: Mapping[str, Any], rnd: int, rounds: int) -> float:
    """The job's local learning rate for this round (constant, or cosine over the rounds)."""
    lr = float(learning["local_lr"])
    if learning.get("local_schedule") == "cosine" and rounds > 1:
        return lr * 0.5 * (1.0 + math.cos(math.pi * (rnd - 1) / rounds))
    return lr


def train(
    params: Mapping[str, np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    learning: Mapping[str, Any],
    lr: float,
    seed: int,
) -> tuple[dict[str, np.ndarray], float]:
    """A few epochs of minibatch SGD with momentum on (x, y); the new params and last loss."""
    names = layer_names(params)
    tensors = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    layers = [(tensors[w], tensors[b]) for w, b in names]
    opt = torch.optim.SGD(tensors.values(), lr=lr, momentum=float(learning["local_momentum"]))
    xs, ys = torch.from_numpy(x), torch.from_numpy(y)
    batch = int(learning["batch_size"])
    gen = torch.Generator().manual_seed(seed)
    loss_value = float("nan")
    for _ in range(int(learning["epochs"])):
        order = torch.randperm(len(xs), generator=gen)
        losses = []
        for start in range(0, len(xs), batch):
            idx = order[start : start + batch]
            loss = torch.nn.functional.cross_entropy(forward(layers, xs[idx]), ys[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        loss_value = float(np.mean(losses))
    return {k: t.detach().numpy() for k, t in tensors.items()}, loss_value


def warm_up() -> None:
    """One tiny step before taking tasks: torch's first backward and optimizer step load
    much of it lazily (seconds on a busy machine), time a round's first task cannot spare."""
    x = np.zeros((2, 4), np.float32)
    params = {
        "layers.0.weight": np.zeros((4, 3), np.float32),
        "layers.0.bias": np.zeros(3, np.float32),
    }
    learning = {"local_momentum": 0.9, "batch_size": 2, "epochs": 1}
    train(params, x, np.zeros(2, np.int64), learning, 0.1, seed=0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = ap.add_mutually_exclusive_group()
    where.add_argument("--socket", help="the daemon's IPC socket")
    where.add_argument("--data-dir", help="the daemon's data directory")
    ap.add_argument("--job", required=True, help="job id (or a unique prefix)")
    ap.add_argument("--wait", type=float, default=10.0, help="seconds per wait for a task")
    ap.add_argument("--idle", type=float, default=None, help="stop after this long idle")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)  # a trainer beside a daemon: leave it a core
    warm_up()
    with Client(socket_path=args.socket, data_dir=args.data_dir, timeout=60) as client:
        for task in client.tasks(args.job, timeout=args.wait, idle=args.idle):
            t0 = time.perf_counter()
            params = task.model()
            x, y = task.data()
            learning = task.spec["learning"]
            lr = local_lr(learning, task.round, task.rounds)
            new, loss = train(params, x, y, learning, lr, seed=task.round * 1000 + task.shard)
            sent = task.submit(new)
            if not sent.get("accepted", True):
                # Too late: the round closed (or the job ended) while we trained.
                print(f"round {task.round}: not taken ({sent.get('reason')})", flush=True)
                continue
            print(
                f"round {task.round} shard {task.shard}: {len(y)} samples, loss {loss:.4f},"
                f" update {sent['key']} ({time.perf_counter() - t0:.2f} s)",
                flush=True,
            )
    print("job no longer running", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
