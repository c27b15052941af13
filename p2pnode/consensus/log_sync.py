"""The committed log as this node holds it, completed from validators and served to others.

:class:`LogSync` knows how far the local log is contiguous (``top``) and which entries lie
beyond a gap, and keeps it whole: a follower pulls certified entries from validators, one long
poll at a time (it hears of a commit one round trip after its validator does); a validator that
installed a checkpoint by state transfer fetches the entries below it that it never executed.
It serves its own log to both over request/response on reused streams
(``/p2pnode/pbft-log/1.0.0``, :class:`~p2pnode.network.rpc.RpcService`).

A node trusts no validator: every fetched entry's certificate (2f+1 signed commit votes of the
committee that ordered it, ``committee_at(seq)``, bound to its epoch) is checked before the entry
is appended. A reply is cut where the committee of the next entry is not known yet (a switch in
the entries before it, not yet folded): the rest comes with the next pull.

Cancellation: cancelling :meth:`LogSync.run` stops the server and the pull loop; appends are
single SQLite transactions, so a cancel leaves the log before or after one.

Errors: a reply that is malformed, out of order or carries an entry whose certificate does not
check is dropped (``sync_failures``) and the next validator is asked after ``SYNC_BACKOFF``.

Resources: replies carry at most ``LOG_BATCH`` entries; a long poll is held at most
``LONG_POLL`` seconds; the server runs at most 16 requests at once per peer stream.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import trio
from libp2p.abc import IHost
from libp2p.peer.id import ID

from p2pnode.consensus.store import ConsensusStore, LogRow, decode_entries
from p2pnode.network.rpc import RpcError, RpcService
from p2pnode_protocols.pbft import (
    CertifiedEntry,
    Committee,
    LocalProtocolError,
    RemoteProtocolError,
    Verifier,
    check_certified_entry,
)
from p2pnode_protocols.pbft.codec import MAX_MESSAGE_BYTES

log = logging.getLogger(__name__)

LOG_PROTOCOL = "/p2pnode/pbft-log/1.0.0"
#: Entries per log reply (each up to max_batch requests of at most 64 KiB: bounded by the frame).
LOG_BATCH = 64
#: Longest long poll a log server grants, and what followers ask for.
LONG_POLL = 2.0
#: Pause before asking the next validator after a failed log request.
SYNC_BACKOFF = 0.2

__all__ = ["LOG_BATCH", "LOG_PROTOCOL", "LONG_POLL", "SYNC_BACKOFF", "LogSync"]


class LogSync:
    """The local log's position, its pull loops and its server. ``on_row(row)`` is told of
    every row that is new to the local log, once, after it is on disk."""

    def __init__(
        self,
        host: IHost,
        db: ConsensusStore,
        *,
        committee_at: Callable[[int], Committee],
        peers: Callable[[], Sequence[bytes]],
        should_pull: Callable[[], bool],
        me: bytes,
        verifier: Verifier,
        request_timeout: float,
        write_timeout: float,
        counters: Counter[str],
        on_row: Callable[[LogRow], None],
    ) -> None:
        self.db = db
        self.committee_at = committee_at
        self.peers = peers
        self.should_pull = should_pull
        self.me = me
        self.verifier = verifier
        self.request_timeout = request_timeout
        self.counters = counters
        self.on_row = on_row
        self.rpc = RpcService(
            host,
            LOG_PROTOCOL,
            self.serve,
            max_frame=MAX_MESSAGE_BYTES + (1 << 16),
            max_inflight=16,
            write_timeout=write_timeout,
        )
        #: Every seq in 1..top is in the local log; ``_above`` holds the seqs beyond a gap.
        self.top = 0
        self._above: set[int] = set()
        self._changed = trio.Event()
        self._gap = trio.Event()
        #: Highest checkpoint installed without executing the entries below it.
        self._installed = 0

    def load(self) -> None:
        """Read where the log on disk is contiguous up to, and what lies beyond a gap."""
        self.top = self.db.contiguous_upto(0)
        _count, last = self.db.log_bounds()
        if last > self.top:
            self._above = {r.seq for r in self.db.read_log(self.top + 1, last, last - self.top)}
            self._gap.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve the log; nothing is pulled until :meth:`follow` or :meth:`fill_gaps` runs."""
        await self.rpc.run(task_status=task_status)

    # -- the local log -----------------------------------------------------------------------

    def committed(self, row: LogRow) -> None:
        """``row`` is in the local log (written before this call): advance, then tell."""
        seq = row.seq
        if seq <= self.top or seq in self._above:
            return
        if seq == self.top + 1:
            self.top = seq
            while self.top + 1 in self._above:
                self.top += 1
                self._above.discard(self.top)
            ev, self._changed = self._changed, trio.Event()
            ev.set()
        else:
            self._above.add(seq)
            self._gap.set()
        self.on_row(row)

    def installed(self, seq: int) -> None:
        """Execution resumed from checkpoint ``seq``: entries below it must be fetched."""
        self._installed = max(self._installed, seq)
        self._gap.set()

    def _append_fetched(self, entries: list[CertifiedEntry]) -> None:
        rows = [LogRow(ce.entry.seq, ce.entry.digest, ce, None) for ce in entries]
        self.db.save(None, rows)
        for row in rows:
            self.committed(row)

    # -- pulling -----------------------------------------------------------------------------

    async def fetch(self, peer: bytes, first: int, wait: float) -> list[CertifiedEntry]:
        """Certified entries first, first+1, ... from ``peer``, every certificate checked."""
        reply = await self.rpc.request(
            ID(peer),
            {"op": "log", "from": first, "limit": LOG_BATCH, "wait": wait},
            timeout=wait + self.request_timeout,
        )
        if not reply.get("ok"):
            raise RpcError(str(reply.get("err")))
        raw = reply.get("entries")
        if not isinstance(raw, list) or len(raw) > LOG_BATCH:
            raise RemoteProtocolError("log reply without a bounded entries list")
        out: list[CertifiedEntry] = []
        for item in raw:
            if type(item) is not bytes:
                raise RemoteProtocolError("log entry is not bytes")
            entries = decode_entries(item)
            if len(entries) != 1 or entries[0].entry.seq != first + len(out):
                raise RemoteProtocolError("log reply out of order")
            try:
                committee = self.committee_at(entries[0].entry.seq)
            except LocalProtocolError:
                break  # a switch may lie before it: fold what came first, then ask again
            # A follower trusts no validator: the certificate (2f+1 commit votes) decides.
            check_certified_entry(committee, self.verifier, entries[0])
            out.append(entries[0])
        return out

    async def follow(self) -> None:
        """Pull certified entries from validators, one long poll at a time, whenever
        ``should_pull()`` (a follower always; a validator whose replica is not the committee
        in force's, e.g. one of a retired epoch after a restart)."""
        i = int.from_bytes(hashlib.sha256(self.me).digest()[:4], "big")
        while True:
            others = self.peers()
            if not others or not self.should_pull():
                await trio.sleep(SYNC_BACKOFF)
                continue
            peer = others[i % len(others)]
            try:
                entries = await self.fetch(peer, self.top + 1, LONG_POLL)
            except Exception as exc:
                self.counters["sync_failures"] += 1
                log.debug("log sync from %s failed: %r", ID(peer), exc)
                i += 1
                await trio.sleep(SYNC_BACKOFF)
                continue
            if entries:
                self._append_fetched(entries)
            else:
                i += 1  # nothing new there: the next long poll asks another validator

    async def fill_gaps(self) -> None:
        """Validator: entries below an installed checkpoint were never executed here; fetch
        them (with certificates) from other validators so the local log is complete."""
        i = 0
        while True:
            await self._gap.wait()
            others = self.peers()
            if not self._above and self.top >= self._installed:
                self._gap = trio.Event()
                continue
            peer = others[i % len(others)]
            try:
                entries = await self.fetch(peer, self.top + 1, 0.0)
            except Exception as exc:
                self.counters["sync_failures"] += 1
                log.debug("gap fill from %s failed: %r", ID(peer), exc)
                entries = []
            if entries:
                self._append_fetched(entries)
            else:
                i += 1
                await trio.sleep(SYNC_BACKOFF)

    # -- serving -----------------------------------------------------------------------------

    async def serve(self, peer: ID, frame: dict[str, Any]) -> dict[str, Any]:
        if frame.get("op") != "log":
            return {"ok": False, "err": "unknown op"}
        first, limit, wait = frame.get("from"), frame.get("limit"), frame.get("wait", 0)
        if type(first) is not int or first < 1 or type(limit) is not int or limit < 1:
            return {"ok": False, "err": "from and limit must be positive ints"}
        if not isinstance(wait, int | float) or wait != wait or wait < 0:
            return {"ok": False, "err": "wait must be a non-negative number"}
        if first > self.top and wait > 0:
            with trio.move_on_after(min(float(wait), LONG_POLL)):
                while first > self.top:
                    await self._changed.wait()
        raw = self.db.read_raw_entries(first, min(limit, LOG_BATCH))
        return {"ok": True, "entries": raw, "top": self.top}
