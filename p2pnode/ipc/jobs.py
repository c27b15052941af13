"""IPC methods of training jobs (merged into the node's method table; docs/ipc.md, docs/jobs.md).

``job.create``: validate a spec (TOML text or a table), store the initial model, commit the job.
``job.list`` / ``job.status`` / ``job.cancel``: the jobs the committed log holds.
``model.get``: a job's committed model of a round (the last by default), written as ``.npz``.
``task.next`` / ``task.model`` / ``task.submit``: an external trainer (a user's script) takes
this node's tasks of a job instead of the built-in trainer, for as long as its connection lives.
Round phases and job transactions are the ``rounds`` and ``jobs`` topics of ``subscribe``.
"""

from __future__ import annotations

import itertools
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import trio
from libp2p.peer.id import ID

from p2pnode.blobs import tensors
from p2pnode.ipc.errors import InvalidParams, NetworkError, NotFound
from p2pnode.ipc.params import param
from p2pnode.ipc.server import Method, Session
from p2pnode.jobs.spec import SpecError, loads_toml, parse_spec
from p2pnode.rounds.compute import ComputeError, JobCompute, unpack
from p2pnode.rounds.service import RoundsService
from p2pnode.training.state_dict import flatten
from p2pnode_protocols.rounds import CancelJob, CreateJob, JobState, Train, TrainingDone, encode_tx

#: seconds a user's create or cancel may wait for its commit.
COMMIT_TIMEOUT = 30.0
MAX_TASK_WAIT = 300.0


def _b58(node: bytes) -> str:
    return ID(node).to_base58()


def job_row(j: JobState) -> dict[str, Any]:
    last = j.history[-1] if j.history else None
    return {
        "job": j.id,
        "name": j.spec.name,
        "status": j.status,
        "round": min(j.round, j.spec.rounds),
        "rounds": j.spec.rounds,
        "rounds_done": len(j.history),
        "model_key": j.model_key,
        "accuracy": last.accuracy if last else None,
        "loss": last.loss if last else None,
        "priority": j.spec.priority,
        "created_seq": j.created_seq,
        "reason": j.reason or None,
    }


