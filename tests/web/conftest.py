"""A running 4-daemon swarm (a committee of 4) whose node-1 serves the web view, shared by the
live tests of this folder (starting one costs seconds of both cores); each test makes its own
job. The daemons are stopped by their pids when the session's last web test is done."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from p2pnode.config.edit import set_config_value
from p2pnode.consensus.genesis import genesis_validators
from p2pnode.swarm import free_ports
from tests.integration.harness import LocalSwarm

MAX_STREAMS = 3


@dataclass
class LiveSwarm:
    swarm: LocalSwarm
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        try:
            conn.request("GET", path, headers=headers or {})
            reply = conn.getresponse()
            return reply.status, reply.read()
        finally:
            conn.close()

    def json(self, path: str) -> Any:
        status, body = self.get(path)
        assert status == 200, (path, status, body)
        return json.loads(body)

    def create_job(self, rounds: int = 2) -> str:
        spec = f'name = "web"\nrounds = {rounds}\n[participants]\nmax = 8\n[sync]\ndeadline = 3.0\n'
        with self.swarm.client(1, timeout=60) as c:
            return str(c.call("job.create", {"spec": spec})["job"])

    def wait_members(self, n: int, timeout: float = 40) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            members = self.json("/api/members")["members"]
            if sum(1 for m in members if m["state"] == "alive") >= n:
                return members  # type: ignore[no-any-return]
            assert time.monotonic() < deadline, members
            time.sleep(0.3)


@pytest.fixture(scope="session")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveSwarm]:
    parent: Path = tmp_path_factory.mktemp("web-swarm")
    ids = genesis_validators(parent, 4)
    swarm = LocalSwarm(parent, 4, {"consensus.validators": ids, "training.result_timeout": 2.0})
    (port,) = free_ports(1)
    for key, value in (
        ("http.port", port),
        ("http.max_clients", MAX_STREAMS),
        ("http.read_timeout", 1.0),
    ):
        set_config_value(swarm.node(1).data_dir, key, [str(value)])
    try:
        swarm.start()
        swarm.wait_connected(3)
        yield LiveSwarm(swarm, port)
    finally:
        swarm.stop()
