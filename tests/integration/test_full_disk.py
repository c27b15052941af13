"""A full disk (issue 21, item 1), on a real daemon whose data dir is a 64 MiB tmpfs.

The test mounts the tmpfs itself (it needs root, else it is skipped) and unmounts it at the end.
An oversized put fails with ``no_space`` naming the data dir and its free space and releases what
it wrote; a removal works while the disk is full; a later put that fits succeeds; a fetch that
cannot store stops at once; the log does not flood; a restart on the full disk says why it fails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from p2pnode import NoSpace
from tests.integration.harness import LocalSwarm, mount_tmpfs

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]
MiB = 1 << 20
DISK = 64 * MiB
DISK_SIZE = f"{DISK // MiB}m"


@pytest.fixture
def swarm(tmp_path: Path) -> Iterator[LocalSwarm]:
    """node-1 (data dir on the tmpfs) and node-2 (a provider, on the ordinary disk)."""
    swarm = LocalSwarm(
        tmp_path / "swarm", 2, {"blobs.find_timeout": 5.0, "blobs.chunk_timeout": 5.0}
    )
    data_dir = swarm.node(1).data_dir
    mount_tmpfs(data_dir, DISK_SIZE)
    try:
        swarm.start()
        swarm.wait_connected(1)
        yield swarm
    finally:
        swarm.stop()
        with contextlib.suppress(OSError):  # kept for a post-mortem: the tmpfs goes
            shutil.copy(data_dir / "daemon.log", tmp_path / "node-1.log")
        subprocess.run(["umount", "-l", str(data_dir)], check=False)


def fill(path: Path) -> None:
    """Write ``path`` until the file system is full."""
    with open(path, "ab", buffering=0) as f:  # unbuffered: nothing left to fail at close
        for block in (b"\0" * MiB, b"\0" * 4096):
            try:
                while True:
                    f.write(block)
            except OSError:
                pass


def stored(swarm: LocalSwarm) -> int:
    with swarm.client(1) as c:
        return int(c.status()["blobs"]["stored_bytes"])


def log_lines(swarm: LocalSwarm) -> int:
    return (swarm.node(1).data_dir / "daemon.log").read_bytes().count(b"\n")


def test_a_full_disk_is_an_error_the_node_recovers_from(swarm: LocalSwarm, tmp_path: Path) -> None:
    data_dir = swarm.node(1).data_dir
    small = tmp_path / "small.bin"
    small.write_bytes(os.urandom(20 * MiB))
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(80 * MiB))

    with swarm.client(1, timeout=60) as c:
        first = c.call("blob.put", {"path": str(small)})
        assert first["complete"]
        before = stored(swarm)
        # An oversized put: no_space, naming the data dir and the free space; its chunks go.
        t0 = time.monotonic()
        with pytest.raises(NoSpace) as err:
            c.call("blob.put", {"path": str(big)})
        assert str(data_dir) in err.value.message and "free" in err.value.message
        assert time.monotonic() - t0 < 30
    deadline = time.monotonic() + 5
    while stored(swarm) != before:
        assert time.monotonic() < deadline, "the failed put's chunks were not released"
        time.sleep(0.1)

    # The disk full to the last block (by something else): deletes still work.
    filler = data_dir / "filler"
    fill(filler)
    with swarm.client(1, timeout=60) as c:
        with pytest.raises(NoSpace):
            c.call("blob.put", {"data": os.urandom(2 * MiB)})
        removed = c.call("blob.remove", {"key": first["key"]})
        assert removed["freed"] == 20 * MiB
        assert stored(swarm) == 0
        # A put that fits in what the removal freed succeeds.
        later = c.call("blob.put", {"data": os.urandom(4 * MiB)})
        assert later["complete"]
        c.call("blob.gc")

    # A fetch that cannot store stops at once (not after blobs.fetch_timeout), releasing what
    # it stored, and the log grows by a bounded number of lines.
    with swarm.client(2, timeout=60) as c2:
        remote = c2.call("blob.put", {"path": str(big)})
    filler.unlink()
    fill(filler)
    lines = log_lines(swarm)
    size = stored(swarm)
    with swarm.client(1, timeout=60) as c:
        t0 = time.monotonic()
        with pytest.raises(NoSpace):
            c.call("blob.fetch", {"key": remote["key"]})
        assert time.monotonic() - t0 < 20
        assert c.call("blob.stat", {"key": later["key"]})["complete"]
    assert stored(swarm) == size
    assert log_lines(swarm) - lines < 40

    # A restart on the full disk: either it starts, or it says why it cannot, on stderr.
    swarm.stop()
    swarm.node(1).process = None
    fill(filler)
    proc = subprocess.run(
        [sys.executable, "-m", "p2pnode", "--data-dir", str(data_dir), "daemon"],
        capture_output=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("P2PNODE_")},
    )
    print(proc.returncode, proc.stderr.decode()[-3000:])
    assert proc.returncode != 0
    assert b"no space" in proc.stderr.lower() or b"disk is full" in proc.stderr.lower()
    assert str(data_dir).encode() in proc.stderr
