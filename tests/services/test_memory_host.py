"""The in-memory libp2p stand-in (``tests.support.memory_host``) behaves as the service tests
assume: bytes arrive in order (in random pieces), ``close`` is a half close, ``reset`` fails
both ends, a crash ends streams and refuses dials, a hang swallows bytes and stalls dials."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from libp2p.network.stream.exceptions import StreamEOF, StreamReset

from tests.support.memory_host import (
    MemoryDialError,
    MemoryHost,
    MemoryNetwork,
    MemoryStream,
    key_pair_for,
    open_memory_network,
)

pytestmark = pytest.mark.timeout(10)

PROTO = "/test/1.0.0"


class Echo:
    """A handler that records what it reads and echoes it, until EOF or reset."""

    def __init__(self) -> None:
        self.streams: list[MemoryStream] = []
        self.ended: list[str] = []

    async def __call__(self, stream: MemoryStream) -> None:
        self.streams.append(stream)
        try:
            while True:
                data = await stream.read(1 << 20)
                await stream.write(data)
        except StreamEOF:
            self.ended.append("eof")
            await stream.close()
        except StreamReset:
            self.ended.append("reset")
        except trio.Cancelled:
            self.ended.append("cancelled")
            raise


def pair(net: MemoryNetwork) -> tuple[MemoryHost, MemoryHost, Echo]:
    a, b = net.add_host(key_pair_for(1)), net.add_host(key_pair_for(2))
    echo = Echo()
    b.set_stream_handler(PROTO, echo)
    return a, b, echo


async def read_exactly(stream: MemoryStream, n: int) -> bytes:
    out = b""
    while len(out) < n:
        out += await stream.read(n - len(out))
    return out


async def test_bytes_arrive_in_order_and_close_is_a_half_close(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_memory_network(chunk_seed=7) as net:
        a, b, echo = pair(net)
        s = await a.new_stream(b.get_id(), ["/other/1.0.0", PROTO])
        assert s.get_protocol() == PROTO
        assert s.muxed_conn.peer_id == b.get_id()
        data = bytes(range(256)) * 1024
        await s.write(data)
        assert await read_exactly(s, len(data)) == data
        assert echo.streams[0].muxed_conn.peer_id == a.get_id()
        assert b.get_id() in a.get_connected_peers()
        await s.close()
        with pytest.raises(StreamEOF):
            await s.read(1)  # the handler saw EOF and closed its side too
        assert echo.ended == ["eof"]
        assert trio.current_time() == 0.0


async def test_reset_fails_both_ends(autojump_clock: trio.testing.MockClock) -> None:
    async with open_memory_network() as net:
        a, b, echo = pair(net)
        s = await a.new_stream(b.get_id(), [PROTO])
        await trio.testing.wait_all_tasks_blocked()
        await s.reset()
        await trio.testing.wait_all_tasks_blocked()
        assert echo.ended == ["reset"]
        with pytest.raises(StreamReset):
            await s.write(b"x")
        with pytest.raises(StreamReset):
            await s.read(1)


async def test_a_crashed_peer_ends_its_streams_and_refuses_dials(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_memory_network() as net:
        a, b, echo = pair(net)
        s = await a.new_stream(b.get_id(), [PROTO])
        await trio.testing.wait_all_tasks_blocked()
        net.crash(b.get_id())
        await trio.testing.wait_all_tasks_blocked()
        # Its handler task is gone (whether its read failed first or the cancel came first
        # does not matter: the process is dead).
        assert echo.ended in (["reset"], ["cancelled"])
        assert not b._handler_scopes
        with pytest.raises(StreamEOF):
            await s.read(1)
        with pytest.raises(StreamReset):
            await s.write(b"x")
        with pytest.raises(MemoryDialError):
            await a.new_stream(b.get_id(), [PROTO])
        assert a.get_connected_peers() == []
        with pytest.raises(MemoryDialError):
            await a.new_stream(a.get_id(), ["/nobody/speaks/this"])


async def test_a_hung_peer_swallows_bytes_and_stalls_dials(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_memory_network() as net:
        a, b, _echo = pair(net)
        s = await a.new_stream(b.get_id(), [PROTO])
        net.hang(b.get_id())
        await s.write(b"hello")  # "succeeds"
        with trio.move_on_after(5) as read_wait:
            await s.read(1)
        assert read_wait.cancelled_caught
        with trio.move_on_after(3) as dial_wait:
            await a.new_stream(b.get_id(), [PROTO])
        assert dial_wait.cancelled_caught
        assert trio.current_time() == 8.0
        assert b.get_id() in a.get_connected_peers()  # nothing tells a that b is gone