def build_job_methods(*, rounds: RoundsService | None, blobs: Any) -> dict[str, Method]:
    def service() -> RoundsService:
        if rounds is None:
            raise NotFound("training is off: it needs consensus (consensus.validators)")
        return rounds

    def job_of(params: dict[str, Any]) -> JobState:
        job_id = param(params, "job", str)
        jobs = service().machine.ledger.jobs
        job = jobs.get(job_id)
        if job is None:
            matches = [j for k, j in jobs.items() if k.startswith(job_id)] if job_id else []
            if len(matches) != 1:
                raise NotFound(f"no job {job_id!r}")
            job = matches[0]
        return job

    async def create(params: dict[str, Any], session: Session, rid: int) -> Any:
        svc = service()
        text = param(params, "spec", (str, dict))
        try:
            doc = loads_toml(text, "spec") if isinstance(text, str) else text
            spec = parse_spec(doc)
        except SpecError as exc:
            raise InvalidParams(str(exc)) from None
        init_key = str(spec.learning.get("init_key") or "")
        if not init_key:
            try:
                compute = await trio.to_thread.run_sync(
                    JobCompute.build, "-", spec, svc.cfg.training.model_modules
                )
            except ComputeError as exc:
                raise InvalidParams(str(exc)) from None
            init_key = await svc.work.store_model("init", 0, compute.initial_tensors())
        body = encode_tx(CreateJob(spec=spec, init_key=init_key, nonce=os.urandom(8)))
        timeout = param(params, "timeout", (int, float), COMMIT_TIMEOUT)
        try:
            applied = await svc.submit_and_wait(body, timeout)
        except trio.TooSlowError:
            raise NetworkError(f"the job was not committed within {timeout:g} s") from None
        except Exception as exc:
            raise NetworkError(f"cannot commit the job: {exc}") from None
        if applied.status != "ok" or applied.job is None:
            raise InvalidParams(f"the job was rejected: {applied.reason}")
        return {"job": applied.job, "seq": applied.seq, "init_key": init_key}

    async def list_jobs(params: dict[str, Any], session: Session, rid: int) -> Any:
        ledger = service().machine.ledger
        jobs = sorted(ledger.jobs.values(), key=lambda j: j.created_seq)
        return {"jobs": [job_row(j) for j in jobs]}

    async def status(params: dict[str, Any], session: Session, rid: int) -> Any:
        svc = service()
        j = job_of(params)
        row = job_row(j)
        row["spec"] = {
            "min_participants": j.spec.min_participants,
            "max_participants": j.spec.max_participants,
            "shards": j.spec.shards,
            "round_deadline": j.spec.round_deadline,
            "sync": j.spec.sync,
            "staleness": j.spec.staleness,
            "stragglers": j.spec.stragglers,
            "min_updates": j.spec.min_updates,
            "learning": dict(j.spec.learning),
        }
        row["tasks"] = (
            [{"peer_id": _b58(t.node), "shard": t.shard} for t in j.assignment.tasks]
            if j.assignment is not None
            else []
        )
        history = []
        for h in j.history:
            phases = svc.phases.get((j.id, h.round), {})
            timing = svc.work.timings.get((j.id, h.round), {})
            history.append(
                {
                    "round": h.round,
                    "model_key": h.model_key,
                    "accuracy": h.accuracy,
                    "loss": h.loss,
                    "updates": h.updates,
                    "update_bytes": h.update_bytes,
                    "contributors": [_b58(n) for n in h.contributors],
                    "outliers": [_b58(n) for n in h.outliers],
                    "scores": {_b58(n): s for n, s in h.scores},
                    "flags": [
                        {"peer_id": _b58(f.node), "kind": f.kind, "detail": f.detail}
                        for f in h.flags
                    ],
                    "sources": [[_b58(n), r] for n, r in h.sources],
                    "proposer": _b58(h.proposer) if h.proposer else None,
                    "seq": h.seq,
                    "phases": _phase_seconds(phases),
                    "work": {k: round(v, 4) for k, v in timing.items()},
                }
            )
        row["history"] = history
        # The round in progress: its phases so far, in the order this node saw them, with the
        # seconds since the first (the committed rounds' durations are in history).
        seen = svc.phases.get((j.id, j.round), {})
        first = min(seen.values(), default=0.0)
        row["current"] = {
            "round": j.round,
            "phases": [[p, round(t - first, 3)] for p, t in seen.items()],
        }
        ledger = svc.machine.ledger
        row["nodes"] = {
            _b58(n): {
                "assigned": r.assigned,
                "contributed": r.contributed,
                "missed": r.missed,
                "outliers": r.outliers,
                "flagged": r.flagged,
                "score": round(r.score_sum, 6),
                "reliability": round(r.reliability, 4),
            }
            for n, r in sorted(ledger.nodes.items())
        }
        return row

    async def cancel(params: dict[str, Any], session: Session, rid: int) -> Any:
        svc = service()
        j = job_of(params)
        reason = param(params, "reason", str, "cancelled by a user")[:200]
        body = encode_tx(CancelJob(job=j.id, reason=reason))
        try:
            applied = await svc.submit_and_wait(body, COMMIT_TIMEOUT)
        except Exception as exc:
            raise NetworkError(f"cannot commit the cancel: {exc}") from None
        if applied.status != "ok":
            raise InvalidParams(f"not cancelled: {applied.reason}")
        return {"job": j.id, "status": "cancelled", "seq": applied.seq}

    async def model_get(params: dict[str, Any], session: Session, rid: int) -> Any:
        svc = service()
        j = job_of(params)
        rnd = param(params, "round", int, len(j.history))
        key = j.model_of(rnd)
        if key is None:
            raise NotFound(f"job {j.id} has no committed model for round {rnd}")
        timeout = param(params, "timeout", (int, float), svc.cfg.training.fetch_timeout)
        try:
            with trio.fail_after(timeout):
                data = await svc.work.read_blob(key, kind="model", job=j.id, rnd=rnd)
        except trio.TooSlowError:
            raise NetworkError(f"model {key} not fetched within {timeout:g} s") from None
        model, _ = unpack(tensors.decode(data))
        out: dict[str, Any] = {"job": j.id, "round": rnd, "key": key}
        if 1 <= rnd <= len(j.history):
            out["accuracy"] = j.history[rnd - 1].accuracy
            out["loss"] = j.history[rnd - 1].loss
        path = param(params, "path", str, None)
        if path is not None:
            target = Path(path)
            if not target.is_absolute():
                raise InvalidParams("path must be absolute (the daemon's working dir is not yours)")
            await trio.to_thread.run_sync(lambda: _save_npz(target, model))
            out["path"] = str(target)
        else:
            out["tensors"] = tensors.encode(model)
        return out

    # -- external trainers -------------------------------------------------------------------------

    async def task_next(params: dict[str, Any], session: Session, rid: int) -> Any:
        svc = service()
        j = job_of(params)
        wait = min(float(param(params, "timeout", (int, float), 30.0)), MAX_TASK_WAIT)
        inbox = _attach(svc, j.id, session)
        with trio.move_on_after(wait):
            while j.status == "running":
                # Wake up now and then: a job that ends while we wait ends the wait.
                with trio.move_on_after(1.0):
                    task: Train = await inbox.receive()
                    if task.job == j.id:
                        return {
                            "job": task.job,
                            "round": task.round,
                            "shard": task.shard,
                            "base_key": task.base_key,
                            "status": j.status,
                        }
        return {"job": j.id, "round": None, "status": svc.machine.ledger.jobs[j.id].status}

    async def task_model(params: dict[str, Any], session: Session, rid: int) -> Any:
        svc = service()
        j = job_of(params)
        key = param(params, "base_key", str)
        data = await svc.work.read_blob(key, kind="model", job=j.id, rnd=0)
        params_only, _ = unpack(tensors.decode(data))
        return {"tensors": tensors.encode(params_only)}

    async def task_submit(params: dict[str, Any], session: Session, rid: int) -> Any:
        svc = service()
        j = job_of(params)
        rnd = param(params, "round", int)
        shard = param(params, "shard", int)
        base_key = param(params, "base_key", str)
        raw = param(params, "params", bytes)
        try:
            compute = svc.work.compute(j.id)
            base = await svc.work.read_model(j.id, base_key, rnd - 1)
            new = tensors.decode(raw)
            base_params, _ = compute.split(base)
            ordered = {k: np.asarray(new[k], dtype=v.dtype) for k, v in base_params.items()}
            delta = flatten(ordered) - flatten(base_params)
            rng = np.random.default_rng([rnd, shard])
            blob = compute.encode_delta(delta, shard, rng)
        except (KeyError, ValueError, ComputeError) as exc:
            raise InvalidParams(f"bad update: {exc}") from None
        samples = max(1, len(compute.shards[shard])) if 0 <= shard < len(compute.shards) else 1
        late = j.status != "running" or rnd < j.round - j.spec.staleness
        if late:
            # Tell the trainer rather than store an update no round can take any more.
            return {
                "accepted": False,
                "reason": f"round {rnd} is closed (job at {j.round}, {j.status})",
            }
        key, size = await svc.work.store_update(j.id, rnd, blob)
        svc.driver.submit(TrainingDone(job=j.id, round=rnd, key=key, size=size, samples=samples))
        return {"accepted": True, "key": key, "size": size}

    async def rounds_status(params: dict[str, Any], session: Session, rid: int) -> Any:
        return service().status()

    return {
        "rounds.status": rounds_status,
        "job.create": create,
        "job.list": list_jobs,
        "job.status": status,
        "job.cancel": cancel,
        "model.get": model_get,
        "task.next": task_next,
        "task.model": task_model,
        "task.submit": task_submit,
    }


def _attach(svc: RoundsService, job: str, session: Session) -> trio.MemoryReceiveChannel[Train]:
    """This connection becomes the job's external trainer on this node until it closes."""
    key = ("external", job)
    inbox = session.extras.get(key)
    if inbox is not None:
        return inbox  # type: ignore[no-any-return]
    send, receive = trio.open_memory_channel[Train](8)
    svc.work.external[job] = send
    session.extras[key] = receive

    def detach() -> None:
        if svc.work.external.get(job) is send:
            del svc.work.external[job]
        send.close()

    session.on_close.append(detach)
    return receive


def _phase_seconds(phases: dict[str, float]) -> dict[str, float]:
    order = ["distribution", "training", "collection", "aggregation", "validation", "completed"]
    seen = [(p, phases[p]) for p in order if p in phases]
    out = {}
    for (p, t), (_, t_next) in itertools.pairwise(seen):
        out[p] = round(max(0.0, t_next - t), 4)
    if seen:
        out["total"] = round(seen[-1][1] - seen[0][1], 4)
    return {k: v for k, v in out.items() if not math.isnan(v)}


def _save_npz(path: Path, model: dict[str, np.ndarray]) -> None:
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as f:
        np.savez(f, **model)
    os.replace(tmp, path)
