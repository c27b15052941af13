"""``p2pnode group status`` against real daemons: two daemons, one member each.

Two threads join group ``cli-test`` of size 2 with the Python client (one per daemon) and run
one all-reduce; then the CLI, as a subprocess, shows the group on each daemon: in JSON (world
size, members, this node's rank, the operation's counters) and for people (the name, the rank
line, every member). A group the node is not in is an error with the IPC code.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from p2pnode.ipc.groups import Group
from tests.integration.harness import LocalSwarm, local_swarm

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]

NAME = "cli-test"


def cli(swarm: LocalSwarm, i: int, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("P2PNODE_")}
    return subprocess.run(
        [sys.executable, "-m", "p2pnode", "--socket", str(swarm.node(i).socket), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_group_status(tmp_path: Path) -> None:
    with local_swarm(tmp_path, 2) as swarm:
        clients = [swarm.client(i, timeout=60) for i in (1, 2)]
        groups: dict[int, Group] = {}
        results: dict[int, np.ndarray] = {}
        errors: list[BaseException] = []

        def member(i: int) -> None:
            try:
                g = clients[i].join_group(NAME, size=2, timeout=60)
                groups[i] = g
                results[i] = g.all_reduce(np.full(1000, i + 1, np.float32), op="sum", timeout=60)
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)

        threads = [threading.Thread(target=member, args=(i,)) for i in (0, 1)]
        try:
            for t in threads:
                t.start()
            for t in threads:
                t.join(90)
            assert not errors, errors
            assert sorted(groups) == [0, 1]
            assert all(np.array_equal(results[i], np.full(1000, 3, np.float32)) for i in (0, 1))

            peer_ids = [c.status()["peer_id"] for c in clients]
            for i in (1, 2):
                r = cli(swarm, i, "group", "status", "--json")
                assert r.returncode == 0, r.stderr
                (g,) = json.loads(r.stdout)["groups"]
                assert g["name"] == NAME and g["formed"] and g["world_size"] == 2
                assert sorted(g["members"]) == sorted(peer_ids)
                assert g["members"][g["rank"]] == peer_ids[i - 1]
                assert g["rank"] == groups[i - 1].rank
                assert g["stats"]["ops"] == 1 and g["stats"].get("failures", 0) == 0
                assert g["stats"]["bytes_sent"] > 0 and g["stats"]["bytes_received"] > 0

            r = cli(swarm, 2, "group", "status", NAME)
            assert r.returncode == 0, r.stderr
            lines = r.stdout.splitlines()
            assert lines[0].startswith(f"group        {NAME} (formed, generation ")
            assert f"rank         {groups[1].rank} of 2" in lines
            assert f"{peer_ids[1]}  (this node)" in r.stdout and peer_ids[0] in r.stdout

            r = cli(swarm, 1, "--json", "group", "status", "no-such-group")
            assert r.returncode == 1
            assert json.loads(r.stderr)["error"]["code"] == "not_found"
        finally:
            for g in groups.values():
                g.leave()
            for c in clients:
                c.close()

        with swarm.client(1) as c:
            assert c.groups()["groups"] == []
        r = cli(swarm, 1, "group", "status")
        assert r.returncode == 0 and "(this node is in no group)" in r.stdout
