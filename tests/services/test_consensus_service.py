"""Four real ``ConsensusService`` validators and one follower over in-memory streams, in
virtual time.

Each node has its own SQLite store and its config from ``load_config``; the network is
:mod:`tests.support.memory_host`, so the real datagram transport, log server (long polls over
:class:`~p2pnode.network.rpc.RpcService`), driver and persist hook run unchanged. The
committee commits what clients submit; then the primary crashes, and the other three change
view and keep committing.

With no network latency every step happens at the instant of its cause, so the times are
exact: a commit at the instant of its submit; after the crash, a view change exactly
``request_timeout`` after the request the old primary left pending, and that request's commit
at the next status tick (the new primary proposes what backups resend it then).
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from p2pnode.config import load_config
from p2pnode.consensus.log_sync import LONG_POLL, SYNC_BACKOFF
from p2pnode.consensus.service import (
    ConsensusError,
    ConsensusService,
)
from p2pnode.store import Store
from p2pnode_protocols.pbft import KvPut, decode_tx, encode_tx
from tests.support.events import EventRecorder
from tests.support.memory_host import (
    MemoryHost,
    MemoryNetwork,
    key_pair_for,
    open_memory_network,
)

N = 4
REQUEST_TIMEOUT = 2.0
STATUS_INTERVAL = 0.5


async def _run(
    svc: ConsensusService,
    scope: trio.CancelScope,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    with scope:
        await svc.run(task_status=task_status)


def _log(svc: ConsensusService) -> list[tuple[int, bytes]]:
    return [(r.seq, r.digest) for r in svc.db.read_log(1, svc.log_top, svc.log_top)]


def _keys(svc: ConsensusService) -> list[str]:
    """Keys put by the committed transactions, in log order."""
    out = []
    for r in svc.db.read_log(1, svc.log_top, svc.log_top):
        out += [decode_tx(req.op).key for req in r.entry.entry.batch]  # type: ignore[attr-defined]
    return out


async def _submit(svc: ConsensusService, keys: list[str]) -> dict[str, tuple[float, int]]:
    """Submit one ``kv_put`` per key at once; when (virtual time) and where each committed."""
    done: dict[str, tuple[float, int]] = {}

    async def one(key: str) -> None:
        result = await svc.submit(encode_tx(KvPut(key=key, value=key.encode())))
        done[key] = (trio.current_time(), result["seq"])

    async with trio.open_nursery() as nursery:
        for key in keys:
            nursery.start_soon(one, key)
    return done


@dataclass
class Committee:
    """N validators and one follower, each service running in a cancel scope of its own."""

    net: MemoryNetwork
    hosts: list[MemoryHost]
    services: list[ConsensusService]
    recorders: list[EventRecorder]
    scopes: list[trio.CancelScope]
    #: Membership's verdicts as each service receives them (what the event bus would carry).
    member_news: list[trio.MemorySendChannel[dict[str, Any]]]

    @property
    def validators(self) -> list[str]:
        return [h.get_id().to_base58() for h in self.hosts[:N]]

    def crash(self, i: int) -> None:
        self.net.crash(self.hosts[i].get_id())
        self.scopes[i].cancel()


@asynccontextmanager
async def committee(tmp_path: Path) -> AsyncIterator[Committee]:
    keys = [key_pair_for(i, b"pbft") for i in range(N + 1)]
    async with open_memory_network() as net, trio.open_nursery() as nursery:
        hosts: list[MemoryHost] = [net.add_host(kp) for kp in keys]
        validators = [h.get_id().to_base58() for h in hosts[:N]]
        recorders = [EventRecorder() for _ in hosts]
        services: list[ConsensusService] = []
        news = [trio.open_memory_channel[dict[str, Any]](16) for _ in hosts]
        for i, h in enumerate(hosts):
            data = tmp_path / f"node-{i}"
            data.mkdir()
            cfg = load_config(
                data,
                env={},
                overrides={
                    "consensus.validators": validators,
                    "consensus.request_timeout": REQUEST_TIMEOUT,
                    "consensus.status_interval": STATUS_INTERVAL,
                },
            )
            store = Store(data / "node.db")
            services.append(
                ConsensusService(h, h.key_pair, store, cfg, recorders[i], members=news[i][1])
            )
        scopes = [trio.CancelScope() for _ in services]
        for svc, scope in zip(services, scopes, strict=True):
            await nursery.start(_run, svc, scope)
        assert [s.status()["role"] for s in services] == ["validator"] * N + ["follower"]
        assert {s.status()["primary"] for s in services[:N]} == {validators[0]}
        yield Committee(net, hosts, services, recorders, scopes, [send for send, _ in news])
        nursery.cancel_scope.cancel()


@pytest.mark.timeout(60)
async def test_committee_commits_then_survives_a_primary_crash(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with committee(tmp_path) as c:
        services, recorders, validators = c.services, c.recorders, c.validators
        primary, backups, follower = services[0], services[1:N], services[N]
        assert [s.status()["role"] for s in services] == ["validator"] * N + ["follower"]
        assert {s.status()["primary"] for s in services[:N]} == {validators[0]}

        # -- a healthy committee commits at the instant of the submit ----------------------------
        t0 = trio.current_time()
        async with trio.open_nursery() as clients:
            first: dict[str, tuple[float, int]] = {}
            for svc, batch in ((primary, ["a", "b"]), (backups[0], ["c"]), (follower, ["f"])):
                clients.start_soon(lambda s=svc, b=batch: _update(first, _submit(s, b)))
        assert {at for at, _seq in first.values()} == {t0}
        assert sorted(seq for _at, seq in first.values()) == [1, 2, 3, 4]
        # Every node has the entries by the end of that instant, the follower too.
        await trio.testing.wait_all_tasks_blocked()
        assert trio.current_time() == t0
        assert all(s.log_top == 4 for s in services)
        logs = {tuple(_log(s)) for s in services}
        assert len(logs) == 1
        assert sorted(_keys(primary)) == ["a", "b", "c", "f"]

        # -- the primary crashes; a backup's client submits at once ----------------------------
        await trio.sleep(1.0)
        crash_at = trio.current_time()
        c.crash(0)
        second = await _submit(backups[1], ["d", "e"])
        view_at = crash_at + REQUEST_TIMEOUT
        for r in recorders[1:N]:
            assert [(at, e["view"]) for at, e in r.find(event="view")] == [(view_at, 1)]
        for s in backups:
            st = s.status()
            assert (st["view"], st["primary"], st["in_view_change"]) == (1, validators[1], False)
        # The new primary proposes the pending request as it enters the view, so it commits at
        # that instant, unless a backup's prepare overtook the new view on its way to another
        # backup (trio runs the tasks of one instant in random order): the replica that was
        # not yet in the view dropped it, and the retransmission at the next status tick
        # completes the commit.
        next_tick = (math.floor(view_at / STATUS_INTERVAL) + 1) * STATUS_INTERVAL
        assert len({at for at, _seq in second.values()}) == 1
        assert {at for at, _seq in second.values()} <= {view_at, next_tick}
        assert sorted(seq for _at, seq in second.values()) == [5, 5]  # one batch

        # -- the new primary commits at the instant of the submit again -----------------------
        t2 = trio.current_time()
        third: dict[str, tuple[float, int]] = {}
        async with trio.open_nursery() as clients:
            for i, svc in enumerate(backups):
                clients.start_soon(lambda s=svc, i=i: _update(third, _submit(s, [f"k{i}"])))
        assert {at for at, _seq in third.values()} == {t2}
        top = max(seq for _at, seq in third.values())
        await trio.testing.wait_all_tasks_blocked()
        assert all(s.log_top == top for s in backups)
        # The follower's long poll to the dead validator fails; it moves to the next one.
        with trio.fail_after(LONG_POLL + SYNC_BACKOFF + REQUEST_TIMEOUT):
            await recorders[N].wait_for(event="commit", seq=top)
        survivors = [*backups, follower]
        assert {tuple(_log(s)) for s in survivors} == {tuple(_log(backups[0]))}
        committed = _keys(backups[0])
        assert sorted(committed) == sorted(["a", "b", "c", "f", "d", "e", "k0", "k1", "k2"])
        # The crashed primary's log is a prefix of the survivors' (it forgot nothing it sent).
        assert _log(primary) == _log(backups[0])[: primary.log_top]
        assert all(s.error is None for s in services)


async def _update(into: dict[str, tuple[float, int]], results: Any) -> None:
    into.update(await results)


@pytest.mark.timeout(60)
async def test_a_validator_whose_disk_fails_stops_alone_and_the_others_go_on(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with committee(tmp_path) as c:
        primary, broken = c.services[0], c.services[N - 1]
        await _submit(primary, ["a"])
        await trio.testing.wait_all_tasks_blocked()  # every node has it by the end of the instant
        assert [svc.log_top for svc in c.services] == [1] * (N + 1)

        def refuse(state: Any, rows: Any) -> None:
            if state is not None or rows:
                raise sqlite3.OperationalError("disk I/O error")

        broken.db.save = refuse  # type: ignore[method-assign]
        t0 = trio.current_time()
        done = await _submit(primary, ["b"])
        # f = 1: three validators still make a quorum, at the instant of the submit.
        assert done == {"b": (t0, 2)}
        with trio.fail_after(1):
            assert broken.driver is not None
            await broken.driver.wait_stopped()
        assert broken.error == "OperationalError: disk I/O error"
        assert broken.status()["error"] == broken.error
        assert broken.log_top == 1  # it told no one of what it could not write
        with pytest.raises(ConsensusError, match="consensus stopped"):
            await broken.submit(encode_tx(KvPut(key="c", value=b"c")))
        # Only its replica stopped: its log server still serves what it has.
        follower = c.services[N]
        reply = await follower.log_sync.rpc.request(
            c.hosts[N - 1].get_id(), {"op": "log", "from": 1, "limit": 8, "wait": 0}, timeout=1
        )
        assert (reply["ok"], len(reply["entries"]), reply["top"]) == (True, 1, 1)
        # And the others go on.
        await trio.sleep(10)
        assert [s.error for s in c.services] == [None] * (N - 1) + [broken.error, None]
        assert follower.log_top == 2
        assert await _submit(c.services[1], ["d"]) == {"d": (trio.current_time(), 3)}


@pytest.mark.timeout(60)
async def test_a_primary_membership_declares_dead_is_replaced_before_anyone_submits(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with committee(tmp_path) as c:
        backups, validators = c.services[1:N], c.validators
        await trio.sleep(1.0)
        crash_at = trio.current_time()
        c.crash(0)
        for news in c.member_news[1:]:
            await news.send({"event": "dead", "peer_id": validators[0]})
        # The backups leave view 0 at once: no request had to time out first.
        for r in c.recorders[1:N]:
            assert await r.wait_for(event="view", view=1) == crash_at
        for s in backups:
            st = s.status()
            assert (st["view"], st["primary"], st["primary_suspected"]) == (1, validators[1], False)
            assert st["dead_members"] == [validators[0]]
        assert c.services[N].status()["dead_members"] == [validators[0]]  # the follower too
        # The first submission after the crash commits at its own instant.
        t = trio.current_time()
        done = await _submit(backups[0], ["after"])
        assert done["after"][0] == t
        # A member that comes back is no longer held dead.
        await c.member_news[1].send({"event": "recovered", "peer_id": validators[0]})
        await trio.testing.wait_all_tasks_blocked()
        assert backups[0].status()["dead_members"] == []
