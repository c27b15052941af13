"""One module per fuzzed decoder; each defines ``TARGET`` (a :class:`tests.fuzz.harness.Target`).

:data:`NAMES` lists them; :func:`load` imports one (the worker does so inside atheris's
instrumentation, so nothing here imports a target eagerly).
"""

from __future__ import annotations

import importlib

from tests.fuzz.harness import Target

NAMES: tuple[str, ...] = (
    "framing",
    "dht_rpc",
    "dht_record",
    "blob_wire",
    "blob_manifest",
    "tensors",
    "heartbeat_packet",
    "pbft_message",
    "pbft_tx",
    "pbft_snapshot",
    "consensus_log",
    "rounds_message",
    "rounds_result",
    "rounds_tx",
    "job_spec_cbor",
    "trust_tx",
    "trust_evidence",
    "collectives_control",
    "collectives_part",
    "compression",
    "ipc_request",
    "job_spec_toml",
    "config_toml",
    "join_token",
)


def load(name: str) -> Target:
    if name not in NAMES:
        raise KeyError(f"unknown fuzz target {name!r} (known: {', '.join(NAMES)})")
    module = importlib.import_module(f"tests.fuzz.targets.{name}")
    target: Target = module.TARGET
    return target
