"""``blob get`` on a blob nobody holds: it says what it is doing and ``--timeout`` bounds the
wait (issue 15); the ``timeout`` parameter of ``blob.fetch``/``blob.get`` is checked."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from p2pnode import InvalidParams, NotFound
from p2pnode_protocols.blobs.cid import manifest_cid
from tests.integration.harness import local_swarm

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]  # two daemon processes


def cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("P2PNODE_")}
    return subprocess.run(
        [sys.executable, "-m", "p2pnode", "--data-dir", str(data_dir), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_missing_blob_fails_within_the_timeout_and_says_what_it_waits_for(tmp_path: Path) -> None:
    missing = manifest_cid(os.urandom(64))  # a well-formed key nobody holds
    # blobs.find_timeout stays at its 30 s default: --timeout is what ends the wait.
    with local_swarm(tmp_path / "net", 2) as s:
        one = s.node(1).data_dir
        t0 = time.monotonic()
        r = cli(one, "blob", "get", missing, "-o", str(tmp_path / "out"), "--timeout", "2")
        took = time.monotonic() - t0
        assert r.returncode == 1, (r.stdout, r.stderr)
        assert f"looking for providers of {missing}… (up to 2 s)" in r.stderr
        assert f"blob {missing} not found within 2 s" in r.stderr or (
            f"no provider of {missing} found within 2 s" in r.stderr
        ), r.stderr
        assert took < 15, took
        assert not (tmp_path / "out").exists()

        bad = cli(one, "blob", "get", missing, "-o", "-", "--timeout", "-1")
        assert bad.returncode == 1 and "--timeout must be" in bad.stderr

        with s.client(1) as c:
            for wrong in (0, -1, 86401, "5"):
                with pytest.raises(InvalidParams, match="timeout"):
                    c.blob_fetch(missing, timeout=wrong)  # type: ignore[arg-type]
            with pytest.raises(NotFound, match="within 1 s"):
                c.blob_get(missing, timeout=1)

        # A blob that exists comes through under a timeout, and nothing is said of providers
        # once the daemon has it.
        src = tmp_path / "src.bin"
        src.write_bytes(os.urandom(300_000))
        with s.client(2) as c2:
            key = c2.blob_put(path=src)["key"]
        out = tmp_path / "got.bin"
        r = cli(one, "blob", "get", key, "-o", str(out), "--timeout", "30")
        assert r.returncode == 0, r.stderr
        assert out.read_bytes() == src.read_bytes()
        again = cli(one, "blob", "get", key, "-o", str(tmp_path / "again.bin"))
        assert again.returncode == 0 and "looking for providers" not in again.stderr
