"""External trainers on the client side: the :class:`Task` a user's script trains.

``Client.tasks(job)`` (and ``AsyncClient.tasks(job)``) long-poll ``task.next`` on one
connection, which makes that connection this node's trainer for the job until it closes, and
yield a task per round this node is given, in the spirit of Flower's ``NumPyClient``::

    for task in client.tasks(job):
        params = task.model()        # names -> numpy arrays, the round's base model
        x, y = task.data()           # this task's shard of the job's training data
        task.submit(train(params, x, y))

The data is derived on the client exactly as the daemon derives it (``JobCompute.build`` of the
job's committed spec, then ``.train`` and ``.shards[shard]``), so nothing but the model travels
over the socket. The helpers here are shared by both clients and never import trio.
"""

from __future__ import annotations

import tomllib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "JOB_POLL",
    "MAX_WAIT",
    "REPLY_SLACK",
    "AsyncTask",
    "JobData",
    "Task",
    "decode_params",
    "encode_params",
    "spec_param",
]

#: seconds a reply to ``task.next`` may take beyond the wait it was asked for.
REPLY_SLACK = 15.0
#: the daemon's cap on one ``task.next`` wait (p2pnode/ipc/jobs.py MAX_TASK_WAIT).
MAX_WAIT = 300.0
#: seconds between looks for a job committed elsewhere that this node has not applied yet.
JOB_POLL = 0.2


def spec_param(spec: str | Path | Mapping[str, Any]) -> str | dict[str, Any]:
    """``job.create``'s ``spec``: a table as is, a :class:`Path` (or a one-line string with no
    ``=``, which TOML text always has) read as a file, any other string sent as TOML text."""
    if isinstance(spec, Mapping):
        return dict(spec)
    if isinstance(spec, Path) or ("=" not in spec and "\n" not in spec):
        text = Path(spec).expanduser().read_text(encoding="utf-8")
        tomllib.loads(text)  # a file that is not TOML fails here, naming the file's problem
        return text
    return spec


def decode_params(reply: Mapping[str, Any]) -> dict[str, np.ndarray]:
    from p2pnode.blobs import tensors

    return tensors.decode(reply["tensors"])


def encode_params(params: Mapping[str, Any]) -> bytes:
    """The tensors codec of ``params``; anything ``np.asarray`` takes (torch tensors on the
    CPU, lists) goes; the daemon casts each array to the model's dtype."""
    import numpy as np

    from p2pnode.blobs import tensors

    return tensors.encode({name: np.asarray(value) for name, value in params.items()})


class JobData:
    """A job's training data and shards, computed once, the daemon's way, from ``job.status``."""

    def __init__(self, status: Mapping[str, Any]) -> None:
        self.status = status
        self._get: Callable[[], tuple[Any, list[np.ndarray]]] = cache(self._build)

    def _build(self) -> tuple[Any, list[np.ndarray]]:
        from p2pnode.rounds.compute import job_data
        from p2pnode_protocols.rounds import JobSpec

        s = self.status["spec"]
        learning = dict(s["learning"])
        spec = JobSpec(
            name=self.status["name"],
            rounds=self.status["rounds"],
            min_participants=s["min_participants"],
            max_participants=s["max_participants"],
            shards=s["shards"],
            round_deadline=s["round_deadline"],
            sync=s["sync"],
            staleness=s["staleness"],
            stragglers=s["stragglers"],
            min_updates=s["min_updates"],
            priority=self.status["priority"],
            learning=learning,
        )
        train, _, shards = job_data(spec)
        return train, shards

    def shard(self, shard: int) -> tuple[np.ndarray, np.ndarray]:
        train, shards = self._get()
        if not 0 <= shard < len(shards):
            raise ValueError(f"shard {shard} is not one of the job's {len(shards)}")
        part = train.subset(shards[shard])
        return part.x, part.y


@dataclass(slots=True)
class _TaskFields:
    job: str
    round: int
    shard: int
    base_key: str
    _data: JobData = field(repr=False)

    @property
    def spec(self) -> Mapping[str, Any]:
        """The job's spec as ``job.status`` gives it (``spec["learning"]["epochs"]``, ...)."""
        spec: Mapping[str, Any] = self._data.status["spec"]
        return spec

    @property
    def rounds(self) -> int:
        """How many rounds the job has (for a schedule over them)."""
        return int(self._data.status["rounds"])

    def data(self) -> tuple[np.ndarray, np.ndarray]:
        """This task's shard as ``(x, y)``: float32 features, int64 labels."""
        return self._data.shard(self.shard)

    def _ids(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "round": self.round,
            "shard": self.shard,
            "base_key": self.base_key,
        }


@dataclass(slots=True)
class Task(_TaskFields):
    """One round's task for the blocking client; ``model()`` and ``submit()`` are calls."""

    _call: Callable[[str, dict[str, Any]], Any] = field(repr=False)

    def model(self) -> dict[str, np.ndarray]:
        """The round's base model: parameter names (``layers.0.weight``, ...) to arrays."""
        return decode_params(self._call("task.model", {"job": self.job, "base_key": self.base_key}))

    def submit(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Send the trained parameters (all of them, same names and shapes); the daemon turns
        them into this node's update, compressed as the job says. Returns ``{accepted: True,
        key, size}``, or ``{accepted: False, reason}`` when the round closed before it came."""
        result: dict[str, Any] = self._call(
            "task.submit", {**self._ids(), "params": encode_params(params)}
        )
        return result


@dataclass(slots=True)
class AsyncTask(_TaskFields):
    """One round's task for the trio client: ``await task.model()``, ``await task.submit(p)``."""

    _call: Callable[[str, dict[str, Any]], Awaitable[Any]] = field(repr=False)

    async def model(self) -> dict[str, np.ndarray]:
        return decode_params(
            await self._call("task.model", {"job": self.job, "base_key": self.base_key})
        )

    async def submit(self, params: Mapping[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self._call(
            "task.submit", {**self._ids(), "params": encode_params(params)}
        )
        return result
