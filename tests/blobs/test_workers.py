"""Workers: jobs run on the pool's threads and their results or errors come back; without the
pool running, calls still work (trio's thread pool); stopping waits for the job in hand."""

import threading
import time

import pytest
import trio

from p2pnode.blobs.worker import Workers


async def test_results_errors_and_threads() -> None:
    workers = Workers(3)
    main = threading.get_ident()
    async with trio.open_nursery() as nursery:
        await nursery.start(workers.run)
        idents = set()

        async def one(i: int) -> None:
            def job() -> int:
                idents.add(threading.get_ident())
                time.sleep(0.01)  # long enough for the three threads to overlap
                return i * i

            assert await workers.call(job) == i * i

        async with trio.open_nursery() as calls:
            for i in range(12):
                calls.start_soon(one, i)
        assert main not in idents and 1 < len(idents) <= 3

        def boom() -> None:
            raise OSError("disk full")

        with pytest.raises(OSError, match="disk full"):
            await workers.call(boom)
        assert await workers.call(lambda: "still serving") == "still serving"
        nursery.cancel_scope.cancel()


async def test_calls_without_the_pool_use_trio_threads() -> None:
    assert await Workers(1).call(threading.get_ident) != threading.get_ident()


async def test_stopping_waits_for_the_job_in_hand() -> None:
    workers = Workers(1)
    finished = []
    started = trio.Event()
    token = trio.lowlevel.current_trio_token()

    def slow() -> None:
        token.run_sync_soon(started.set)
        time.sleep(0.2)
        finished.append(True)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(workers.run)
            nursery.start_soon(workers.call, slow)
            await started.wait()
            nursery.cancel_scope.cancel()
    assert finished == [True], "the pool's task ended only after its thread did"


def test_at_least_one_thread() -> None:
    with pytest.raises(ValueError):
        Workers(0)
