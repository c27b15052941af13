"""The CLI as a person meets it: one-line errors, exit codes, init."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("P2PNODE_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "p2pnode", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=full_env,
    )


def test_init_creates_a_private_identity_and_a_commented_config(tmp_path: Path) -> None:
    d = tmp_path / "node"
    first = run("--data-dir", str(d), "init", "--json")
    assert first.returncode == 0, first.stderr
    assert (d / "identity.key").stat().st_mode & 0o777 == 0o600
    assert "# How many of the closest peers" in (d / "config.toml").read_text()
    again = run("--data-dir", str(d), "init", "--json")
    import json

    assert json.loads(again.stdout)["peer_id"] == json.loads(first.stdout)["peer_id"]
    assert json.loads(again.stdout)["created"] == []


def test_no_daemon_is_one_line_and_exit_1(tmp_path: Path) -> None:
    for args in (["status"], ["dht", "get", "x"], ["connect", "/ip4/127.0.0.1/tcp/1"]):
        r = run("--data-dir", str(tmp_path), *args)
        assert r.returncode == 1
        assert r.stderr.strip().count("\n") == 0
        assert "no daemon is running" in r.stderr
        assert "Traceback" not in r.stderr


def test_bad_config_stops_the_daemon_with_one_line(tmp_path: Path) -> None:
    assert run("--data-dir", str(tmp_path), "init").returncode == 0
    r = run("--data-dir", str(tmp_path), "daemon", "--listen", "nonsense")
    assert r.returncode == 1
    assert r.stderr.startswith("p2pnode: config key listen (from command line)")
    assert "Traceback" not in r.stderr


def test_daemon_without_init_says_what_to_do(tmp_path: Path) -> None:
    r = run("--data-dir", str(tmp_path / "empty"), "daemon")
    assert r.returncode == 1
    assert "run 'p2pnode init' first" in r.stderr


def test_env_sets_the_data_dir(tmp_path: Path) -> None:
    r = run("init", env={"P2PNODE_DATA_DIR": str(tmp_path / "fromenv")})
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "fromenv" / "identity.key").exists()
