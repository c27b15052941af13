"""The web view of a real daemon in a real 4-daemon swarm, over HTTP: the snapshots say what the
IPC socket says, a committed round arrives on /events as it happens, bad requests get a 4xx and
the event streams are bounded."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from typing import Any

import pytest

from p2pnode import NotFound
from p2pnode_protocols.blobs.cid import manifest_cid

from .conftest import MAX_STREAMS, LiveSwarm

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


class EventStream:
    """A browser's ``EventSource``, by hand: a socket reading ``event:``/``data:`` blocks."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.sendall(
            b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"
        )
        self.buffer = b""
        head = self._until(b"\r\n\r\n", time.monotonic() + 10)
        self.status = int(head.split(b" ", 2)[1])

    def _until(self, sep: bytes, deadline: float) -> bytes:
        while sep not in self.buffer:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("the server closed the stream")
            self.buffer += chunk
        block, _, self.buffer = self.buffer.partition(sep)
        return block

    def next(self, timeout: float) -> tuple[str, Any]:
        """The next event (comments skipped) as (name, data)."""
        deadline = time.monotonic() + timeout
        while True:
            block = self._until(b"\n\n", deadline).decode()
            name, data = "message", None
            for line in block.split("\n"):
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    data = json.loads(line[6:])
            if data is not None:
                return name, data

    def close(self) -> None:
        self.sock.close()


def test_the_snapshots_list_the_members_and_match_ipc(live: LiveSwarm) -> None:
    members = live.wait_members(4)
    peers = {m["peer_id"] for m in members}
    assert peers == {n.peer_id for n in live.swarm.nodes}
    assert [m["peer_id"] for m in members if m["self"]] == [live.swarm.node(1).peer_id]
    snap = live.json("/api/snapshot")
    assert snap["peer_id"] == live.swarm.node(1).peer_id
    with live.swarm.client(1) as c:
        committee = c.call("consensus.status")["committee"]
    assert snap["log"]["committee"] == committee
    assert snap["transfers"] == {"transfers": []} or "transfers" in snap["transfers"]
    status, page = live.get("/")
    assert status == 200 and b'<script src="/static/app.js"' in page
    assert b"http://" not in page and b"https://" not in page  # nothing from elsewhere
    for asset in ("/static/app.js", "/static/app.css"):
        status, body = live.get(asset)
        assert status == 200 and b"https://" not in body


def test_a_committed_round_arrives_as_an_event(live: LiveSwarm) -> None:
    live.wait_members(4)
    stream = EventStream(live.port)
    try:
        assert stream.status == 200
        assert stream.next(5) == (
            "hello",
            {
                "peer_id": live.swarm.node(1).peer_id,
                "topics": ["members", "commits", "jobs", "rounds"],
            },
        )
        job = live.create_job(rounds=2)
        seen: list[tuple[str, Any]] = []
        deadline = time.monotonic() + 120
        while True:
            name, data = stream.next(max(0.1, deadline - time.monotonic()))
            seen.append((name, data))
            if name == "jobs" and data["job"] == job and data["type"] == "CommitRound":
                break
        names = {n for n, _ in seen}
        assert {"commits", "rounds"} <= names, names  # the round's phases came live too
        phases = [d["phase"] for n, d in seen if n == "rounds" and d["job"] == job]
        assert {"training", "aggregation"} <= set(phases), phases
    finally:
        stream.close()
    jobs = {j["job"]: j for j in live.json("/api/jobs")["jobs"]}
    history = jobs[job]["history"]
    assert history and history[0]["round"] == 1 and history[0]["accuracy"] is not None
    log = live.json("/api/log?limit=256")
    names = [t.get("name") for e in log["entries"] for t in e["txs"] if t.get("job") == job]
    assert "CommitRound" in names and "StartRound" in names
    assert log["entries"][0]["seq"] == log["last"]  # newest first


def test_bad_requests_get_4xx(live: LiveSwarm) -> None:
    assert live.get("/nowhere")[0] == 404
    assert live.get("/api/log?limit=0")[0] == 400
    assert live.get("/", headers={"Host": "attacker.example"})[0] == 403

    def raw(data: bytes) -> int:
        with socket.create_connection(("127.0.0.1", live.port), timeout=10) as s:
            s.sendall(data)
            reply = b""
            while chunk := s.recv(65536):
                reply += chunk
        return int(reply.split(b" ", 2)[1])

    assert raw(b"POST /api/members HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n") == 405
    assert raw(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n") == 400  # TLS to HTTP
    assert raw(b"GET / HTTP/1.1\r\nX: " + b"a" * 9000 + b"\r\n\r\n") == 431
    t0 = time.monotonic()
    assert raw(b"GET / HTTP/1.1\r\nHost: 127") == 408  # http.read_timeout = 1 s
    assert time.monotonic() - t0 < 5
    assert live.get("/api/members")[0] == 200  # and the daemon serves on


def test_event_streams_are_limited(live: LiveSwarm) -> None:
    streams = [EventStream(live.port) for _ in range(MAX_STREAMS)]
    try:
        assert [s.status for s in streams] == [200] * MAX_STREAMS
        extra = EventStream(live.port)
        assert extra.status == 503
        extra.close()
        streams.pop().close()
        deadline = time.monotonic() + 10
        while True:  # the slot is free as soon as the daemon sees the close
            again = EventStream(live.port)
            if again.status == 200:
                streams.append(again)
                break
            again.close()
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        for s in streams:
            s.close()


def test_a_fetch_in_flight_is_listed_as_a_transfer(live: LiveSwarm) -> None:
    key = manifest_cid(os.urandom(64))  # a blob nobody holds: its fetch searches until timeout
    outcome: list[BaseException] = []

    def fetch() -> None:
        try:
            with live.swarm.client(1) as c:
                c.call("blob.fetch", {"key": key, "timeout": 4})
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=fetch)
    worker.start()
    try:
        deadline = time.monotonic() + 4
        while True:
            rows = {t["key"]: t for t in live.json("/api/transfers")["transfers"]}
            if key in rows:
                break
            assert time.monotonic() < deadline, rows
            time.sleep(0.1)
        assert rows[key]["chunks"] == 0 and rows[key]["seconds"] >= 0  # no manifest yet
    finally:
        worker.join(timeout=30)
    assert len(outcome) == 1 and isinstance(outcome[0], NotFound), outcome
    assert key not in {t["key"] for t in live.json("/api/transfers")["transfers"]}
