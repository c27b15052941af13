"""Job specs: TOML parsing (p2pnode/jobs/spec.py), defaults, one-line errors naming the key, and
the canonical round trip of :class:`p2pnode_protocols.rounds.JobSpec` through a committed
CreateJob."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pnode.jobs.spec import (
    DEFAULT_LEARNING,
    SpecError,
    load_spec,
    parse_spec,
    spec_from_options,
)
from p2pnode_protocols.machine import RemoteProtocolError
from p2pnode_protocols.rounds import Capabilities, JobSpec, decode_spec, encode_spec

pytestmark = pytest.mark.timeout(60)


def _error(doc: dict[str, Any]) -> str:
    with pytest.raises(SpecError) as info:
        parse_spec(doc)
    msg = str(info.value)
    assert "\n" not in msg, msg
    return msg


# -- defaults ------------------------------------------------------------------------------------


def test_empty_spec_takes_every_default() -> None:
    spec = parse_spec({})
    assert spec == JobSpec(learning=DEFAULT_LEARNING)
    assert (spec.name, spec.rounds, spec.priority) == ("job", 20, 0)
    assert (spec.min_participants, spec.max_participants, spec.shards) == (1, 8, 8)
    assert (spec.sync, spec.staleness, spec.stragglers, spec.min_updates) == ("bsp", 0, "drop", 1)
    assert spec.round_deadline == 30.0
    assert spec.capabilities == Capabilities()
    assert dict(spec.learning) == DEFAULT_LEARNING


def test_shards_default_to_max_participants() -> None:
    assert parse_spec({"participants": {"max": 5}}).shards == 5
    assert parse_spec({"participants": {"max": 5, "shards": 7}}).shards == 7


def test_tables_map_to_flat_learning_keys() -> None:
    spec = parse_spec(
        {
            "name": "digits-diloco",
            "rounds": 3,
            "priority": 7,
            "model": {"kind": "softmax", "hidden": [], "init_seed": 4},
            "data": {"source": "digits", "shards": "iid", "alpha": 2, "seed": 9},
            "local": {"epochs": 2, "batch_size": 16, "lr": 0.05, "schedule": "constant"},
            "outer": {"optimizer": "sgd", "lr": 0.7, "momentum": 0.9, "nesterov": True},
            "aggregation": {"rule": "median", "f": 1, "mixing": True},
            "compression": {"kind": "topk", "ratio": 0.1, "error_feedback": False},
            "sync": {
                "policy": "bounded",
                "staleness": 2,
                "deadline": 5,
                "stragglers": "wait",
                "min_updates": 3,
            },
            "participants": {"min": 2, "max": 4},
            "capabilities": {"min_cpu_cores": 2, "min_memory_mb": 512, "gpu": False},
        }
    )
    lr = spec.learning
    assert (lr["model"], lr["hidden"], lr["init_seed"]) == ("softmax", [], 4)
    assert (lr["data"], lr["shard"], lr["alpha"], lr["seed"]) == ("digits", "iid", 2.0, 9)
    assert type(lr["alpha"]) is float  # ints given for floats are normalised
    assert (lr["epochs"], lr["batch_size"], lr["local_lr"]) == (2, 16, 0.05)
    assert (lr["outer"], lr["outer_lr"], lr["outer_momentum"], lr["nesterov"]) == (
        "sgd",
        0.7,
        0.9,
        True,
    )
    assert (lr["rule"], lr["f"], lr["mixing"]) == ("median", 1, True)
    assert (lr["compression"], lr["ratio"], lr["error_feedback"]) == ("topk", 0.1, False)
    assert (spec.sync, spec.staleness, spec.stragglers, spec.min_updates) == (
        "bounded",
        2,
        "wait",
        3,
    )
    assert spec.round_deadline == 5.0 and type(spec.round_deadline) is float
    assert (spec.min_participants, spec.max_participants, spec.shards) == (2, 4, 4)
    assert spec.capabilities == Capabilities(min_cpu_cores=2, min_memory_mb=512)
    assert (spec.name, spec.rounds, spec.priority) == ("digits-diloco", 3, 7)


def test_load_spec_reads_toml(tmp_path: Path) -> None:
    path = tmp_path / "job.toml"
    path.write_text('name = "t"\nrounds = 2\n[outer]\noptimizer = "adam"\nlr = 0.01\n')
    spec = load_spec(path)
    assert (spec.name, spec.rounds, spec.learning["outer"]) == ("t", 2, "adam")


def test_load_spec_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read") as info:
        load_spec(tmp_path / "missing.toml")
    assert "\n" not in str(info.value)
    bad = tmp_path / "bad.toml"
    bad.write_text("rounds = = 3\n")
    with pytest.raises(SpecError, match="not TOML") as info:
        load_spec(bad)
    assert "\n" not in str(info.value)


def test_spec_from_options_mixes_flat_learning_and_scheduling_keys() -> None:
    spec = spec_from_options(rule="krum", f=1, outer_lr=1, rounds=4, max_participants=5)
    assert (spec.learning["rule"], spec.learning["outer_lr"], spec.rounds) == ("krum", 1.0, 4)
    assert spec.shards == 5 and spec.min_updates == 5  # Krum with f = 1 needs 5 inputs
    with pytest.raises(SpecError, match=r"aggregation\.rule"):
        spec_from_options(rule="mean")
    with pytest.raises(SpecError, match="bogus"):
        spec_from_options(bogus=1)


# -- errors: one line, naming the key --------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "key"),
    [
        ({"bogus": 1}, "'bogus'"),
        ({"model": {"kindx": "mlp"}}, "model.kindx"),
        ({"data": {"shard": "iid"}}, "data.shard"),
        ({"sync": {"polcy": "bsp"}}, "sync.polcy"),
        ({"participants": {"count": 3}}, "participants.count"),
        ({"capabilities": {"cpu": 1}}, "capabilities.cpu"),
    ],
)
def test_unknown_keys_are_errors(doc: dict[str, Any], key: str) -> None:
    msg = _error(doc)
    assert "unknown key" in msg and key in msg


@pytest.mark.parametrize(
    ("doc", "key"),
    [
        ({"name": ""}, "name"),
        ({"name": "x" * 65}, "name"),
        ({"rounds": 0}, "rounds"),
        ({"rounds": "5"}, "rounds"),
        ({"rounds": True}, "rounds"),
        ({"priority": 5000}, "priority"),
        ({"model": 3}, "model"),
        ({"model": {"kind": "resnet"}}, "model.kind"),
        ({"model": {"hidden": [0]}}, "model.hidden"),
        ({"model": {"hidden": 128}}, "model.hidden"),
        ({"model": {"init_seed": -1}}, "model.init_seed"),
        ({"model": {"init_key": 5}}, "model.init_key"),
        ({"data": {"source": "mnist"}}, "data.source"),
        ({"data": {"source": "path"}}, "data.path"),
        ({"data": {"shards": "x"}}, "data.shards"),
        ({"data": {"alpha": 0}}, "data.alpha"),
        ({"data": {"test_fraction": 0.95}}, "data.test_fraction"),
        ({"local": {"epochs": 1.5}}, "local.epochs"),
        ({"local": {"batch_size": 0}}, "local.batch_size"),
        ({"local": {"lr": 0}}, "local.lr"),
        ({"local": {"lr": float("nan")}}, "local.lr"),
        ({"local": {"momentum": 1}}, "local.momentum"),
        ({"local": {"schedule": "step"}}, "local.schedule"),
        ({"outer": {"optimizer": "lamb"}}, "outer.optimizer"),
        ({"outer": {"lr": "1"}}, "outer.lr"),
        ({"outer": {"nesterov": 1}}, "outer.nesterov"),
        ({"outer": {"schedule": "step"}}, "outer.schedule"),
        ({"aggregation": {"rule": "mean"}}, "aggregation.rule"),
        ({"aggregation": {"f": 33}}, "aggregation.f"),
        ({"aggregation": {"mixing": "yes"}}, "aggregation.mixing"),
        ({"compression": {"kind": "zip"}}, "compression.kind"),
        ({"compression": {"ratio": 2}}, "compression.ratio"),
        ({"compression": {"error_feedback": "x"}}, "compression.error_feedback"),
        ({"sync": {"policy": "async"}}, "sync.policy"),
        ({"sync": {"staleness": 2}}, "sync.staleness"),
        ({"sync": {"policy": "bounded", "staleness": 65}}, "sync.staleness"),
        ({"sync": {"stragglers": "kill"}}, "sync.stragglers"),
        ({"sync": {"min_updates": 0}}, "sync.min_updates"),
        ({"sync": {"min_updates": 9}}, "sync.min_updates"),
        ({"participants": {"min": 0}}, "participants.min"),
        ({"participants": {"max": 65}}, "participants.max"),
        ({"participants": {"min": 3, "max": 2}}, "participants.min"),
        ({"capabilities": {"min_cpu_cores": -1}}, "capabilities.min_cpu_cores"),
        ({"capabilities": {"min_memory_mb": "1G"}}, "capabilities.min_memory_mb"),
        ({"capabilities": {"gpu": 1}}, "capabilities.gpu"),
        ({"capabilities": []}, "capabilities"),
    ],
)
def test_every_error_is_one_line_naming_the_key(doc: dict[str, Any], key: str) -> None:
    assert key in _error(doc)


@pytest.mark.parametrize(
    ("doc", "key"),
    [
        ({"sync": {"deadline": 0.01}}, "sync.deadline"),
        ({"participants": {"shards": 65}}, "participants.shards"),
        ({"participants": {"shards": 1, "min": 2}}, "participants.shards"),
    ],
)
def test_scheduling_errors_use_the_toml_key(doc: dict[str, Any], key: str) -> None:
    assert key in _error(doc)


@pytest.mark.parametrize("key", ["mixing", "error_feedback"])
def test_tristate_keys_refuse_ints(key: str) -> None:
    table = "aggregation" if key == "mixing" else "compression"
    assert f"{table}.{key}" in _error({table: {key: 1}})


# -- canonical round trip ------------------------------------------------------------------------


def test_round_trip_of_the_default_spec() -> None:
    spec = parse_spec({})
    data = encode_spec(spec)
    assert decode_spec(data) == spec
    assert encode_spec(decode_spec(data)) == data


def test_equal_specs_encode_to_equal_bytes() -> None:
    # An int given for a float is normalised, so both spellings commit the same bytes.
    a = parse_spec({"outer": {"lr": 1}, "sync": {"deadline": 5}})
    b = parse_spec({"outer": {"lr": 1.0}, "sync": {"deadline": 5.0}})
    assert encode_spec(a) == encode_spec(b)


_specs = st.builds(
    lambda name, rounds, mx, extra, deadline, bounded, stale, strag, prio, cpu, mem, gpu, lr: (
        JobSpec(
            name=name,
            rounds=rounds,
            min_participants=1,
            max_participants=mx,
            shards=mx + extra,
            round_deadline=deadline,
            sync="bounded" if bounded else "bsp",
            staleness=stale if bounded else 0,
            stragglers=strag,
            min_updates=1,
            priority=prio,
            capabilities=Capabilities(min_cpu_cores=cpu, min_memory_mb=mem, gpu=gpu),
            learning=lr,
        )
    ),
    st.text(min_size=1, max_size=64),
    st.integers(1, 100_000),
    st.integers(1, 32),
    st.integers(0, 32),
    st.floats(0.05, 86400, allow_nan=False),
    st.booleans(),
    st.integers(0, 64),
    st.sampled_from(["drop", "wait"]),
    st.integers(-1000, 1000),
    st.integers(0, 1 << 30),
    st.integers(0, 1 << 30),
    st.booleans(),
    st.dictionaries(
        st.text(max_size=12),
        st.one_of(
            st.integers(-(1 << 40), 1 << 40),
            st.floats(allow_nan=False),
            st.text(max_size=8),
            st.booleans(),
            st.lists(st.integers(0, 4096), max_size=4),
        ),
        max_size=6,
    ),
)


@given(_specs)
def test_any_spec_round_trips_canonically(spec: JobSpec) -> None:
    data = encode_spec(spec)
    back = decode_spec(data)
    assert back == spec
    assert encode_spec(back) == data


def test_decode_refuses_a_non_canonical_spec() -> None:
    import cbor2

    body = cbor2.loads(encode_spec(JobSpec()))
    # The same map, not in canonical key order.
    shuffled = cbor2.dumps(dict(reversed(list(body.items()))))
    with pytest.raises(RemoteProtocolError, match="canonical"):
        decode_spec(shuffled)
    # A deadline as an int decodes to the same spec but is not its canonical encoding.
    body["round_deadline"] = 30
    with pytest.raises(RemoteProtocolError, match="canonical"):
        decode_spec(cbor2.dumps(body, canonical=True))


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b.pop("rounds"),
        lambda b: b.pop("capabilities"),
        lambda b: b.update(capabilities=[1, 2]),
        lambda b: b.update(learning=[1]),
        lambda b: b.update(extra=1),
        lambda b: b.update(rounds=0),
        lambda b: b.update(sync="async"),
        lambda b: b.update(capabilities=[0, 0, 1]),
    ],
)
def test_decode_refuses_malformed_specs(mutate: Any) -> None:
    import cbor2

    body = cbor2.loads(encode_spec(JobSpec()))
    mutate(body)
    with pytest.raises(RemoteProtocolError, match="job spec"):
        decode_spec(cbor2.dumps(body, canonical=True))


@pytest.mark.parametrize("data", [b"", b"\xff", b"\x80", b"\x01", b"\x81" * 20 + b"\x00", b"\xa0"])
def test_decode_refuses_garbage(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_spec(data)


def test_min_updates_follows_the_rule() -> None:
    """A robust rule needs enough inputs: min_updates defaults to its minimum, a smaller one
    (or too few participants) is refused naming the keys."""
    assert parse_spec({"aggregation": {"rule": "trimmed_mean", "f": 2}}).min_updates == 5
    assert parse_spec({}).min_updates == 1
    with pytest.raises(SpecError, match=r"sync\.min_updates must be at least 3"):
        parse_spec({"aggregation": {"rule": "median", "f": 1}, "sync": {"min_updates": 2}})
    with pytest.raises(SpecError, match=r"participants\.max must be at least 7"):
        parse_spec({"aggregation": {"rule": "krum", "f": 2}, "participants": {"max": 4}})
