"""The ``http.*`` settings: off by default, set from a file, the environment or ``--http-port``,
and a bad value is one line naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2pnode.config import ConfigError, load_config


def test_the_web_view_is_off_by_default(tmp_path: Path) -> None:
    cfg = load_config(tmp_path, env={})
    assert cfg.http.port == 0
    assert (cfg.http.max_clients, cfg.http.queue_size, cfg.http.read_timeout) == (8, 64, 5.0)


def test_each_source_sets_the_port(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text("[http]\nport = 8080\nmax_clients = 2\n")
    assert load_config(tmp_path, env={}).http.port == 8080
    assert load_config(tmp_path, env={"P2PNODE_HTTP_PORT": "9090"}).http.port == 9090
    flags = {"http.port": 7070}  # what `p2pnode daemon --http-port 7070` hands the loader
    cfg = load_config(tmp_path, env={"P2PNODE_HTTP_PORT": "9090"}, overrides=flags)
    assert (cfg.http.port, cfg.http.max_clients) == (7070, 2)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[http]\nport = 70000\n", r"^config key http.port .*between 0 and 65535"),
        ("[http]\nmax_clients = 0\n", r"^config key http.max_clients "),
        ("[http]\nqueue_size = 1\n", r"^config key http.queue_size "),
        ('[http]\nread_timeout = "x"\n', r"^config key http.read_timeout "),
    ],
)
def test_bad_values_are_refused_naming_the_key(tmp_path: Path, text: str, match: str) -> None:
    (tmp_path / "config.toml").write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_config(tmp_path, env={})
