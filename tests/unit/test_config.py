"""Configuration precedence and one-line errors."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from p2pnode.config import ConfigError, load_config, render_config_template, resolve_data_dir


def write(d: Path, text: str) -> None:
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.toml").write_text(text)


def test_defaults(tmp_path: Path) -> None:
    cfg = load_config(tmp_path, env={})
    assert cfg.dht.replication == 5
    assert cfg.listen == ("/ip4/127.0.0.1/tcp/4001",)
    assert cfg.metrics_port is None


def test_precedence_flags_over_env_over_file_over_defaults(tmp_path: Path) -> None:
    write(tmp_path, "[dht]\nreplication = 3\nalpha = 4\nbucket_size = 10\n")
    env = {"P2PNODE_DHT_REPLICATION": "7", "P2PNODE_DHT_ALPHA": "6"}
    cfg = load_config(tmp_path, env=env, overrides={"dht.replication": 9})
    assert cfg.dht.replication == 9  # flag
    assert cfg.dht.alpha == 6  # env
    assert cfg.dht.bucket_size == 10  # file
    assert cfg.dht.record_ttl == 86400.0  # default


def test_data_dir_precedence(tmp_path: Path) -> None:
    env = {"P2PNODE_DATA_DIR": str(tmp_path / "env")}
    assert resolve_data_dir(str(tmp_path / "flag"), env) == tmp_path / "flag"
    assert resolve_data_dir(None, env) == tmp_path / "env"
    assert resolve_data_dir(None, {}) == Path("~/.p2pnode").expanduser()


@pytest.mark.parametrize(
    "source,text,match",
    [
        (
            "file",
            "[dht]\nreplication = 99\n",
            r"^config key dht.replication \(from .*config.toml\): "
            r"must be between 1 and 20, got 99$",
        ),
        ("file", '[dht]\nreplication = "five"\n', r"dht.replication .*must be int, got 'five'"),
        ("file", 'listen = ["not-an-addr"]\n', r"^config key listen .*not a multiaddr"),
        ("file", 'bootstrap = ["/ip4/1.2.3.4/tcp/1"]\n', r"no /p2p/"),
        ("file", "colour = 3\n", r"^config key colour .*unknown setting$"),
        ("file", "[dht\n", r"not valid TOML"),
        ("env", "P2PNODE_METRICS_PORT=70000", r"metrics_port \(from \$P2PNODE_METRICS_PORT\)"),
        ("env", "P2PNODE_DHT_RECORD_TTL=nan", r"dht.record_ttl"),
    ],
)
def test_bad_values_are_one_line_naming_the_key(
    tmp_path: Path, source: str, text: str, match: str
) -> None:
    env = {}
    if source == "file":
        write(tmp_path, text)
    else:
        k, v = text.split("=", 1)
        env[k] = v
    with pytest.raises(ConfigError, match=match) as info:
        load_config(tmp_path, env=env)
    assert "\n" not in str(info.value)


def test_republish_must_be_shorter_than_ttl(tmp_path: Path) -> None:
    write(tmp_path, "[dht]\nrecord_ttl = 100\nrepublish_interval = 100\n")
    with pytest.raises(ConfigError, match="republish_interval"):
        load_config(tmp_path, env={})


def test_template_is_valid_toml_and_loads_back(tmp_path: Path) -> None:
    text = render_config_template({"listen": ["/ip4/127.0.0.1/tcp/0"], "dht.replication": 3})
    tomllib.loads(text)
    write(tmp_path, text)
    cfg = load_config(tmp_path, env={})
    assert cfg.listen == ("/ip4/127.0.0.1/tcp/0",)
    assert cfg.dht.replication == 3


def test_psk_file_is_checked(tmp_path: Path) -> None:
    (tmp_path / "psk").write_text("abc")
    cfg = load_config(tmp_path, env={}, overrides={"psk_file": str(tmp_path / "psk")})
    with pytest.raises(ConfigError, match="64 hexadecimal"):
        cfg.read_psk()
    (tmp_path / "psk").write_text("/key/swarm/psk/1.0.0/\n/base16/\n" + "ab" * 32 + "\n")
    assert cfg.read_psk() == "ab" * 32
