"""Chunks of unfinished uploads do not leak (issue 21, item 2), on a real daemon.

An aborted upload, a client that disconnects mid-upload and a daemon killed mid-upload all end
with ``stored_bytes`` back to the committed blobs' size and no chunk file that no blob names.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from p2pnode import Client
from tests.integration.harness import LocalSwarm, local_swarm

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]
MiB = 1 << 20
PIECE = 5 * MiB


@pytest.fixture
def node(tmp_path: Path) -> Iterator[LocalSwarm]:
    with local_swarm(tmp_path, 1) as swarm:
        yield swarm


def chunk_files(swarm: LocalSwarm) -> int:
    root = swarm.node(1).data_dir / "blobs"
    return sum(1 for p in root.glob("??/*") if not p.name.startswith("."))


def commit_one(c: Client) -> tuple[int, int]:
    """A committed blob of 3 MiB (3 chunks): (its size, its chunk count)."""
    stat = c.call("blob.put", {"data": os.urandom(3 * MiB)})
    return stat["size"], stat["chunks"]


def stored(c: Client) -> int:
    return int(c.status()["blobs"]["stored_bytes"])


def wait_stored(swarm: LocalSwarm, want: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with swarm.client(1) as c:
            got = stored(c)
        if got == want:
            return
        assert time.monotonic() < deadline, f"stored_bytes {got}, expected {want}"
        time.sleep(0.05)


def test_abort_releases_the_uploads_chunks(node: LocalSwarm) -> None:
    with node.client(1) as c:
        size, chunks = commit_one(c)
        upload = c.call("blob.upload.begin", {})["upload"]
        for _ in range(6):
            c.call("blob.upload.write", {"upload": upload, "data": os.urandom(PIECE)})
        assert stored(c) == size + 6 * PIECE
        assert c.call("blob.stats")["live_uploads"] == 1
        c.call("blob.upload.abort", {"upload": upload})
        assert stored(c) == size  # at once, not at the next GC
        assert c.call("blob.stats")["live_uploads"] == 0
    assert chunk_files(node) == chunks


def test_a_client_gone_mid_upload_leaves_no_chunks(node: LocalSwarm) -> None:
    with node.client(1) as c:
        size, chunks = commit_one(c)
    c = node.client(1)
    upload = c.call("blob.upload.begin", {})["upload"]
    for _ in range(4):
        c.call("blob.upload.write", {"upload": upload, "data": os.urandom(PIECE)})
    c.close()  # no abort, no commit
    wait_stored(node, size)
    assert chunk_files(node) == chunks


def test_a_daemon_killed_mid_upload_collects_them_at_start(node: LocalSwarm) -> None:
    with node.client(1) as c:
        size, chunks = commit_one(c)
        upload = c.call("blob.upload.begin", {})["upload"]
        # 50 chunks: more than a batch of rows, so some are recorded and some are not.
        for _ in range(10):
            c.call("blob.upload.write", {"upload": upload, "data": os.urandom(PIECE)})
        node.kill(1, signal.SIGKILL)
    node.start([1])
    with node.client(1) as c:
        assert stored(c) == size
        assert c.call("blob.gc")["stored_bytes"] == size
    assert chunk_files(node) == chunks


def test_periodic_gc_collects_nothing_live(node: LocalSwarm) -> None:
    with node.client(1) as c:
        size, _ = commit_one(c)
        upload = c.call("blob.upload.begin", {})["upload"]
        c.call("blob.upload.write", {"upload": upload, "data": os.urandom(PIECE)})
        assert c.call("blob.gc")["stored_bytes"] == size + PIECE  # a live upload's chunks stay
        stat = c.call("blob.upload.commit", {"upload": upload})
        assert stat["complete"] and stored(c) == size + PIECE
