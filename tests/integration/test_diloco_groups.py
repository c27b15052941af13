"""DiLoCo on real daemons when a member dies: three workers (one per daemon) train with
``p2pnode.torch.DiLoCo``; after three outer steps node-3's daemon is SIGKILLed. The two
survivors' next outer step fails, they refresh, find the group re-formed with the two of them,
sync and carry on: they finish every outer step with the identical model."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from p2pnode.torch import DiLoCo  # noqa: E402
from tests.integration.harness import LocalSwarm  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

H = 4
OUTER = 8
KILL_AFTER = 3  # outer steps before node-3 dies


def _model() -> Any:
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return net


def _data(i: int) -> tuple[Any, Any]:
    gen = torch.Generator().manual_seed(100 + i)
    x = torch.randn(64, 8, generator=gen)
    return x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long()


def test_survivors_of_a_killed_member_finish_with_the_same_model(tmp_path: Path) -> None:
    swarm = LocalSwarm(
        tmp_path, 3, {"collectives.stall_timeout": 3.0, "collectives.reform_wait": 1.0}
    )
    third_done = threading.Event()
    out: dict[int, Any] = {}

    def work(i: int) -> None:
        try:
            with swarm.client(i, timeout=120) as c:
                group = c.join_group("diloco-kill", size=3, timeout=60)
                model = _model()
                x, y = _data(i)
                inner = torch.optim.AdamW(model.parameters(), lr=0.01)
                opt = DiLoCo(model, inner, group, inner_steps=H, codec="int8")
                steps = H * (KILL_AFTER if i == 3 else OUTER)
                for _ in range(steps):
                    loss = torch.nn.functional.cross_entropy(model(x), y)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                if i == 3:
                    third_done.set()
                out[i] = {
                    "outer": opt.outer_params,
                    "steps": opt.outer_steps,
                    "recoveries": opt.recoveries,
                    "world": group.world_size,
                    "sync": opt.last_sync,
                }
        except Exception as exc:  # collected: asserted on below
            out[i] = exc
            third_done.set()

    try:
        swarm.start()
        swarm.wait_connected(2)
        threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in (1, 2, 3)]
        for t in threads:
            t.start()
        assert third_done.wait(120)
        swarm.kill(3)
        for t in threads:
            t.join(timeout=150)
        assert not any(t.is_alive() for t in threads), "a worker hung"
    finally:
        swarm.stop()
    for i in (1, 2, 3):
        assert not isinstance(out[i], Exception), (i, out[i])
    assert out[3]["steps"] == KILL_AFTER
    a, b = out[1], out[2]
    assert a["outer"].tobytes() == b["outer"].tobytes()
    assert np.all(np.isfinite(a["outer"]))
    for r in (a, b):
        assert r["steps"] == OUTER
        assert r["world"] == 2
        assert r["recoveries"] >= 1
        # The survivors held the same state when the group re-formed: nothing to broadcast.
        assert r["sync"].contributors == 2 and not r["sync"].broadcast


def test_a_late_member_gets_the_model_from_the_group(tmp_path: Path) -> None:
    """Two workers form a group (min_size 2, no fixed size) and train two outer steps; a
    third, with other initial weights, joins. The leader admits it with a new generation; at
    the next outer step everyone syncs from a member with the most outer steps, the newcomer's
    stale update is left out, and all three end with the identical model."""
    swarm = LocalSwarm(tmp_path, 3, {"collectives.reform_wait": 1.0})
    paused = threading.Barrier(3, timeout=120)  # the first two, and the main thread
    joined = threading.Event()
    out: dict[int, Any] = {}
    first = 2

    def work(i: int) -> None:
        try:
            with swarm.client(i, timeout=120) as c:
                group = c.join_group("diloco-late", min_size=2, wait=1.0, timeout=60)
                model = _model()
                if i == 3:  # other initial weights: what the group holds must replace them
                    with torch.no_grad():
                        for p in model.parameters():
                            p.add_(1.0)
                    joined.set()
                x, y = _data(i)
                inner = torch.optim.AdamW(model.parameters(), lr=0.01)
                opt = DiLoCo(model, inner, group, inner_steps=H, codec="int8")

                def train(outer_steps: int) -> None:
                    for _ in range(H * outer_steps):
                        loss = torch.nn.functional.cross_entropy(model(x), y)
                        opt.zero_grad()
                        loss.backward()
                        opt.step()

                if i != 3:
                    train(first)
                    paused.wait()  # the third joins now
                    assert joined.wait(90)
                train(OUTER - first)
                out[i] = {
                    "outer": opt.outer_params,
                    "steps": opt.outer_steps,
                    "recoveries": opt.recoveries,
                    "world": group.world_size,
                    "sync": opt.last_sync,
                }
        except Exception as exc:  # collected: asserted on below
            out[i] = exc
            joined.set()

    try:
        swarm.start()
        swarm.wait_connected(2)
        threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in (1, 2)]
        for t in threads:
            t.start()
        paused.wait()
        late = threading.Thread(target=work, args=(3,), daemon=True)
        late.start()
        threads.append(late)
        for t in threads:
            t.join(timeout=150)
        assert not any(t.is_alive() for t in threads), "a worker hung"
    finally:
        swarm.stop()
    for i in (1, 2, 3):
        assert not isinstance(out[i], Exception), (i, out[i])
    assert out[1]["outer"].tobytes() == out[2]["outer"].tobytes() == out[3]["outer"].tobytes()
    assert [out[i]["steps"] for i in (1, 2, 3)] == [OUTER] * 3
    assert [out[i]["world"] for i in (1, 2, 3)] == [3] * 3
    assert out[1]["recoveries"] >= 1 and out[2]["recoveries"] >= 1
    for i in (1, 2, 3):
        sync = out[i]["sync"]
        assert sync.broadcast and sync.contributors == 2
        assert sync.root != 2  # ranks 0 and 1 are the first two; the newcomer is not the root
