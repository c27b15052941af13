"""Record lifetimes on real daemons, and the trio client's concurrency and subscriptions."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import numpy as np
import pytest
import trio

from p2pnode import AsyncClient, NotFound
from tests.integration.harness import LocalSwarm, local_swarm

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]  # several daemon processes

TTL = 10.0  # the smallest TTL the config accepts


def test_replicas_drop_a_record_whose_owner_stopped_republishing(tmp_path: Path) -> None:
    settings = {"dht.record_ttl": TTL, "dht.republish_interval": 2.0, "dht.replication": 2}
    s = LocalSwarm(tmp_path, 3, settings)
    try:
        s.start()
        s.wait_connected(2)
        with s.client(1) as c1:
            c1.dht_put("kept", b"by a live owner")
        with s.client(2) as c2:
            c2.dht_put("orphan", b"owner dies")
        s.kill(2, signal.SIGKILL)
        time.sleep(TTL + 3)
        with s.client(3) as c3:
            # Republished every 2 s by node-1: still there after the TTL.
            assert c3.dht_get("kept")["value"] == b"by a live owner"
            # node-2 is gone: replicas let its record expire.
            with pytest.raises(NotFound):
                c3.dht_get("orphan")
    finally:
        s.stop()


async def test_async_client_many_in_flight_and_peer_events(tmp_path: Path) -> None:
    with local_swarm(tmp_path, 2) as s:
        async with AsyncClient.open(socket_path=s.node(1).socket) as c:
            results: dict[int, bytes] = {}

            async def put_get(i: int) -> None:
                await c.dht_put(f"k{i}", f"v{i}".encode())
                results[i] = (await c.dht_get(f"k{i}"))["value"]

            async with trio.open_nursery() as nursery:
                for i in range(50):
                    nursery.start_soon(put_get, i)
            assert results == {i: f"v{i}".encode() for i in range(50)}

            # A model of several upload frames (4 MiB each) and back.
            model = {"w": np.arange(3 << 20, dtype=np.float32), "b": np.ones(7, np.int16)}
            got = await c.get_tensors(await c.put_tensors(model))
            assert list(got) == ["w", "b"]
            assert all(np.array_equal(got[n], model[n]) for n in model)

            async with c.subscribe("peers") as events:
                await c.disconnect(s.node(2).peer_id)
                # Other services (membership probes) may redial at once, so a "connected"
                # event can come too; the disconnection must be among the events.
                with trio.fail_after(10):
                    async for event in events:
                        if event["event"] == "disconnected":
                            break
            assert event == {
                "topic": "peers",
                "event": "disconnected",
                "peer_id": s.node(2).peer_id,
            }
            with pytest.raises(NotFound):
                await c.dht_find_peer("12D3KooWQSoRbpgxoNbMQZkq3aNK3TVYVJpZms25KXVGHYJnQYRa")
