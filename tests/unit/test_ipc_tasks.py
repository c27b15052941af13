"""The client side of external trainers (p2pnode/ipc/tasks.py), without a daemon."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from p2pnode.blobs import tensors
from p2pnode.ipc.tasks import JobData, Task, spec_param
from p2pnode.jobs.spec import parse_spec
from p2pnode.rounds.compute import JobCompute
from p2pnode_protocols.rounds import JobSpec


def status_of(job: str, spec: JobSpec) -> dict[str, Any]:
    """What ``job.status`` says of a job (p2pnode/ipc/jobs.py), the fields JobData reads."""
    return {
        "job": job,
        "name": spec.name,
        "rounds": spec.rounds,
        "priority": spec.priority,
        "spec": {
            "min_participants": spec.min_participants,
            "max_participants": spec.max_participants,
            "shards": spec.shards,
            "round_deadline": spec.round_deadline,
            "sync": spec.sync,
            "staleness": spec.staleness,
            "stragglers": spec.stragglers,
            "min_updates": spec.min_updates,
            "learning": dict(spec.learning),
        },
    }


@pytest.mark.parametrize(
    "doc",
    [
        {"rounds": 3, "participants": {"max": 4}},
        {"participants": {"max": 5}, "data": {"shards": "iid", "seed": 7}},
        {"participants": {"max": 3}, "model": {"kind": "softmax"}, "data": {"alpha": 0.1}},
    ],
)
def test_task_data_is_the_daemons_shard(doc: dict[str, Any]) -> None:
    spec = parse_spec(doc)
    daemon = JobCompute.build("j1", spec)
    data = JobData(status_of("j1", spec))
    for shard in range(spec.shards):
        want = daemon.train.subset(daemon.shards[shard])
        x, y = data.shard(shard)
        np.testing.assert_array_equal(x, want.x)
        np.testing.assert_array_equal(y, want.y)
    with pytest.raises(ValueError, match="shard"):
        data.shard(spec.shards)


def test_spec_param_text_file_and_table(tmp_path: Path) -> None:
    text = 'name = "a"\nrounds = 2\n'
    assert spec_param(text) == text
    assert spec_param({"rounds": 2}) == {"rounds": 2}
    f = tmp_path / "job.toml"
    f.write_text(text)
    assert spec_param(f) == text
    assert spec_param(str(f)) == text
    with pytest.raises(FileNotFoundError):
        spec_param(tmp_path / "missing.toml")


def test_task_model_and_submit_calls() -> None:
    spec = parse_spec({"participants": {"max": 2}})
    calls: list[tuple[str, dict[str, Any]]] = []
    base = {"w": np.ones((2, 3), np.float32)}

    def call(method: str, params: dict[str, Any]) -> Any:
        calls.append((method, params))
        if method == "task.model":
            return {"tensors": tensors.encode(base)}
        return {"key": "k", "size": 1}

    task = Task(
        job="j1", round=3, shard=1, base_key="b", _data=JobData(status_of("j1", spec)), _call=call
    )
    np.testing.assert_array_equal(task.model()["w"], base["w"])
    assert task.submit({"w": [[2.0, 2.0, 2.0], [2.0, 2.0, 2.0]]}) == {"key": "k", "size": 1}
    method, params = calls[-1]
    assert method == "task.submit"
    assert {k: params[k] for k in ("job", "round", "shard", "base_key")} == {
        "job": "j1",
        "round": 3,
        "shard": 1,
        "base_key": "b",
    }
    np.testing.assert_array_equal(tensors.decode(params["params"])["w"], np.full((2, 3), 2.0))
    assert task.rounds == spec.rounds and task.spec["learning"]["epochs"] == 5
