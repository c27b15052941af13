"""``p2pnode job ...`` and ``p2pnode model get`` against real daemons (a committee of 4).

One short job (3 rounds) is created from a spec file, listed, watched to its end (``watch``
without a terminal prints the final status), its round-2 model written as ``.npz``; a second
job is cancelled; an unknown job is an error with the IPC code.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from p2pnode.cli import main
from p2pnode.consensus.genesis import genesis_validators

from .harness import local_swarm

pytestmark = pytest.mark.slow

SPEC = """name = "cli-test"
rounds = {rounds}
[participants]
max = 4
[sync]
deadline = 10
"""


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.timeout(240)
def test_job_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = {"consensus.validators": genesis_validators(tmp_path, 4)}
    with local_swarm(tmp_path, 4, settings) as swarm:
        sock = str(swarm.node(1).socket)
        spec = tmp_path / "job.toml"
        spec.write_text(SPEC.format(rounds=3))
        rc, out, _ = _run(capsys, "--socket", sock, "job", "create", str(spec))
        assert rc == 0
        job = out.strip()
        assert len(job) >= 16 and " " not in job

        rc, out, _ = _run(capsys, "--socket", sock, "job", "list", "--json")
        assert rc == 0 and [j["job"] for j in json.loads(out)["jobs"]] == [job]

        # Without a terminal, watch waits for the end and prints the final status.
        rc, out, _ = _run(capsys, "--socket", sock, "job", "watch", job[:12])
        assert rc == 0, out
        assert "status       completed" in out and "3 of 3 committed" in out
        rc, out, _ = _run(capsys, "--json", "--socket", sock, "job", "status", job[:10])
        s = json.loads(out)
        assert s["status"] == "completed" and [h["round"] for h in s["history"]] == [1, 2, 3]
        assert all(h["phases"].get("total", 0) > 0 for h in s["history"])

        npz = tmp_path / "model.npz"
        rc, out, _ = _run(
            capsys, "--socket", sock, "model", "get", job, "--round", "2", "-o", str(npz)
        )
        assert rc == 0 and "round 2" in out
        with np.load(npz) as z:
            assert len(z.files) >= 2 and all(z[f].size for f in z.files)

        spec.write_text(SPEC.format(rounds=100))
        rc, out, _ = _run(capsys, "--socket", sock, "job", "create", "--json", str(spec))
        second = json.loads(out)["job"]
        rc, out, _ = _run(capsys, "--socket", sock, "job", "cancel", second, "--reason", "test")
        assert rc == 0 and "cancelled" in out
        rc, out, _ = _run(capsys, "--json", "--socket", sock, "job", "status", second)
        assert json.loads(out)["status"] == "cancelled"

        rc, out, err = _run(capsys, "--json", "--socket", sock, "job", "status", "nosuchjob")
        assert rc == 1 and json.loads(err)["error"]["code"] == "not_found"
