"""The CLI's output against real daemons: what ``consensus submit``, ``log``, ``members``,
``disconnect`` and ``get_tensors`` say to a person.

Two daemons: node-1 is a committee of one (it executes, so its submit result carries the state
machine's "ok"), node-2 a follower (it only learns "committed"): the CLI must say the same.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from p2pnode.blobs.tensors import MEDIA_TYPE, TensorCodecError
from p2pnode.consensus.genesis import genesis_validators
from tests.integration.harness import LocalSwarm, local_swarm

pytestmark = pytest.mark.timeout(150)


def cli(swarm: LocalSwarm, i: int, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("P2PNODE_")}
    return subprocess.run(
        [sys.executable, "-m", "p2pnode", "--socket", str(swarm.node(i).socket), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_cli_output_against_daemons(tmp_path: Path) -> None:
    ids = genesis_validators(tmp_path, 1)
    with local_swarm(tmp_path, 2, {"consensus.validators": ids}) as swarm:
        # submit says the same word through a validator and through a follower, and names
        # the lane that signed it; log shows that lane on the entry.
        said = {}
        for i in (1, 2):
            r = cli(swarm, i, "consensus", "submit", f"k{i}", f"v{i}")
            assert r.returncode == 0, r.stderr
            m = re.fullmatch(r"committed at seq (\d+), view 0, as (lane …\S{10}#\d+)\n", r.stdout)
            assert m, r.stdout
            said[i] = (int(m[1]), m[2])
        assert said[1][1] != said[2][1]  # lanes of two nodes
        r = cli(swarm, 2, "log")
        assert r.returncode == 0, r.stderr
        for i, (seq, lane) in said.items():
            row = next(line for line in r.stdout.splitlines() if f"kv_put k{i}=v{i}" in line)
            assert row.split()[0] == str(seq) and lane in row

        # members: this node's own row has no HEARD age, in the table and in JSON.
        r = cli(swarm, 1, "members")
        assert r.returncode == 0, r.stderr
        me = next(line for line in r.stdout.splitlines() if line.startswith("*"))
        assert me.split()[3] == "-", me
        assert "{" not in r.stdout.splitlines()[-1]  # key=value pairs, not a Python dict
        rows = json.loads(cli(swarm, 1, "members", "--json").stdout)["members"]
        assert [m["last_heard"] for m in rows if m["self"]] == [None]

        # disconnect, and the JSON error for a bad peer id (exit 1).
        other = ids[0]
        r = cli(swarm, 2, "disconnect", other)
        assert r.returncode == 0, r.stderr
        assert r.stdout in (f"disconnected from {other}\n", f"was not connected to {other}\n")
        r = cli(swarm, 2, "disconnect", "not-a-peer", "--json")
        assert r.returncode == 1
        assert json.loads(r.stderr)["error"]["code"] == "invalid_params"

        # get_tensors on a blob that is not tensors says what the blob is.
        with swarm.client(1) as c:
            key = c.blob_put(b"hello", media_type="text/plain")["key"]
            with pytest.raises(TensorCodecError) as err:
                c.get_tensors(key)
        assert str(err.value) == (
            f"blob {key} is 'text/plain' (5 bytes), not tensors: get_tensors reads blobs"
            f" stored by put_tensors (media type {MEDIA_TYPE})"
        )
