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
