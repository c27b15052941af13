"""A few long-lived threads for a stream of short blocking jobs (chunk hashing, reads, writes).

``trio.to_thread.run_sync`` per chunk pays for a capacity limiter, a copied context and trio's
thread cache on every call: hashing 1 MiB chunks that way cost a fetching daemon 1.1-1.5 ms of
CPU per chunk on the 2-core VM we measure on, against 0.55 ms for the hash itself. Here a job
is one queue put, one thread wake-up and one ``run_sync_soon`` back; fetcher CPU per MiB fell
from about 4.4 to 3.8 ms. Several threads, so one slow disk write does not hold up the rest.

:meth:`Workers.run` is a trio task that owns the threads for their whole life: cancelling it
lets each thread finish the job in hand, then ends them all. Jobs submitted while it is not
running go through ``trio.to_thread.run_sync`` instead, so callers need not care.
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import outcome
import trio

T = TypeVar("T")


class _Job(Generic[T]):
    __slots__ = ("done", "fn", "result")

    def __init__(self, fn: Callable[[], T]) -> None:
        self.fn = fn
        self.done = trio.Event()
        self.result: outcome.Outcome[T] | None = None


class Workers:
    def __init__(self, threads: int) -> None:
        if threads < 1:
            raise ValueError("threads must be at least 1")
        self.threads = threads
        self._jobs: queue.SimpleQueue[_Job[Any] | None] = queue.SimpleQueue()
        self._running = False

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        token = trio.lowlevel.current_trio_token()
        async with trio.open_nursery() as nursery:
            # Not cancellable: the threads are told to stop below and are always waited for.
            for _ in range(self.threads):
                nursery.start_soon(trio.to_thread.run_sync, self._loop, token)
            self._running = True
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._running = False
                self._jobs.put(None)

    async def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on a worker thread and return (or raise) what it did."""
        if not self._running:
            return await trio.to_thread.run_sync(fn)
        job = _Job(fn)
        self._jobs.put(job)
        await job.done.wait()
        assert job.result is not None
        return job.result.unwrap()

    def _loop(self, token: trio.lowlevel.TrioToken) -> None:
        while (job := self._jobs.get()) is not None:
            job.result = outcome.capture(job.fn)
            token.run_sync_soon(job.done.set)
        self._jobs.put(None)  # the stop signal, for the next thread
