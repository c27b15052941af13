"""``init`` on an existing data dir names the flags it did not apply; ``config set`` applies one
(issue 15)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from p2pnode.config import ConfigError, load_config
from p2pnode.config.edit import set_config_value
from tests.unit.test_cli import run

NEW = "/ip4/0.0.0.0/tcp/4101"


def test_init_again_with_a_new_listen_says_it_was_not_applied(tmp_path: Path) -> None:
    d = tmp_path / "node"
    assert run("--data-dir", str(d), "init").returncode == 0
    r = run("--data-dir", str(d), "init", "--listen", NEW)
    assert r.returncode == 1
    assert "created nothing (already initialised)" in r.stdout
    assert "--listen was not applied" in r.stderr
    assert 'listen = ["/ip4/127.0.0.1/tcp/4001"]' in r.stderr
    assert f"config set listen {NEW}" in r.stderr
    assert "Traceback" not in r.stderr
    assert load_config(d, env={}).listen == ("/ip4/127.0.0.1/tcp/4001",)
    j = run("--data-dir", str(d), "init", "--listen", NEW, "--json")
    assert json.loads(j.stdout)["ignored"]["listen"]["given"] == [NEW]


def test_init_again_with_the_same_listen_is_quiet(tmp_path: Path) -> None:
    d = tmp_path / "node"
    assert run("--data-dir", str(d), "init", "--listen", NEW).returncode == 0
    r = run("--data-dir", str(d), "init", "--listen", NEW)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""


def test_config_set_the_command_init_suggests(tmp_path: Path) -> None:
    d = tmp_path / "node"
    assert run("--data-dir", str(d), "init").returncode == 0
    r = run("--data-dir", str(d), "config", "set", "listen", NEW)
    assert r.returncode == 0, r.stderr
    assert f'listen = ["{NEW}"]' in r.stdout and "restart" in r.stdout
    assert load_config(d, env={}).listen == (NEW,)
    r = run("--data-dir", str(d), "config", "set", "blobs.find_timeout", "nope")
    assert r.returncode == 1
    assert r.stderr.startswith("p2pnode: config key blobs.find_timeout")


def test_set_config_value_keeps_the_comments_and_checks_the_value(tmp_path: Path) -> None:
    assert run("--data-dir", str(tmp_path), "init").returncode == 0
    path = tmp_path / "config.toml"
    before = path.read_text()
    assert set_config_value(tmp_path, "blobs.find_timeout", ["12"]) == 12.0
    assert set_config_value(tmp_path, "bootstrap", []) == []
    assert set_config_value(tmp_path, "metrics_port", ["9100"]) == 9100
    assert set_config_value(tmp_path, "metrics_port", ["off"]) is None
    assert set_config_value(tmp_path, "listen", ["/ip4/0.0.0.0/tcp/1,/ip6/::/tcp/1"]) == [
        "/ip4/0.0.0.0/tcp/1",
        "/ip6/::/tcp/1",
    ]
    after = path.read_text()
    # Only the changed lines differ: every comment (docs, other defaults) is still there.
    assert len(after.splitlines()) == len(before.splitlines())
    assert sum(a != b for a, b in zip(after.splitlines(), before.splitlines(), strict=True)) == 3
    tree = tomllib.loads(after)
    assert tree["blobs"]["find_timeout"] == 12.0 and "metrics_port" not in tree
    cfg = load_config(tmp_path, env={})
    assert cfg.blobs.find_timeout == 12.0 and cfg.metrics_port is None
    for key, raw, reason in (
        ("blobs.find_timeout", ["-1"], "must be between"),
        ("blob.find_timeout", ["1"], "unknown setting"),
        ("log_level", ["a", "b"], "takes one value"),
        # Valid alone, but the whole file must load: republish must stay below the record TTL.
        ("dht.republish_interval", ["1e9"], "dht.republish_interval"),
    ):
        with pytest.raises(ConfigError, match=reason):
            set_config_value(tmp_path, key, raw)
    assert path.read_text() == after
    with pytest.raises(ConfigError, match="run p2pnode init first"):
        set_config_value(tmp_path / "none", "listen", [NEW])
