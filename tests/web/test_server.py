"""The web server in process (p2pnode/web/server.py): its limits, with a real event bus and a
real socket. The IPC adapters behind it are small stand-ins here (tests/web/test_live.py runs
the real ones on real daemons): what is under test is the serving, not the snapshots.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio

from p2pnode.config.load import HttpConfig
from p2pnode.events import EventBus
from p2pnode.ipc.errors import NotFound
from p2pnode.ipc.server import Method
from p2pnode.web.server import MAX_REQUESTS, WebServer, to_json

PEER = "12D3KooWTestTestTestTestTestTestTestTestTestTestTest"


def _methods(broken: str | None = None) -> dict[str, Method]:
    async def status(p: dict[str, Any], s: Any, r: int) -> Any:
        return {"peer_id": PEER, "version": "0", "uptime": 1.0, "connected_peers": 0, "addrs": []}

    async def members(p: dict[str, Any], s: Any, r: int) -> Any:
        return {"members": [{"peer_id": PEER, "state": "alive"}], "awareness": 0}

    async def off(p: dict[str, Any], s: Any, r: int) -> Any:
        raise NotFound("consensus is off")

    async def transfers(p: dict[str, Any], s: Any, r: int) -> Any:
        return {"transfers": []}

    async def bug(p: dict[str, Any], s: Any, r: int) -> Any:
        raise RuntimeError("a bug behind this method")

    table: dict[str, Method] = {
        "status": status,
        "members": members,
        "consensus.status": off,
        "consensus.log": off,
        "job.list": off,
        "job.status": off,
        "blob.transfers": transfers,
    }
    if broken is not None:
        table[broken] = bug
    return table


async def _server(
    nursery: trio.Nursery, broken: str | None = None, tick: float = 3.0, **cfg: Any
) -> tuple[WebServer, EventBus, int]:
    events = EventBus()
    config = {"port": 1, "max_clients": 2, "queue_size": 4, "read_timeout": 0.5, **cfg}
    server = WebServer(
        methods=_methods(broken), events=events, peer_id=PEER, cfg=HttpConfig(**config), tick=tick
    )
    port = await nursery.start(server.serve, 0)
    return server, events, port


async def _request(port: int, head: bytes) -> tuple[int, bytes]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(head)
        data = b""
        with trio.fail_after(5):
            while chunk := await stream.receive_some(65536):
                data += chunk
    return int(data.split(b" ", 2)[1]), data.partition(b"\r\n\r\n")[2]


def _get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()


async def _open_events(port: int) -> tuple[trio.SocketStream, bytes]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(_get("/events"))
    data = b""
    with trio.fail_after(5):
        while b"event: hello" not in data or not data.endswith(b"\n\n"):
            data += await stream.receive_some(65536)
    return stream, data


async def test_json_and_pages_are_served_and_errors_named(nursery: trio.Nursery) -> None:
    _, _, port = await _server(nursery)
    status, body = await _request(port, _get("/api/members"))
    assert status == 200 and PEER.encode() in body
    status, body = await _request(port, _get("/api/log"))
    assert status == 200 and b"consensus is off" in body  # a section this node cannot give
    status, body = await _request(port, _get("/"))
    assert status == 200 and b"/static/app.js" in body
    assert (await _request(port, _get("/static/app.js")))[0] == 200
    assert (await _request(port, _get("/static/../server.py")))[0] == 404
    assert (await _request(port, _get("/api/log?limit=999")))[0] == 400
    assert (await _request(port, b"PUT / HTTP/1.1\r\nHost: localhost\r\n\r\n"))[0] == 405
    assert (await _request(port, b"GET / HTTP/1.1\r\nHost: evil.example\r\n\r\n"))[0] == 403


async def test_a_request_head_that_never_ends_gets_408(nursery: trio.Nursery) -> None:
    _, _, port = await _server(nursery, read_timeout=0.3)
    t0 = trio.current_time()
    status, _ = await _request(port, b"GET / HTTP/1.1\r\nHost: loc")
    assert status == 408 and trio.current_time() - t0 < 3


async def test_a_bus_event_reaches_the_stream(nursery: trio.Nursery) -> None:
    _, events, port = await _server(nursery)
    stream, _ = await _open_events(port)
    async with stream:
        events.publish("commits", {"event": "commit", "seq": 7, "digest": b"\x01\x02"})
        data = b""
        with trio.fail_after(5):
            while b"\n\n" not in data:
                data += await stream.receive_some(65536)
    assert data.startswith(b"event: commits\ndata: ")
    assert b'"seq":7' in data and b'"digest":"0102"' in data


async def test_a_browser_that_stops_reading_is_dropped_not_buffered(nursery: trio.Nursery) -> None:
    server, _, port = await _server(nursery, queue_size=4)
    stream, _ = await _open_events(port)
    async with stream:
        with trio.fail_after(5):
            while not server.streams:  # noqa: ASYNC110 (the server's own state, polled)
                await trio.sleep(0.01)
        # No checkpoint between these: the stream's writer cannot drain its queue meanwhile
        # (it may take one frame straight from the first send, if it is waiting in receive).
        for i in range(4 + 2):
            server.broadcast("commits", {"seq": i, "pad": "x" * 1000})
        assert server.counters["streams_dropped"] == 1 and not server.streams
        with trio.fail_after(5):  # the server closed the connection
            while await stream.receive_some(65536):
                pass


async def test_event_streams_are_bounded_and_a_closed_one_frees_its_slot(
    nursery: trio.Nursery,
) -> None:
    server, _, port = await _server(nursery, max_clients=2)
    first, _ = await _open_events(port)
    second, _ = await _open_events(port)
    status, body = await _request(port, _get("/events"))
    assert status == 503 and b"2 event streams" in body
    await first.aclose()
    with trio.fail_after(5):  # noticed at once, not at the next keepalive
        while len(server.streams) > 1:  # noqa: ASYNC110 (the server's own state, polled)
            await trio.sleep(0.01)
    third, _ = await _open_events(port)
    await second.aclose()
    await third.aclose()


@pytest.mark.timeout(30)
async def test_connections_beyond_the_limit_get_503(nursery: trio.Nursery) -> None:
    server, _, port = await _server(nursery, max_clients=1, read_timeout=5.0)
    idle = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(1 + MAX_REQUESTS)]
    with trio.fail_after(5):
        while server.connections < 1 + MAX_REQUESTS:  # noqa: ASYNC110 (polled)
            await trio.sleep(0.01)
    status, _ = await _request(port, _get("/"))
    assert status == 503
    for s in idle:
        await s.aclose()


async def test_a_bug_behind_a_section_answers_500_and_the_server_serves_on(
    nursery: trio.Nursery,
) -> None:
    server, _, port = await _server(nursery, broken="members")
    status, body = await _request(port, _get("/api/members"))
    assert status == 500 and b"see its log" in body
    assert server.counters["errors"] == 1
    assert (await _request(port, _get("/api/transfers")))[0] == 200


def test_json_for_a_browser_has_no_nan_and_bytes_as_hex() -> None:
    got = to_json({"loss": float("nan"), "acc": [float("inf"), 0.5], "d": b"\xab", "t": (1,)})
    assert got == b'{"loss":null,"acc":[null,0.5],"d":"ab","t":[1]}'


async def test_transfers_and_members_are_pushed_while_a_stream_is_open(
    nursery: trio.Nursery,
) -> None:
    _, _, port = await _server(nursery, tick=0.02)
    stream, _ = await _open_events(port)
    names: list[str] = []
    async with stream:
        data = b""
        with trio.fail_after(5):
            while "members" not in names:
                data += await stream.receive_some(65536)
                while b"\n\n" in data:
                    frame, _, data = data.partition(b"\n\n")
                    if frame.startswith(b"event: section\ndata: "):
                        names.append(json.loads(frame.split(b"data: ", 1)[1])["name"])
    # The transfers once (they did not change: an empty list), the members every fifth tick.
    assert names == ["transfers", "members"]
