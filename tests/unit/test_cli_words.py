"""The CLI's words as a person reads them: help, usage errors, errors under ``--json``, and the
tables of ``members`` and ``consensus``. No daemon: ``main`` runs in this process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from p2pnode.cli import _parser, main
from p2pnode.consensus.cli import render_entry, render_status, render_submitted
from p2pnode.membership.cli import render

pytestmark = pytest.mark.timeout(30)
Capture = pytest.CaptureFixture[str]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:  # --help
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def help_of(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code, out, _ = run(capsys, *argv, "--help")
    assert code == 0
    return " ".join(out.split())  # argparse wraps to the terminal's width


# -- help ------------------------------------------------------------------------------------


def test_kv_commands_say_two_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert "store VALUE under KEY in the DHT (two arguments)" in help_of(capsys, "dht")
    assert "commit VALUE under KEY (two arguments; waits for it)" in help_of(capsys, "consensus")
    for cmd in (("dht", "put"), ("consensus", "submit")):
        text = help_of(capsys, *cmd)
        assert "KEY=VALUE" not in text
        assert "KEY the record's name" in text or "KEY the key to write" in text
        assert "VALUE the value, as text" in text


def test_swarm_help_shows_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    text = help_of(capsys, "swarm")
    assert "--nodes N how many daemons to run (default: 5)" in text
    assert "--validators K node-1..K form the genesis PBFT committee" in text
    assert "(default: 0, consensus off;" in text


def test_every_argument_has_help() -> None:
    """Walk every parser: no argument is left without a help text."""
    import argparse

    missing = []

    def walk(parser: argparse.ArgumentParser) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    walk(sub)
            elif not action.help:
                missing.append(f"{parser.prog} {action.dest}")

    walk(_parser())
    assert missing == []


def test_blob_put_help_shows_the_default_media_type(capsys: pytest.CaptureFixture[str]) -> None:
    text = help_of(capsys, "blob", "put")
    assert "FILE the file to store ('-' reads stdin)" in text
    assert "(default: application/octet-stream)" in text
    assert "--seq N the version: must be above the last one" in help_of(capsys, "ptr", "set")


# -- usage errors ----------------------------------------------------------------------------


def test_dht_put_key_equals_value_says_two_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "dht", "put", "foo=bar")
    assert code == 2 and out == ""
    assert err == (
        "usage: p2pnode dht put [-h] [--json] [-f FILE] KEY [VALUE]\n"
        "p2pnode dht put: error: give KEY and VALUE as two arguments: p2pnode dht put foo bar\n"
    )
    code, _, err = run(capsys, "consensus", "submit", "a=b")
    assert code == 2
    assert err.endswith(
        "error: give KEY and VALUE as two arguments: p2pnode consensus submit a b\n"
    )
    code, _, err = run(capsys, "dht", "put", "foo")
    assert code == 2 and err.endswith("error: give a VALUE after KEY (or -f FILE)\n")


def test_log_from_zero_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "log", "--from", "0")
    assert code == 2 and err.endswith("p2pnode log: error: argument --from: must be at least 1\n")


# -- errors under --json ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["--json", "dht", "put", "foo=bar"],
        ["dht", "put", "foo=bar", "--json"],
        ["--json", "no-such-command"],
        ["log", "--from", "0", "--json"],
    ],
)
def test_usage_errors_as_json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    error = json.loads(err)["error"]
    assert error["code"] == "usage"
    assert error["message"].startswith("p2pnode")


def test_errors_as_json_keep_exit_1(capsys: Capture, tmp_path: Path) -> None:
    code, out, err = run(capsys, "--data-dir", str(tmp_path), "status", "--json")
    assert code == 1 and out == ""
    error = json.loads(err)["error"]
    assert error["code"] == "not_running"
    assert error["message"].startswith(f"no daemon is running at {tmp_path}/p2pnode.sock")
    code, _, err = run(capsys, "--data-dir", str(tmp_path), "--json", "blob", "put", str(tmp_path))
    assert code == 1
    message = f"{tmp_path} is a directory: blob put stores one file"
    assert json.loads(err) == {"error": {"code": "error", "message": message}}


# -- errors a person meets -------------------------------------------------------------------


def test_no_daemon_says_how_to_start_one(capsys: Capture, tmp_path: Path) -> None:
    code, out, err = run(capsys, "--data-dir", str(tmp_path), "status")
    assert code == 1 and out == ""
    assert err == (
        f"p2pnode: no daemon is running at {tmp_path}/p2pnode.sock; start one with"
        " `p2pnode daemon` (or several with `p2pnode swarm`)\n"
    )


def test_blob_put_of_a_directory_says_so(capsys: Capture, tmp_path: Path) -> None:
    code, _, err = run(capsys, "--data-dir", str(tmp_path), "blob", "put", str(tmp_path))
    assert code == 1
    assert err == f"p2pnode: {tmp_path} is a directory: blob put stores one file\n"
    code, _, err = run(capsys, "--data-dir", str(tmp_path), "blob", "put", str(tmp_path / "x"))
    assert code == 1 and err == f"p2pnode: {tmp_path / 'x'}: no such file\n"


def test_disconnect_is_a_command(capsys: Capture, tmp_path: Path) -> None:
    assert "PEER_ID the peer's id" in help_of(capsys, "disconnect")
    code, _, err = run(capsys, "--data-dir", str(tmp_path), "disconnect", "QmX")
    assert code == 1 and "no daemon is running" in err


# -- tables ----------------------------------------------------------------------------------

SELF = "12D3KooWSelfSelfSelfSelfSelfSelfSelfSelfSelfAAAAAAAA"
OTHER = "12D3KooWOtherOtherOtherOtherOtherOtherOtherBBBBBBBBB"


def member(peer: str, *, me: bool, heard: float | None, state: str = "alive") -> dict[str, object]:
    return {
        "peer_id": peer,
        "self": me,
        "state": state,
        "incarnation": 7,
        "last_heard": heard,
        "suspicion": 0.0,
        "reliability": 1.0,
        "capabilities": {"cpu_cores": 2, "memory_mb": 2048, "gpu": None},
        "load": {"free_slots": 1, "tasks_running": 0},
        "models": [],
    }


def test_members_table() -> None:
    result = {
        "members": [
            member(SELF, me=True, heard=-0.0),
            member(OTHER, me=False, heard=0.25),
            member(OTHER[:-1] + "C", me=False, heard=None, state="dead"),
        ],
        "awareness": 0,
        "counters": {"duplicate": 21, "stale": 0, "bad_signature": 2},
    }
    assert render(result).splitlines() == [
        "PEER           STATE              INC  HEARD    PHI   REL CPU MEM GiB GPU        "
        "SLOTS TASKS MODELS",
        "*…elfAAAAAAAA  alive                7      -      -  1.00   2     2.0 -              "
        "1     0 -",
        " …erBBBBBBBBB  alive                7   0.2s    0.0  1.00   2     2.0 -              "
        "1     0 -",
        " …erBBBBBBBBC  DEAD                 7      -      -  1.00   2     2.0 -              "
        "1     0 -",
        "2 alive, 1 dead; awareness 0; counters bad_signature=2 duplicate=21",
    ]


def test_consensus_status_rows_line_up() -> None:
    status = {
        "role": "validator",
        "view": 0,
        "in_view_change": False,
        "primary": SELF,
        "last_committed": 3,
        "log_last": 3,
        "stable_checkpoint": None,
        "f": 1,
        "committee": [SELF, OTHER],
    }
    lines = render_status(status).splitlines()
    assert lines[-2:] == [f"committee (f=1)    {SELF}", f"                   {OTHER}"]
    # Every value starts in the same column.
    assert {len(line) - len(line[19:]) for line in lines} == {19}
    assert all(line[18] == " " and line[19] != " " for line in lines)


def test_submit_says_committed_through_any_node() -> None:
    cert = {"view": 0}
    base = {"seq": 4, "certificate": cert, "client": OTHER, "request_id": (3 << 32) + 2}
    through_validator = render_submitted({**base, "status": "ok"})
    through_follower = render_submitted({**base, "status": "committed"})
    assert (
        through_validator
        == through_follower
        == ("committed at seq 4, view 0, as lane …rBBBBBBBBB#2")
    )
    assert render_submitted({**base, "status": "duplicate"}).endswith("(state machine: duplicate)")


def test_log_names_the_lane_as_submit_does() -> None:
    entry = {
        "seq": 4,
        "digest": "ab" * 32,
        "certificate": {"view": 0},
        "txs": [
            {
                "client": OTHER,
                "request_id": (3 << 32) + 2,
                "tx": {"type": "kv_put", "key": "k", "value": b"v"},
                "status": "ok",
            }
        ],
    }
    assert render_entry(entry) == ["       4  view 0  lane …rBBBBBBBBB#2  kv_put k=v  ok"]


def test_tensor_decode_of_other_bytes_names_the_format() -> None:
    from p2pnode.blobs.tensors import MEDIA_TYPE, TensorCodecError, decode

    for data in (b"\x63abc", b"", b"\x83\x61x"):
        with pytest.raises(TensorCodecError) as err:
            decode(data)
        assert str(err.value) == (
            "not an encoded state dict: the bytes do not start with the tensors envelope"
            f" (what put_tensors stores, media type {MEDIA_TYPE})"
        )


def test_consensus_status_shows_a_primary_declared_dead() -> None:
    status = {
        "role": "validator",
        "view": 0,
        "in_view_change": False,
        "primary": OTHER,
        "primary_suspected": True,
        "dead_members": [OTHER],
        "last_committed": 3,
        "log_last": 3,
        "stable_checkpoint": None,
        "f": 1,
        "committee": [OTHER, SELF],
    }
    lines = render_status(status).splitlines()
    assert lines[2] == f"primary            {OTHER}  (declared dead: a view change is on its way)"
    assert lines[-1] == f"dead members       {OTHER}"
    assert all(line[18] == " " and line[19] != " " for line in lines)
