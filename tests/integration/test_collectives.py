"""Collective groups on real daemons (issue 16): exact sums over 2, 3, 4 and 8 members for odd
sizes, every algorithm and codec; a member SIGKILLed mid-operation fails every survivor within
the bound and a retry without it succeeds; a member sending corrupt or short parts fails the
operation everywhere instead of giving a wrong sum."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio

from p2pnode import AsyncClient
from p2pnode.config.edit import set_config_value
from p2pnode.ipc.errors import CollectiveFailed, GroupChangedError
from tests.integration.harness import LocalSwarm, local_swarm

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SIZES = [1, 7, 1001, 16_385, 300_007]  # odd, not divisible by the group, each side of direct


def _each(nodes: list[int], work: Callable[[int], Any]) -> dict[int, Any]:
    """``work(i)`` on every node at once (one thread each); the results, or the exceptions."""
    out: dict[int, Any] = {}

    def run(i: int) -> None:
        try:
            out[i] = work(i)
        except Exception as exc:  # collected: the test asserts on it
            out[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in nodes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=240)
    assert len(out) == len(nodes), "a member hung"
    return out


def _inputs(i: int, size: int) -> np.ndarray:
    # integers: every sum is exact in float32, whatever the algorithm adds first
    return np.random.default_rng(1000 * i + size).integers(-999, 999, size).astype(np.float32)


def _exact(nodes: list[int], size: int) -> np.ndarray:
    return np.sum([_inputs(i, size) for i in nodes], axis=0, dtype=np.float64)


def test_groups_of_2_3_4_and_8_get_exactly_the_sum(tmp_path: Path) -> None:
    with local_swarm(tmp_path, 8) as swarm:
        for n in (2, 3, 4, 8):
            nodes = list(range(1, n + 1))

            def work(i: int, n: int = n) -> dict[str, Any]:
                with swarm.client(i, timeout=60) as c:
                    g = c.join_group(f"sum{n}", size=n, timeout=60)
                    got: dict[str, Any] = {"rank": g.rank, "world": g.world_size}
                    for size in SIZES:
                        x = _inputs(i, size)
                        got[f"auto{size}"] = g.all_reduce(x, op="sum")
                        for algorithm in ("ring", "butterfly", "direct"):
                            got[f"{algorithm}{size}"] = g.all_reduce(
                                x, op="sum", algorithm=algorithm
                            )
                    got["mean"] = g.all_reduce(_inputs(i, 1001).reshape(7, 143), op="mean")
                    got["gather"] = g.all_gather(f"node-{i}".encode())
                    got["bcast"] = g.broadcast(_inputs(i, 5000), root=n - 1)
                    g.barrier()
                    g.leave()
                    return got

            results = _each(nodes, work)
            for i, got in results.items():
                assert not isinstance(got, Exception), (i, got)
            assert sorted(r["rank"] for r in results.values()) == list(range(n))
            by_rank = {r["rank"]: i for i, r in results.items()}
            for got in results.values():
                assert got["world"] == n
                for size in SIZES:
                    want = _exact(nodes, size)
                    for name in ("auto", "ring", "butterfly", "direct"):
                        np.testing.assert_array_equal(got[f"{name}{size}"], want, err_msg=name)
                mean = np.mean([_inputs(i, 1001) for i in nodes], axis=0).reshape(7, 143)
                np.testing.assert_allclose(got["mean"], mean, rtol=1e-6)
                assert got["gather"] == [f"node-{by_rank[r]}".encode() for r in range(n)]
                np.testing.assert_array_equal(got["bcast"], _inputs(by_rank[n - 1], 5000))


def test_compressed_all_reduce_stays_within_the_codecs_bound(tmp_path: Path) -> None:
    nodes = [1, 2, 3]
    size = 200_003
    rng = np.random.default_rng(7)
    xs = {i: rng.uniform(-1, 1, size).astype(np.float32) for i in nodes}
    exact = np.sum(list(xs.values()), axis=0, dtype=np.float64)
    # Nobody leaves the group before everyone has its last result: a member that leaves while
    # another still waits for its part in flight breaks that one's operation (GroupChanged,
    # seen once in CI under load); what this test measures is the codecs' bound.
    done = threading.Barrier(len(nodes), timeout=120)
    with local_swarm(tmp_path, 3) as swarm:

        def work(i: int) -> dict[str, np.ndarray]:
            with swarm.client(i, timeout=60) as c:
                g = c.join_group("codecs", size=3, timeout=60)
                out = {
                    codec: g.all_reduce(xs[i], op="sum", codec=codec) for codec in ("fp16", "int8")
                }
                # top-k with error feedback: what one call leaves out, later calls send
                total = np.zeros(size, np.float64)
                for k in range(30):
                    total += g.all_reduce(xs[i], op="sum", codec="topk")
                    if k == 0:
                        out["topk1"] = total.astype(np.float32)
                out["topk"] = total.astype(np.float32)
                done.wait()
                return out

        results = _each(nodes, work)
    for got in results.values():
        assert not isinstance(got, Exception), got
        # fp16: half an ulp of float16 per value and per partial result (|sum| <= 3)
        assert np.max(np.abs(got["fp16"] - exact)) <= 3 * 2**-11 * 3
        # int8: half a step (range/255) of each input block and of the reduced block
        assert np.max(np.abs(got["int8"] - exact)) <= 0.5 * (2 / 255) * 3 + 0.5 * (6 / 255)
        # every member decoded the same bytes
    for codec in ("fp16", "int8", "topk"):
        arrays = [got[codec] for got in results.values()]
        for a in arrays[1:]:
            np.testing.assert_array_equal(a, arrays[0])

    # Error feedback: what a call leaves out is sent later, so the cumulative result of 30
    # calls is much nearer 30 exact sums than one call is to one (without it, both ~0.99).
    def rel(got: np.ndarray, calls: int) -> float:
        return float(np.linalg.norm(got - calls * exact) / np.linalg.norm(calls * exact))

    assert rel(results[1]["topk"], 30) < 0.85 * rel(results[1]["topk1"], 1)


def _fault_swarm(tmp_path: Path, n: int, faulty: dict[int, str]) -> LocalSwarm:
    swarm = LocalSwarm(
        tmp_path, n, {"collectives.stall_timeout": 3.0, "collectives.reform_wait": 1.0}
    )
    for i, fault in faulty.items():
        set_config_value(swarm.node(i).data_dir, "collectives.fault", [fault])
    return swarm


def test_a_member_killed_mid_operation_fails_every_survivor_then_a_retry_succeeds(
    tmp_path: Path,
) -> None:
    swarm = _fault_swarm(tmp_path, 4, {})
    size = 6_000_000  # long enough to be killed in the middle
    try:
        swarm.start()
        swarm.wait_connected(3)
        started = threading.Event()

        def work(i: int) -> dict[str, Any]:
            with swarm.client(i, timeout=120) as c:
                g = c.join_group("kill", size=4, timeout=60)
                x = _inputs(i, size)
                g.barrier()
                started.set()
                t0 = time.monotonic()
                try:
                    g.all_reduce(x, op="sum")
                    return {"error": None}
                except CollectiveFailed as exc:
                    failed_after = time.monotonic() - t0
                    error = exc
                if i == 4:
                    return {"error": error}
                g.refresh(timeout=60)
                retried = g.all_reduce(_inputs(i, 1001), op="sum")
                return {
                    "error": error,
                    "failed_after": failed_after,
                    "world": g.world_size,
                    "retried": retried,
                    "changed": isinstance(error, GroupChangedError),
                }

        killer = threading.Thread(
            target=lambda: (started.wait(60), time.sleep(0.15), swarm.kill(4))
        )
        killer.start()
        results = _each([1, 2, 3, 4], work)
        killer.join()
    finally:
        swarm.stop()
    for i in (1, 2, 3):
        r = results[i]
        assert not isinstance(r, Exception), (i, r)
        assert r["error"] is not None, f"node-{i} reported success with a member killed"
        assert r["failed_after"] < 3.0 + 5.0, r  # within the stall bound and then some
        assert r["world"] == 3
        np.testing.assert_array_equal(r["retried"], _exact([1, 2, 3], 1001))


@pytest.mark.parametrize("fault", ["corrupt", "short"])
def test_a_member_sending_bad_parts_fails_the_operation_everywhere(
    tmp_path: Path, fault: str
) -> None:
    swarm = _fault_swarm(tmp_path, 3, {3: fault})
    try:
        swarm.start()
        swarm.wait_connected(2)

        def work(i: int) -> Any:
            with swarm.client(i, timeout=60) as c:
                g = c.join_group("bad", size=3, timeout=60)
                return g.all_reduce(_inputs(i, 100_003), op="sum")

        results = _each([1, 2, 3], work)
    finally:
        swarm.stop()
    for i, r in results.items():
        # nobody returns a sum: a wrong one would be worse than none
        assert isinstance(r, CollectiveFailed), (i, r)
    assert any("bad part" in str(r) for r in results.values()), results


def test_a_private_group_keeps_a_stranger_out_and_the_trio_client_works(tmp_path: Path) -> None:
    key_a, key_b = tmp_path / "a.key", tmp_path / "b.key"
    key_a.write_text(os.urandom(32).hex())
    key_b.write_text(os.urandom(32).hex())
    swarm = LocalSwarm(tmp_path / "net", 3, {"network.connect_timeout": 3.0})
    try:
        swarm.start([1, 2], extra_args=["--psk-file", str(key_a)])
        swarm.wait_connected(1)
        swarm.start([3], bootstrap=swarm.node(1), extra_args=["--psk-file", str(key_b)])

        async def trio_member() -> np.ndarray:
            async with AsyncClient.open(socket_path=swarm.node(2).socket) as c:
                g = await c.join_group("private", size=2, timeout=30)
                assert g.world_size == 2
                out = await g.all_reduce(_inputs(2, 70_001), op="sum")
                await g.barrier()
                return out

        def work(i: int) -> Any:
            if i == 2:
                return trio.run(trio_member)
            with swarm.client(i, timeout=60) as c:
                if i == 3:  # another key: it cannot reach the group at all
                    with pytest.raises(CollectiveFailed, match="did not form"):
                        c.join_group("private", size=3, timeout=5)
                    return None
                g = c.join_group("private", size=2, timeout=30)
                out = g.all_reduce(_inputs(1, 70_001), op="sum")
                g.barrier()
                return out

        results = _each([1, 2, 3], work)
    finally:
        swarm.stop()
    for i in (1, 2):
        assert not isinstance(results[i], Exception), results
        np.testing.assert_array_equal(results[i], _exact([1, 2], 70_001))
    assert results[3] is None
