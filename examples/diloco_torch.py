"""DiLoCo against plain data parallelism, on 4 local daemons: same model, data, steps.

Usage: ``python examples/diloco_torch.py [--steps 300] [--inner-steps 25] [--workers 4]
[--seed 0] [--json]``. Needs the ``torch`` extra.

It starts ``--workers`` daemons on 127.0.0.1 (``p2pnode.swarm``, in a temporary dir, always
stopped at the end) and a worker process per daemon; each joins one collective group through
its own daemon and trains a small MLP on its own shard of the shipped digits, twice:

(a) **DiLoCo**: ``--inner-steps`` (H) steps of AdamW on the local shard, then one all-reduce of
    the int8-coded pseudo-gradient and an outer Nesterov step (``p2pnode.torch.DiLoCo``);
(b) **data parallel**: the same AdamW, but the gradients are averaged (codec none) before every
    step, so the replicas never drift.

Both take ``--steps`` inner steps from the same initial weights with the same batches. The loss
of the (identical) model on the pooled training set is printed after every H steps, side by
side, then the bytes each member sent and the final test accuracy. ``--json`` prints one JSON
object instead. The aim (issue 16): DiLoCo's final loss within 10% of data parallel's while
each member sends at least 50 times fewer bytes.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import queue
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: AdamW settings shared by both runs (tuned for the digits MLP, see docs/collectives.md, "DiLoCo").
INNER_LR = 1e-3
WEIGHT_DECAY = 0.1
BATCH = 32
HIDDEN = 64
#: DiLoCo's outer optimizer, as in the paper.
OUTER_LR = 0.7
OUTER_MOMENTUM = 0.9
TEST_FRACTION = 0.2
#: seconds a worker may wait for its group to form, and the whole run for its workers.
JOIN_WAIT = 30.0
RUN_WAIT = 300.0


@dataclass(frozen=True, slots=True)
class Settings:
    steps: int
    inner_steps: int
    workers: int
    seed: int


def build(s: Settings, rank: int, world: int) -> tuple[Any, Any, dict[str, Any]]:
    """The model (same initial weights everywhere), this rank's shard and the eval sets."""
    import torch

    from p2pnode.training.data import load_digits, train_test_split
    from p2pnode.training.sharding import iid_shards

    train, test = train_test_split(load_digits(), TEST_FRACTION, np.random.default_rng([s.seed, 0]))
    shard = iid_shards(len(train), world, np.random.default_rng([s.seed, 1]))[rank]
    model = torch.nn.Sequential(
        torch.nn.Linear(64, HIDDEN), torch.nn.ReLU(), torch.nn.Linear(HIDDEN, 10)
    )
    # The same initial weights on every member, drawn from a generator of our own rather than
    # torch's global one (which other code in the process may draw from): nn.Linear's scheme,
    # uniform in +-1/sqrt(fan_in).
    gen = torch.Generator().manual_seed(s.seed)
    with torch.no_grad():
        for layer in (model[0], model[2]):
            bound = 1.0 / layer.in_features**0.5
            for p in (layer.weight, layer.bias):
                p.copy_(torch.rand(p.shape, generator=gen) * (2 * bound) - bound)
    data = {
        "x": torch.from_numpy(train.x[shard]),
        "y": torch.from_numpy(train.y[shard]),
        "train_x": torch.from_numpy(train.x),
        "train_y": torch.from_numpy(train.y),
        "test_x": torch.from_numpy(test.x),
        "test_y": torch.from_numpy(test.y),
    }
    return (
        model,
        torch.optim.AdamW(model.parameters(), lr=INNER_LR, weight_decay=WEIGHT_DECAY),
        data,
    )


