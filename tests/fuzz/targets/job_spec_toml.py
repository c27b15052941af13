"""A job spec file (``p2pnode.jobs.spec.load_spec``): the TOML a user hands ``p2pnode job
create`` (and, as text, the ``job.create`` IPC method). Allowed: ``SpecError``."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

from tests.fuzz.harness import Target, instrumented

with instrumented("p2pnode.jobs", "p2pnode_protocols.rounds"):
    from p2pnode.jobs.spec import SpecError, load_spec

_DIR = Path(tempfile.mkdtemp(prefix="fuzz-spec-"))
atexit.register(shutil.rmtree, _DIR, True)
_PATH = _DIR / "job.toml"


def decode(data: bytes) -> object:
    _PATH.write_bytes(data)
    return load_spec(_PATH)


EXAMPLE = b"""name = "digits-diloco"
rounds = 20
priority = 3

[model]
kind = "mlp"
hidden = [128]

[data]
shards = "dirichlet"
alpha = 0.5

[local]
epochs = 5
lr = 0.1

[outer]
optimizer = "sgd"
lr = 0.7
momentum = 0.9
nesterov = true

[aggregation]
rule = "median"
f = 1

[sync]
policy = "bsp"
deadline = 30
stragglers = "drop"

[participants]
min = 2
max = 8

[verify]
spot_check = 0.5
"""


def seeds() -> list[bytes]:
    return [EXAMPLE, b'name = "j"\nrounds = 3\n', b""]


TARGET = Target(
    name="job_spec_toml",
    decode=decode,
    allowed=(SpecError,),
    seeds=seeds,
    doc="`p2pnode.jobs.spec.load_spec`: a job spec file",
)
