"""Committees with no fault to tolerate (f = 0: one to three validators) commit on real
daemons (issue 21, item 5), through a validator and through a follower, and the
``p2pnode swarm --nodes 2 --validators 1`` of the report commits a ``consensus submit``.

The replica machine's side is ``test_committees_without_faults_to_tolerate_commit`` in
tests/protocols/test_pbft_machine.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from p2pnode.consensus.genesis import genesis_validators
from tests.integration.harness import local_swarm

pytestmark = pytest.mark.timeout(180)


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("P2PNODE_")}


@pytest.mark.parametrize("validators", [2, 3])
def test_a_committee_of_two_or_three_commits(tmp_path: Path, validators: int) -> None:
    ids = genesis_validators(tmp_path, validators)
    with local_swarm(tmp_path, validators + 1, {"consensus.validators": ids}) as swarm:
        for i in range(1, validators + 2):  # every validator, then the follower
            with swarm.client(i, timeout=30) as c:
                r = c.consensus_submit({"type": "kv_put", "key": f"k{i}", "value": b"v"})
                assert r["seq"] >= 1, r
        with swarm.client(1) as c:
            st = c.consensus_status()
        assert st["view"] == 0 and st["last_committed"] >= validators + 1, st


def test_swarm_with_one_validator_commits_a_cli_submit(tmp_path: Path) -> None:
    parent = tmp_path / "swarm"
    swarm_cmd = ["swarm", "--nodes", "2", "--validators", "1", "--dir", str(parent)]
    launcher = subprocess.Popen(
        [sys.executable, "-m", "p2pnode", *swarm_cmd],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        assert launcher.stdout is not None
        deadline = time.monotonic() + 90
        while "daemons ready" not in (line := launcher.stdout.readline()):
            assert line, f"the swarm did not start: {launcher.stderr.read()}"  # type: ignore[union-attr]
            assert time.monotonic() < deadline
        for node in ("node-1", "node-2"):
            submit = ["consensus", "submit", f"from-{node}", "v"]
            r = subprocess.run(
                [sys.executable, "-m", "p2pnode", "--data-dir", str(parent / node), *submit],
                capture_output=True,
                text=True,
                timeout=60,
                env=_env(),
            )
            assert r.returncode == 0, r.stderr
            assert r.stdout.startswith("committed at seq "), r.stdout
    finally:
        launcher.send_signal(signal.SIGTERM)  # it stops the daemons it started
        launcher.communicate(timeout=30)