def evaluate(model: Any, x: Any, y: Any) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on (x, y)."""
    import torch

    with torch.no_grad():
        out = model(x)
        loss = torch.nn.functional.cross_entropy(out, y).item()
        acc = (out.argmax(dim=1) == y).float().mean().item()
    return float(loss), float(acc)


def train(group: Any, s: Settings, mode: str) -> dict[str, Any]:
    """One member's run of ``mode`` ("diloco" or "dp") over ``group``; its losses and bytes."""
    import torch

    from p2pnode.torch import DiLoCo, all_reduce_

    torch.set_num_threads(1)  # a process per member on a small machine: no thread contention
    model, inner, data = build(s, group.rank, group.world_size)
    gen = torch.Generator().manual_seed(s.seed * 1000 + group.rank)
    opt = (
        DiLoCo(
            model,
            inner,
            group,
            inner_steps=s.inner_steps,
            outer_lr=OUTER_LR,
            outer_momentum=OUTER_MOMENTUM,
            nesterov=True,
            codec="int8",
        )
        if mode == "diloco"
        else inner
    )
    params = list(model.parameters())
    before = int(group.stats.get("bytes_sent", 0))
    losses: list[float] = []
    x, y = data["x"], data["y"]
    for step in range(1, s.steps + 1):
        idx = torch.randint(0, len(y), (BATCH,), generator=gen)
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        if mode == "dp":
            all_reduce_(group, [p.grad for p in params], op="mean", codec="none")
        opt.step()
        if step % s.inner_steps == 0:
            losses.append(evaluate(model, data["train_x"], data["train_y"])[0])
    test_loss, test_acc = evaluate(model, data["test_x"], data["test_y"])
    return {
        "rank": group.rank,
        "losses": losses,
        "final_loss": losses[-1] if losses else float("nan"),
        "test_loss": test_loss,
        "accuracy": test_acc,
        "bytes_sent": int(group.stats.get("bytes_sent", 0)) - before,
        "digest": float(sum(float(p.detach().double().sum()) for p in params)),
    }


MODES = ("diloco", "dp")


def warm_up(s: Settings) -> None:
    """Import and run everything once before any clock starts, so the first mode's training
    time does not include torch's and our imports and first-call costs (seconds here)."""
    import torch

    import p2pnode.torch  # noqa: F401

    model, inner, data = build(s, 0, s.workers)
    torch.nn.functional.cross_entropy(model(data["x"][:BATCH]), data["y"][:BATCH]).backward()
    inner.step()
    evaluate(model, data["train_x"], data["train_y"])


def worker(socket: str, s: Settings, out: Any) -> None:
    """A worker process: its own client; for each mode a group, one run, its result on
    ``out``. One process for both runs, so torch is imported once per worker."""
    from p2pnode.ipc.client import Client

    try:
        warm_up(s)
        with Client(socket_path=socket, timeout=60) as client:
            for mode in MODES:
                t0 = time.monotonic()
                group = client.join_group(f"diloco-example-{mode}", size=s.workers)
                t_join = time.monotonic() - t0
                try:
                    r = train(group, s, mode)
                finally:
                    group.leave()
                r["mode"] = mode
                r["seconds"] = {"join": t_join, "train": time.monotonic() - t0 - t_join}
                out.put(r)
    except BaseException as e:
        out.put({"error": f"{type(e).__name__}: {e}"})
        raise


def run_workers(nodes: list[Any], s: Settings) -> dict[str, list[dict[str, Any]]]:
    """Every worker's result for each mode, in rank order."""
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=worker, args=(str(n.socket), s, out)) for n in nodes]
    for p in procs:
        p.start()
    results: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
    try:
        deadline = time.monotonic() + RUN_WAIT
        while sum(len(v) for v in results.values()) < len(MODES) * len(procs):
            if time.monotonic() > deadline:
                raise SystemExit(f"the workers did not finish in {RUN_WAIT:g} s")
            try:
                r = out.get(timeout=0.5)
            except queue.Empty:
                # A worker that died without a word (killed, crashed) ends the run at once.
                dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
                if dead and out.empty():
                    raise SystemExit(f"a worker died (exit code {dead[0]})") from None
                continue
            if "error" in r:
                raise SystemExit(f"a worker failed: {r['error']}")
            results[r["mode"]].append(r)
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
                p.join()
    return {m: sorted(v, key=lambda r: r["rank"]) for m, v in results.items()}


