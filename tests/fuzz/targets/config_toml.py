"""A node's config file (``p2pnode.config.load_config`` reading ``<data dir>/config.toml``,
with no environment): written by hand, or by ``p2pnode init``/``config set``/``join``.
Allowed: ``ConfigError``."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

from tests.fuzz.harness import Target, instrumented

with instrumented("p2pnode.config"):
    from p2pnode.config import ConfigError, load_config
    from p2pnode.config.schema import CONFIG_FILE

_DIR = Path(tempfile.mkdtemp(prefix="fuzz-config-"))
atexit.register(shutil.rmtree, _DIR, True)


def decode(data: bytes) -> object:
    (_DIR / CONFIG_FILE).write_bytes(data)
    return load_config(_DIR, env={})


def seeds() -> list[bytes]:
    from p2pnode.config.render import render_config_template

    return [
        render_config_template().encode(),
        b'[network]\nlisten = ["/ip4/0.0.0.0/tcp/4001"]\nbootstrap = []\n'
        b"[dht]\nmax_value_size = 4096\n[consensus]\nvalidators = []\n"
        b"[blobs]\nmax_upload_rate = 0\n",
    ]


TARGET = Target(
    name="config_toml",
    decode=decode,
    allowed=(ConfigError,),
    seeds=seeds,
    max_len=16384,
    doc="`p2pnode.config.load_config`: a node's config.toml",
)
