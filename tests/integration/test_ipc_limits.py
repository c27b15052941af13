"""IPC resource limits on a real daemon (issue 21, item 4): idle clients cannot lock out a new
one, stalled partial frames pin a bounded amount of memory, a burst of connects is all served,
an oversized request fails in the client before it is sent, and a ``meta`` built from shared
CBOR references is the caller's error."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cbor2
import pytest

from p2pnode import Client, FrameTooLarge, InvalidParams
from p2pnode_protocols.framing import FrameDecoder, encode_frame
from tests.integration.harness import LocalSwarm, local_swarm

pytestmark = pytest.mark.timeout(180)

MAX_CLIENTS = 256  # the default, as in the report


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSwarm]:
    with local_swarm(tmp_path_factory.mktemp("limits"), 1) as s:
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
        try:
            data = s.recv(65536)
        except ConnectionResetError:
            return None
        if not data:
            return None
        decoder.receive_data(data)


def served(s: socket.socket, rid: int = 1) -> bool:
    s.sendall(encode_frame({"id": rid, "method": "status"}))
    reply = read_frame(s)
    return reply is not None and "result" in reply


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_max_clients_idle_connections_do_not_lock_out_a_new_client(daemon: LocalSwarm) -> None:
    path = daemon.node(1).socket
    first = Client(socket_path=path, timeout=10)  # the one idle longest: evicted first
    assert first.status()
    idle = [raw_socket(path) for _ in range(MAX_CLIENTS - 1)]
    try:
        for s in idle:  # each one accepted and answered: every slot is taken, then idle
            assert served(s)
        started = time.monotonic()
        with Client(socket_path=path, timeout=10) as c:
            assert c.status()["peer_id"] == daemon.node(1).peer_id
        assert time.monotonic() - started < 1.0
        # The oldest idle connection made room; its client reconnects on its next call.
        assert first.status()["peer_id"] == daemon.node(1).peer_id
    finally:
        first.close()
        for s in idle:
            s.close()


def test_a_burst_of_200_connects_is_all_served(daemon: LocalSwarm) -> None:
    path = str(daemon.node(1).socket)
    socks = []
    try:
        for _ in range(200):  # non-blocking: a full accept queue fails at once (EAGAIN)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.setblocking(False)
            socks.append(s)
            s.connect(path)
        for i, s in enumerate(socks):
            s.settimeout(20)
            assert served(s, i), f"connection {i} not served"
    finally:
        for s in socks:
            s.close()


def test_stalled_partial_frames_pin_bounded_memory(daemon: LocalSwarm) -> None:
    """20 clients each send all but the last byte of a 16 MiB - 1 frame and stall: before
    the fix the daemon held every one (RSS 89 -> 409 MiB); now partial frames share
    ``ipc.max_buffered`` (64 MiB), so RSS grows by less than 100 MiB."""
    node = daemon.node(1)
    assert node.process is not None
    pid = node.process.pid
    before = rss_bytes(pid)
    size = (16 << 20) - 1
    body = bytes(size - 1)
    socks = [raw_socket(node.socket) for _ in range(20)]

    def stall(s: socket.socket) -> None:
        s.settimeout(5)  # a daemon that stops reading this one leaves sendall blocked
        with contextlib.suppress(OSError):
            s.sendall(struct.pack(">I", size) + body)

    threads = [threading.Thread(target=stall, args=(s,)) for s in socks]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        grown = rss_bytes(pid) - before
        assert grown < 100 << 20, f"RSS grew by {grown >> 20} MiB"
        with Client(socket_path=node.socket, timeout=10) as c:  # small frames still served
            assert c.status()["peer_id"] == node.peer_id
    finally:
        for s in socks:
            s.close()
    with Client(socket_path=node.socket, timeout=30) as c:  # and large ones once freed
        stat = c.blob_put(b"y" * (8 << 20), pin=False)
        assert stat["size"] == 8 << 20


def test_an_oversized_request_fails_in_the_client_before_it_is_sent(daemon: LocalSwarm) -> None:
    with daemon.client(1) as c:
        with pytest.raises(FrameTooLarge, match="frame limit of 16777216 bytes"):
            c.blob_put(b"x" * (17 << 20))
        assert c.status()["peer_id"] == daemon.node(1).peer_id  # the connection is intact


def test_meta_built_from_shared_references_is_invalid_params(daemon: LocalSwarm) -> None:
    cyclic: list[object] = []
    cyclic.append(cyclic)
    bomb: object = ["x" * 1000]
    for _ in range(40):  # 2**40 copies of the string once written out; a few bytes on the wire
        bomb = [bomb, bomb]
    s = raw_socket(daemon.node(1).socket)
    try:
        for rid, meta in enumerate(({"loop": cyclic}, {"bomb": bomb}), start=1):
            request = {"id": rid, "method": "blob.upload.begin", "params": {"meta": meta}}
            body = cbor2.dumps(request, value_sharing=True)
            s.sendall(struct.pack(">I", len(body)) + body)
            reply = read_frame(s)
            assert reply is not None
            assert reply["error"]["code"] == "invalid_params", reply
        assert served(s, 9)
    finally:
        s.close()
    with daemon.client(1) as c, pytest.raises(InvalidParams):
        c.call("blob.put", {"data": b"x", "meta": {"a": [[[]]] * 2, "deep": _nested(100)}})


def _nested(depth: int) -> object:
    value: object = []
    for _ in range(depth):
        value = [value]
    return value
