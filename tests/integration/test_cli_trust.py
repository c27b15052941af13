"""``p2pnode ledger``, ``stake``, ``transfer``, ``gov`` and ``evidence`` against real daemons.

A committee of 4 with short governance periods: a validator unstakes and pays a peer, proposes
a parameter change that three validators vote through, lists it, reads the parameters and the
(empty) evidence; an overdraft is refused with the ledger's reason and exit code 1.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from p2pnode.cli import main
from p2pnode.consensus.genesis import genesis_validators

from .harness import local_swarm

pytestmark = pytest.mark.slow


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.timeout(240)
def test_trust_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ids = genesis_validators(tmp_path, 4)
    settings = {
        "consensus.validators": ids,
        "trust.params": ["voting_period=6", "epoch_length=4"],
    }
    with local_swarm(tmp_path, 4, settings) as swarm:
        socks = [str(swarm.node(i).socket) for i in range(1, 5)]
        rc, out, _ = _run(capsys, "--socket", socks[0], "ledger")
        assert rc == 0, out
        assert f"peer         {ids[0]}" in out and "stake        1,000" in out
        assert "validator, trainer" in out

        rc, out, _ = _run(capsys, "--socket", socks[0], "stake", "5", "--remove")
        assert rc == 0 and out.startswith("unstaked 5 at entry"), out
        rc, out, _ = _run(capsys, "--socket", socks[0], "transfer", ids[1], "2.5")
        assert rc == 0 and out.startswith(f"paid 2.5 to {ids[1]}"), out
        rc, out, err = _run(capsys, "--socket", socks[0], "transfer", ids[1], "99")
        assert rc == 1 and "refused it: balance" in err, (out, err)
        rc, out, _ = _run(capsys, "--json", "--socket", socks[1], "ledger", ids[1])
        acct = json.loads(out)
        assert acct["balance"] == 2_500_000
        assert [e["reason"] for e in acct["entries"]] == ["genesis", "transfer"]

        rc, out, _ = _run(
            capsys,
            "--socket",
            socks[1],
            "gov",
            "propose",
            "param",
            "min_participants=2",
            "base_reward=12tok",
            "--title",
            "more voices",
        )
        assert rc == 0 and out.startswith("proposal "), out
        pid = out.split()[1]
        for sock in socks[:3]:
            rc, out, _ = _run(capsys, "--socket", sock, "gov", "vote", pid, "yes")
            assert rc == 0 and out.startswith(f"voted yes on {pid}"), out
        deadline = time.monotonic() + 60
        while True:
            rc, out, _ = _run(capsys, "--socket", socks[3], "gov", "list")
            if "enacted" in out:
                break
            assert time.monotonic() < deadline, out
            time.sleep(0.5)
        assert pid in out and "min_participants=2" in out and "more voices" in out
        rc, out, _ = _run(capsys, "--socket", socks[2], "gov", "params")
        assert (
            "min_participants             2" in out
            and "base_reward                  12000000" in out
        )

        rc, out, _ = _run(capsys, "--socket", socks[0], "evidence", "list")
        assert rc == 0 and out.strip() == "(no evidence)"
        rc, out, _ = _run(capsys, "--json", "--socket", socks[0], "ledger", "--all")
        table = json.loads(out)
        assert {a["peer"] for a in table["accounts"]} >= set(ids)
        assert table["total_stake"] == 4000_000_000 - 5_000_000
