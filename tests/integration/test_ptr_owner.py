"""A pointer is found under its owner's peer id: the errors say so, and ``ptr get --owner``
takes a peer id, a node's name in the swarm dir or a data dir (issue 15)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from p2pnode import InvalidParams, NotFound
from tests.integration.harness import local_swarm

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]  # two daemon processes


def cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("P2PNODE_")}
    return subprocess.run(
        [sys.executable, "-m", "p2pnode", "--data-dir", str(data_dir), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_a_pointer_is_read_on_another_node_with_its_owner(tmp_path: Path) -> None:
    with local_swarm(tmp_path / "net", 2) as s:
        one, two = s.node(1), s.node(2)
        with s.client(1) as c1:
            key = c1.blob_put(b"weights")["key"]
            c1.ptr_set("latest-model", key)
        with s.client(2) as c2:
            with pytest.raises(NotFound, match="owner's peer id; add owner=") as e:
                c2.ptr_get("latest-model")
            assert "--owner node-N" in str(e.value)
            with pytest.raises(InvalidParams, match="not a peer id"):
                c2.ptr_get("latest-model", owner="node-1")
            assert c2.ptr_get("latest-model", owner=one.peer_id)["key"] == key

        r = cli(two.data_dir, "ptr", "get", "latest-model")
        assert r.returncode == 1 and "--owner PEER_ID or --owner node-N" in r.stderr
        for owner in (one.peer_id, "node-1", str(one.data_dir)):
            r = cli(two.data_dir, "ptr", "get", "latest-model", "--owner", owner)
            assert (r.returncode, r.stdout.strip()) == (0, key), (owner, r.stderr)
        r = cli(two.data_dir, "ptr", "get", "latest-model", "--owner", "node-9")
        assert r.returncode == 1
        assert f"no {two.data_dir.parent / 'node-9' / 'identity.key'}" in r.stderr
        assert "give the owner's peer id" in r.stderr
