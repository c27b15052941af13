"""Hostile and clumsy IPC clients against one real daemon: every bad frame gets an error
reply (or a clean close), and other clients keep being served throughout."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import cbor2
import pytest

from p2pnode import Client, InvalidParams, UnknownMethod
from p2pnode_protocols.framing import FrameDecoder, encode_frame
from tests.integration.harness import LocalSwarm, local_swarm

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSwarm]:
    with local_swarm(tmp_path_factory.mktemp("ipc"), 1, {"ipc.max_frame": 65536}) as s:
        yield s


def raw_socket(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(str(path))
    return s


def read_frame(s: socket.socket) -> dict | None:
    decoder = FrameDecoder(1 << 20)
    while True:
        frame = decoder.next_frame()
        if frame is not None:
            return frame
        data = s.recv(65536)
        if not data:
            return None
        decoder.receive_data(data)


@pytest.fixture
def background_traffic(daemon: LocalSwarm) -> Iterator[list[int]]:
    """Another client calling status in a loop while a test misbehaves: served before the test
    starts, and again after it has done its worst."""
    done = threading.Event()
    served = [0]
    errors: list[BaseException] = []
    progress = threading.Condition()

    def loop() -> None:
        try:
            with daemon.client(1) as c:
                while not done.is_set():
                    assert c.status()["peer_id"] == daemon.node(1).peer_id
                    with progress:
                        served[0] += 1
                        progress.notify_all()
        except BaseException as exc:
            errors.append(exc)
            with progress:
                progress.notify_all()

    def served_beyond(count: int) -> bool:
        with progress:
            return progress.wait_for(lambda: served[0] > count or bool(errors), timeout=10)

    t = threading.Thread(target=loop)
    t.start()
    assert served_beyond(0), "the background client was never served"
    yield served
    assert served_beyond(served[0]), "the background client was not served after the test"
    done.set()
    t.join(10)
    assert not errors, errors


def test_garbage_body_gets_bad_request_and_the_connection_survives(
    daemon: LocalSwarm, background_traffic: list[int]
) -> None:
    s = raw_socket(daemon.node(1).socket)
    s.sendall(struct.pack(">I", 5) + b"\xff\xfe\x00ab")
    reply = read_frame(s)
    assert reply == {
        "id": None,
        "error": {"code": "bad_request", "message": reply["error"]["message"]},
    }
    body = cbor2.dumps([1])  # CBOR, but not a map
    s.sendall(struct.pack(">I", len(body)) + body)
    assert read_frame(s)["error"]["code"] == "bad_request"
    s.sendall(encode_frame({"id": 7, "method": "status"}))
    assert read_frame(s)["result"]["peer_id"] == daemon.node(1).peer_id
    s.close()


def test_missing_id_and_method_are_bad_requests(daemon: LocalSwarm) -> None:
    s = raw_socket(daemon.node(1).socket)
    s.sendall(encode_frame({"method": "status"}))
    assert read_frame(s)["error"]["code"] == "bad_request"
    s.sendall(encode_frame({"id": 3, "method": 12}))
    assert read_frame(s) == {
        "id": 3,
        "error": {"code": "bad_request", "message": "request needs a string 'method'"},
    }
    s.sendall(encode_frame({"id": 4, "method": "status", "params": [1, 2]}))
    assert read_frame(s)["error"]["code"] == "bad_request"
    s.close()


def test_oversized_frame_is_refused_and_closed(
    daemon: LocalSwarm, background_traffic: list[int]
) -> None:
    s = raw_socket(daemon.node(1).socket)
    s.sendall(struct.pack(">I", 10_000_000))  # announce 10 MB, far above ipc.max_frame
    reply = read_frame(s)
    assert reply["error"]["code"] == "too_large"
    assert read_frame(s) is None  # then the daemon hangs up
    s.close()


def test_truncated_frame_then_hangup(daemon: LocalSwarm, background_traffic: list[int]) -> None:
    for _ in range(20):
        s = raw_socket(daemon.node(1).socket)
        s.sendall(struct.pack(">I", 100) + b"partial")
        s.close()
    with daemon.client(1) as c:
        assert c.status()["pid"] == daemon.node(1).process.pid  # type: ignore[union-attr]


def test_unknown_method_and_wrong_types(daemon: LocalSwarm) -> None:
    with daemon.client(1) as c:
        with pytest.raises(UnknownMethod):
            c.call("no.such.method")
        with pytest.raises(InvalidParams, match="'key' must be str"):
            c.call("dht.put", {"key": 123, "value": b"x"})
        with pytest.raises(InvalidParams, match="missing parameter 'value'"):
            c.call("dht.put", {"key": "k"})
        with pytest.raises(InvalidParams):
            c.call("dht.find_providers", {"key": "k", "limit": True})
        with pytest.raises(InvalidParams):
            c.connect("/ip4/127.0.0.1/tcp/1")  # no /p2p/ part
        with pytest.raises(InvalidParams):
            c.connect("not a multiaddr/p2p/x")
        assert c.status()["peer_id"] == daemon.node(1).peer_id


def test_many_concurrent_clients(daemon: LocalSwarm) -> None:
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            with daemon.client(1) as c:
                for j in range(10):
                    c.dht_put(f"c{i}-{j}", b"v")
                    assert c.dht_get(f"c{i}-{j}")["value"] == b"v"
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]


def test_subscription_streams_record_events(daemon: LocalSwarm) -> None:
    sub = daemon.client(1)
    events = sub.subscribe("records")
    with daemon.client(1) as c:
        c.dht_put("watched", b"1")
    event = next(events)
    assert event["topic"] == "records"
    assert event["key"] == "/p2pnode/kv/watched"
    sub.close()


def test_socket_and_key_are_0600(daemon: LocalSwarm) -> None:
    d = daemon.node(1).data_dir
    assert (d / "p2pnode.sock").stat().st_mode & 0o777 == 0o600
    assert (d / "identity.key").stat().st_mode & 0o777 == 0o600


def test_client_without_daemon_gets_a_typed_error(tmp_path: Path) -> None:
    from p2pnode import DaemonNotRunning

    with pytest.raises(DaemonNotRunning, match="no daemon is running"):
        Client(data_dir=tmp_path)