def summary(s: Settings, diloco: list[dict[str, Any]], dp: list[dict[str, Any]]) -> dict[str, Any]:
    """The JSON result: rank 0's curves (every member holds the same model) and the bytes."""
    a, b = diloco[0], dp[0]
    sent_a = [r["bytes_sent"] for r in diloco]
    sent_b = [r["bytes_sent"] for r in dp]
    ratio = (sum(sent_b) / sum(sent_a)) if sum(sent_a) else float("inf")
    return {
        "settings": asdict(s),
        "diloco": {
            "losses": a["losses"],
            "final_loss": a["final_loss"],
            "test_loss": a["test_loss"],
            "accuracy": a["accuracy"],
            "bytes_sent": sent_a,
            "identical": len({r["digest"] for r in diloco}) == 1,
            "worker_seconds": a.get("seconds"),
        },
        "data_parallel": {
            "losses": b["losses"],
            "final_loss": b["final_loss"],
            "test_loss": b["test_loss"],
            "accuracy": b["accuracy"],
            "bytes_sent": sent_b,
            "identical": len({r["digest"] for r in dp}) == 1,
            "worker_seconds": b.get("seconds"),
        },
        "bytes_ratio": ratio,
        "loss_ratio": a["final_loss"] / b["final_loss"],
    }


def print_report(r: dict[str, Any]) -> None:
    s, a, b = r["settings"], r["diloco"], r["data_parallel"]
    h = s["inner_steps"]
    print(f"{'outer':>5} {'inner':>6}  {'DiLoCo loss':>11}  {'data-parallel loss':>18}")
    for i, (la, lb) in enumerate(zip(a["losses"], b["losses"], strict=True), start=1):
        print(f"{i:>5} {i * h:>6}  {la:>11.4f}  {lb:>18.4f}")
    print()
    mib = 1024 * 1024
    print(
        f"DiLoCo (H={h}, AdamW, int8): final loss {a['final_loss']:.4f}, test loss "
        f"{a['test_loss']:.4f}, test accuracy {a['accuracy']:.3f}, "
        f"sent {np.mean(a['bytes_sent']) / mib:.3f} MiB per member"
    )
    print(
        f"data parallel (AdamW, none): final loss {b['final_loss']:.4f}, test loss "
        f"{b['test_loss']:.4f}, test accuracy {b['accuracy']:.3f}, "
        f"sent {np.mean(b['bytes_sent']) / mib:.3f} MiB per member"
    )
    print(
        f"DiLoCo's loss is {r['loss_ratio']:.3f}x data parallel's, "
        f"with {r['bytes_ratio']:.1f}x fewer bytes sent"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=300, help="inner steps of each run")
    ap.add_argument("--inner-steps", type=int, default=25, help="DiLoCo's H")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--dir", type=Path, help="where the daemons' dirs go (default: a temp dir)")
    a = ap.parse_args(argv)
    if not 1 <= a.inner_steps <= a.steps or a.steps % a.inner_steps:
        ap.error("--steps must be a positive multiple of --inner-steps")
    if not 2 <= a.workers <= 16:
        ap.error("--workers must be between 2 and 16")
    s = Settings(a.steps, a.inner_steps, a.workers, a.seed)

    from p2pnode import swarm

    made = a.dir is None
    parent = Path(tempfile.mkdtemp(prefix="p2pnode-diloco-")) if made else a.dir.absolute()
    nodes: list[Any] = []
    t0 = time.monotonic()
    try:
        nodes = swarm.prepare(parent, s.workers)
        swarm.start(nodes)
        swarm.wait_ready(nodes)
        t_ready = time.monotonic()
        runs = run_workers(nodes, s)
        t_done = time.monotonic()
    finally:
        swarm.stop(nodes)
        if made:
            shutil.rmtree(parent, ignore_errors=True)
    r = summary(s, runs["diloco"], runs["dp"])
    r["seconds"] = {
        "start": round(t_ready - t0, 2),
        "workers": round(t_done - t_ready, 2),
        "total": round(time.monotonic() - t0, 2),
    }
    if a.json:
        print(json.dumps(r))
    else:
        print_report(r)
        t = r["seconds"]
        print(
            f"{t['total']:.1f} s with {s.workers} daemons: {t['start']:.1f} s to start them, "
            f"{t['workers']:.1f} s of workers (training: "
            f"{r['diloco']['worker_seconds']['train']:.1f} s DiLoCo, "
            f"{r['data_parallel']['worker_seconds']['train']:.1f} s data parallel)"
        )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
