"""The IPC server's timeouts and byte budget, in process (issue 21, item 4): an idle
connection is closed and both clients reconnect without the caller noticing; a client stalled
inside a frame is closed; partial frames wait for the shared budget instead of growing past it."""

from __future__ import annotations

import struct
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from p2pnode.ipc.async_client import AsyncClient
from p2pnode.ipc.client import Client
from p2pnode.ipc.server import ByteBudget, IpcServer, Session

pytestmark = pytest.mark.timeout(30)


async def echo(params: dict[str, Any], session: Session, rid: int) -> Any:
    return params


def server(path: Path, **kwargs: Any) -> IpcServer:
    return IpcServer(path, {"echo": echo}, max_frame=1 << 20, max_clients=4, **kwargs)


async def test_an_idle_connection_is_closed_and_the_async_client_reconnects(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.sock"
    async with trio.open_nursery() as nursery:
        srv = await nursery.start(server(path, idle_timeout=0.3).run)
        async with AsyncClient.open(socket_path=path, timeout=5) as c:
            assert await c.call("echo", {"a": 1}) == {"a": 1}
            first = next(iter(srv.sessions))
            await trio.sleep(0.8)
            assert first not in srv.sessions  # closed for idleness
            assert await c.call("echo", {"a": 2}) == {"a": 2}
        nursery.cancel_scope.cancel()


async def test_the_blocking_client_reconnects_after_an_idle_close(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    async with trio.open_nursery() as nursery:
        srv = await nursery.start(server(path, idle_timeout=0.3).run)

        def calls() -> list[Any]:
            with Client(socket_path=path, timeout=5) as c:
                out = [c.call("echo", {"n": 1})]
                time.sleep(0.8)
                out.append(c.call("echo", {"n": 2}))
                return out

        assert srv.evicted == 0
        assert await trio.to_thread.run_sync(calls) == [{"n": 1}, {"n": 2}]
        await trio.sleep(0.3)
        assert srv.sessions == set()  # the second connection, closed by the client
        nursery.cancel_scope.cancel()


async def test_a_client_stalled_inside_a_frame_is_closed(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    async with trio.open_nursery() as nursery:
        await nursery.start(server(path, frame_timeout=0.3).run)
        stream = await trio.open_unix_socket(str(path))
        await stream.send_all(struct.pack(">I", 1000) + b"half")
        with trio.fail_after(5):
            assert await stream.receive_some(100) == b""  # closed by the daemon
        await stream.aclose()
        nursery.cancel_scope.cancel()


async def test_partial_frames_wait_for_the_shared_budget(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    size = 600_000  # over READ_CHUNK, so each frame reserves its size; two do not fit
    async with trio.open_nursery() as nursery:
        srv = await nursery.start(server(path, max_buffered=1 << 20).run)
        first = await trio.open_unix_socket(str(path))
        second = await trio.open_unix_socket(str(path))
        await first.send_all(struct.pack(">I", size) + b"\0" * 1000)
        await trio.sleep(0.2)
        assert srv.budget.used == size
        await second.send_all(struct.pack(">I", size) + b"\0" * 1000)
        await trio.sleep(0.2)
        assert srv.budget.used == size  # the second waits for the first
        await first.aclose()
        await trio.sleep(0.2)
        assert srv.budget.used == size  # now it is the second's
        await second.aclose()
        await trio.sleep(0.2)
        assert srv.budget.used == 0
        nursery.cancel_scope.cancel()


async def test_byte_budget_wakes_a_waiter_on_release() -> None:
    budget = ByteBudget(10)
    await budget.acquire(8)
    got = trio.Event()

    async def wait() -> None:
        await budget.acquire(5)
        got.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait)
        await trio.sleep(0.05)
        assert not got.is_set()
        budget.release(8)
        with trio.fail_after(1):
            await got.wait()
    assert budget.used == 5
