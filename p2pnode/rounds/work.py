"""The work the rounds machine asks for: train a task, fetch updates, aggregate a round.

:class:`RoundWork` turns the machine's effects into trio tasks in the rounds service's nursery
and answers with events: blobs are fetched and stored through the blob service, the learning
(:mod:`p2pnode.rounds.compute`) runs in a worker thread so the daemon keeps answering IPC and
heartbeats while it trains. Concurrency is bounded: ``training.slots`` tasks train at once, and
one aggregation at a time runs per job.

Errors: anything that fails (a blob nobody serves within the timeout, an update that does not
decode) becomes a ``TrainingDone``/``Computed`` with an error, which the machine counts; the
round then goes on without it (a straggler) or with the next proposer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import trio

from p2pnode.blobs import tensors
from p2pnode.rounds.compute import UPDATE_MEDIA_TYPE, ComputeError, JobCompute
from p2pnode.training.attacks import OMNISCIENT_ATTACKS, UPDATE_ATTACKS
from p2pnode_protocols.rounds import (
    Aggregate,
    Computed,
    Fetched,
    JobSpec,
    Prefetch,
    RoundResult,
    Train,
    TrainingDone,
    UpdateRef,
    spot_checked,
)

log = logging.getLogger(__name__)

__all__ = ["RoundWork"]


class RoundWork:
    def __init__(
        self,
        *,
        blobs: Any,
        submit: Callable[[Any], bool],
        spec_of: Callable[[str], JobSpec | None],
        seed: Sequence[int],
        slots: int,
        fetch_timeout: float,
        model_modules: Sequence[str] = (),
        attack: str = "",
        attack_scale: float = 10.0,
        delay: float = 0.0,
        byzantine_proposer: bool = False,
        censor: bool = False,
        committee: Sequence[bytes] = (),
        collected: Callable[[str], Sequence[UpdateRef]] | None = None,
        current: Callable[[str, int], bool] | None = None,
    ) -> None:
        self.blobs = blobs
        self._submit = submit
        self._spec_of = spec_of
        self._seed = list(seed)
        self._slots = trio.Semaphore(max(1, slots))
        self._fetches = trio.Semaphore(8)
        self._fetch_timeout = fetch_timeout
        self._modules = tuple(model_modules)
        self.attack = attack
        self.attack_scale = attack_scale
        self.delay = delay
        self.byzantine_proposer = byzantine_proposer
        self.censor = censor
        #: the updates the machine collected for a job's open round (the copy attack reads it).
        self._collected = collected
        #: job -> the first update this node sent (the replay attack sends it again).
        self._first_update: dict[str, bytes] = {}
        #: validators store every model they attest: asked first for a round's model.
        self.committee = tuple(committee)
        self._computes: dict[str, JobCompute] = {}
        self._aggregating: dict[str, trio.Lock] = {}
        #: whether (job, round) is still the job's open round in the committed log
        self._current = current
        #: aggregations dropped because their round had moved on while they queued, or a
        #: newer one of the same proposer and round was issued
        self.stale_skipped = 0
        self._issued = 0
        self._latest: dict[tuple[str, int, bytes | None], int] = {}
        #: job -> (round, proposer checked or None, stage, since): the aggregation holding the
        #: job's lock, so a round that does not move shows what its validators are doing.
        self.in_flight: dict[str, tuple[int, bytes | None, str, float]] = {}
        #: aggregations waiting for a job's lock.
        self.queued: dict[str, int] = {}
        self.nursery: trio.Nursery | None = None
        #: external trainers: job -> channel their tasks go to (instead of the built-in trainer).
        self.external: dict[str, trio.MemorySendChannel[Train]] = {}
        #: seconds spent per phase of the last rounds, for status and benchmarks.
        self.timings: dict[tuple[str, int], dict[str, float]] = {}
        self.running = 0
        #: models this node holds, as "job@round", newest last (gossiped by membership).
        self.held: dict[str, None] = {}

    def compute(self, job: str) -> JobCompute:
        c = self._computes.get(job)
        if c is None:
            spec = self._spec_of(job)
            if spec is None:
                raise ComputeError(f"no job {job}")
            c = self._computes[job] = JobCompute.build(job, spec, self._modules)
        return c

    def forget(self, job: str) -> None:
        self._computes.pop(job, None)

    def _time(self, job: str, rnd: int, phase: str, seconds: float) -> None:
        t = self.timings.setdefault((job, rnd), {})
        t[phase] = t.get(phase, 0.0) + seconds
        while len(self.timings) > 256:
            del self.timings[next(iter(self.timings))]

    def _start(self, fn: Callable[..., Any], *args: Any) -> None:
        assert self.nursery is not None, "RoundWork used before the service started"
        self.nursery.start_soon(fn, *args)

    # -- blobs -----------------------------------------------------------------------------------

    async def read_blob(
        self,
        key: str,
        *,
        kind: str,
        job: str,
        rnd: int,
        providers: Sequence[bytes] = (),
        timeout: float | None = None,
    ) -> bytes:
        labels = {"kind": kind, "job": job, "round": rnd} if job != "init" else {}
        async with self._fetches:
            stat = await self.blobs.fetch(
                key, timeout=timeout or self._fetch_timeout, providers=providers, **labels
            )
        return bytes(await self.blobs.store.read_range(key, 0, stat.size))

    async def read_model(self, job: str, key: str, rnd: int) -> dict[str, np.ndarray]:
        data = await self.read_blob(key, kind="model", job=job, rnd=rnd, providers=self.committee)
        self._hold(job, rnd)
        return tensors.decode(data)

    def _hold(self, job: str, rnd: int) -> None:
        tag = f"{job}@{rnd}"
        self.held.pop(tag, None)
        self.held[tag] = None
        while len(self.held) > 16:
            del self.held[next(iter(self.held))]

    async def store_model(self, job: str, rnd: int, model: dict[str, np.ndarray]) -> str:
        # The initial model is stored before its job has an id: labelled once committed.
        labels = {"kind": "model", "job": job, "round": rnd} if job != "init" else {}
        stat, _ = await self.blobs.put(
            tensors.encode_pieces(model),
            media_type=tensors.MEDIA_TYPE,
            meta={"job": job, "round": rnd},
            # Fetchers ask the committee first (see read_model): the announcement may follow.
            wait_announce=job == "init",
            **labels,
        )
        if job != "init":
            self._hold(job, rnd)
        return str(stat.key)

    # -- effects ---------------------------------------------------------------------------------

    def train(self, e: Train) -> None:
        ext = self.external.get(e.job)
        if ext is not None:
            try:
                ext.send_nowait(e)
                return
            except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                self.external.pop(e.job, None)  # gone or stuck: train it ourselves
        self._start(self._train, e)

    async def _train(self, e: Train) -> None:
        async with self._slots:
            self.running += 1
            try:
                t0 = time.perf_counter()
                base = await self.read_model(e.job, e.base_key, e.round - 1)
                t1 = time.perf_counter()
                c = self.compute(e.job)
                crafted = (*UPDATE_ATTACKS, *OMNISCIENT_ATTACKS)
                corrupt = self.attack if self.attack in crafted else ""
                out = await trio.to_thread.run_sync(
                    lambda: c.train_task(
                        base, e.round, e.shard, self._seed, corrupt, self.attack_scale
                    )
                )
                t2 = time.perf_counter()
                update = await self._fault(e, out.update)
                key, size = await self.store_update(e.job, e.round, update)
                if self.delay:
                    await trio.sleep(self.delay)
                self._time(e.job, e.round, "fetch", t1 - t0)
                self._time(e.job, e.round, "train", t2 - t1)
                self._time(e.job, e.round, "upload", time.perf_counter() - t2)
                self._submit(
                    TrainingDone(job=e.job, round=e.round, key=key, size=size, samples=out.samples)
                )
            except Exception as exc:  # a failed task is a straggler, not a daemon crash
                log.warning(
                    "training %s round %d failed: %s",
                    e.job,
                    e.round,
                    exc,
                    extra={"job": e.job, "round": e.round},
                )
                self._submit(TrainingDone(job=e.job, round=e.round, error=str(exc)[:200]))
            finally:
                self.running -= 1

    async def _fault(self, e: Train, honest: bytes) -> bytes:
        """Tests only (``training.attack``): the update a cheating trainer sends instead."""
        if self.attack == "replay":
            return self._first_update.setdefault(e.job, honest)
        if self.attack == "copy" and self._collected is not None:
            spec = self._spec_of(e.job)
            wait = spec.round_deadline if spec is not None else 5.0
            with trio.move_on_after(wait):
                while True:
                    theirs = [u for u in self._collected(e.job) if u.round == e.round]
                    if theirs:
                        u = theirs[0]
                        return await self.read_blob(
                            u.key, kind="update", job=e.job, rnd=e.round, providers=(u.node,)
                        )
                    await trio.sleep(0.05)
        return honest

    async def store_update(self, job: str, rnd: int, update: bytes) -> tuple[str, int]:
        stat, _ = await self.blobs.put(
            [update],
            media_type=UPDATE_MEDIA_TYPE,
            meta={"job": job, "round": rnd},
            kind="update",
            job=job,
            round=rnd,
            # Validators learn who holds it from the signed notice (a fetch hint): the DHT
            # announcement need not hold the notice back.
            wait_announce=False,
        )
        return str(stat.key), int(stat.size)

    def prefetch(self, e: Prefetch) -> None:
        self._start(self._prefetch, e)

    async def _prefetch(self, e: Prefetch) -> None:
        try:
            async with self._fetches:
                await self.blobs.fetch(
                    e.key,
                    timeout=self._fetch_timeout,
                    kind="update",
                    job=e.job,
                    round=e.round,
                    providers=e.providers,
                )
            self._submit(Fetched(job=e.job, round=e.round, key=e.key))
        except Exception as exc:
            log.debug("prefetch of %s failed: %s", e.key, exc)

    def aggregate(self, e: Aggregate) -> None:
        # A newer aggregation of the same round by the same proposer (our own next proposal,
        # or a check of that proposer's next proposal) supersedes a queued one: a proposer
        # keeps only its latest proposal, so only that one can still gather a quorum.
        self._issued += 1
        self._latest[self._slot(e)] = self._issued
        self._start(self._aggregate, e, self._issued)

    @staticmethod
    def _slot(e: Aggregate) -> tuple[str, int, bytes | None]:
        return (e.job, e.round, None if e.check is None else e.check.proposer)

    async def _aggregate(self, e: Aggregate, token: int | None = None) -> None:
        lock = self._aggregating.setdefault(e.job, trio.Lock())
        self.queued[e.job] = self.queued.get(e.job, 0) + 1
        waiting = True
        try:
            async with lock:
                waiting = False
                self.queued[e.job] -= 1
                try:
                    await self._aggregate_locked(e, token)
                finally:
                    self.in_flight.pop(e.job, None)
        finally:
            if waiting:  # cancelled before its turn
                self.queued[e.job] -= 1
            if self.queued.get(e.job) == 0:
                del self.queued[e.job]  # bounded: an entry lives while aggregations wait

    def _stage(self, e: Aggregate, stage: str) -> None:
        proposer = None if e.check is None else e.check.proposer
        self.in_flight[e.job] = (e.round, proposer, stage, time.monotonic())

    async def _aggregate_locked(self, e: Aggregate, token: int | None) -> None:
        # Aggregations of one job run one at a time, and each may wait out its fetches:
        # under faults (a rotation every few seconds, a check of every proposal) they
        # queued for minutes behind each other, running for rounds long committed while
        # the open round's waited (a chaos run saw a check of round 1 run at round 12).
        # One whose round has moved on is dropped; the machine ignores its answer anyway.
        superseded = token is not None and self._latest.get(self._slot(e)) != token
        if not superseded and token is not None:
            del self._latest[self._slot(e)]  # bounded: an entry lives while it is queued
        if superseded or (self._current is not None and not self._current(e.job, e.round)):
            self.stale_skipped += 1
            return
        try:
            result = await self._recompute(e)
            self._submit(Computed(job=e.job, round=e.round, result=result, check=e.check_bytes))
        except Exception as exc:
            log.warning(
                "aggregating %s round %d failed: %s",
                e.job,
                e.round,
                exc,
                extra={"job": e.job, "round": e.round},
            )
            self._submit(
                Computed(
                    job=e.job,
                    round=e.round,
                    result=None,
                    check=e.check_bytes,
                    error=str(exc)[:200],
                )
            )

    def aggregations(self) -> list[dict[str, object]]:
        """Each job's aggregation in progress (its stage and for how long) and how many wait."""
        now = time.monotonic()
        jobs = sorted(set(self.in_flight) | set(self.queued))
        out: list[dict[str, object]] = []
        for job in jobs:
            row: dict[str, object] = {"job": job, "queued": self.queued.get(job, 0)}
            if job in self.in_flight:
                rnd, proposer, stage, since = self.in_flight[job]
                row |= {
                    "round": rnd,
                    "check_of": None if proposer is None else proposer.hex(),
                    "stage": stage,
                    "seconds": round(now - since, 3),
                }
            out.append(row)
        return out

    async def _recompute(self, e: Aggregate) -> RoundResult:
        t0 = time.perf_counter()
        self._stage(e, "base model")
        base = await self.read_model(e.job, e.base_key, e.round - 1)
        self._stage(e, "updates")
        datas: dict[str, bytes] = {}
        # A proposer gives an update a round's deadline at most (the validators prefetched it
        # when its notice came; one nobody serves is left out rather than waited for).
        spec = self._spec_of(e.job)
        wait = None
        if e.check is None and spec is not None:
            wait = min(self._fetch_timeout, spec.round_deadline)

        holders = dict(e.holders)

        async def get(ref: UpdateRef) -> None:
            try:
                datas[ref.key] = await self.read_blob(
                    ref.key,
                    kind="update",
                    job=e.job,
                    rnd=ref.round,
                    providers=(ref.node, *holders.get(ref.key, ())),
                    timeout=wait,
                )
            except Exception:
                if e.check is not None:
                    raise  # a checker needs every update of the proposal
                # A proposer leaves out what nobody serves (its trainer died after its notice):
                # otherwise every proposer would fail on it, round after round.
                log.info(
                    "update %s of %s round %d cannot be fetched: left out",
                    ref.key,
                    e.job,
                    e.round,
                    extra={"job": e.job, "round": e.round},
                )

        async with trio.open_nursery() as n:
            for ref in e.updates:
                n.start_soon(get, ref)
        t1 = time.perf_counter()
        c = self.compute(e.job)
        refs = tuple(ref for ref in e.updates if ref.key in datas)
        if self.censor and e.check is None and len(refs) > 1:
            refs = refs[1:]  # a proposer that leaves an update out (tests only)
        if not refs:
            raise ComputeError("no update of the round could be fetched")
        spot = e.spot
        if refs != e.updates:  # the spot-checks are drawn from the updates the result names
            spot = spot_checked(e.job, e.round, e.base_key, refs, c.spec.spot_check)
        pairs = [(ref, datas[ref.key]) for ref in refs]
        shards = dict(e.shards)
        self._stage(e, "compute")
        model, result = await trio.to_thread.run_sync(
            lambda: c.aggregate(base, e.base_key, e.round, pairs, shards, spot)
        )
        if self.byzantine_proposer and e.check is None:
            # A proposer that lies: the others recompute and refuse it (tests only).
            first = next(k for k in model if k.startswith("params/"))
            model[first] = (model[first] + np.float32(0.01)).astype(model[first].dtype)
        t2 = time.perf_counter()
        self._stage(e, "store")
        key = await self.store_model(e.job, e.round, model)
        self._time(e.job, e.round, "collect", t1 - t0)
        self._time(e.job, e.round, "aggregate", time.perf_counter() - t1)
        log.debug(
            "round %d of %s aggregated in %.3f s",
            e.round,
            e.job,
            t2 - t1,
            extra={"job": e.job, "round": e.round},
        )
        return replace(result, model_key=key)
