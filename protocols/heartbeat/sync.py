"""Push-pull anti-entropy: repairing what the epidemic missed.

Every ``push_pull_interval`` (and a few periods after joining, or after being declared dead) a
member sends one random member its bucket digests (SYNC): an XOR of ``(member, incarnation,
status)`` hashes per bucket, ``8 * sync_buckets`` bytes whatever N. The receiver answers
(SYNC_ACK) with its own digests and its records of the buckets that differ, most recently
changed first within ``sync_diff_bytes``; the initiator applies them and sends its records of
the buckets that still differ (SYNC_PAGE). When most buckets differ (a healed partition, a
restart), or when joining (no digest), a bounded page of the view goes instead: accusations
first, then random alive records.
"""

from __future__ import annotations

import math
from dataclasses import replace

from .codec import UPDATE_OVERHEAD, update_size
from .core import MachineCore
from .events import Effect, Send, TimerKind
from .messages import Alive, Dead, Packet, PacketKind, Suspect, Update
from .state import MemberStatus
from .table import bucket_of, entry_hash

__all__ = ["AntiEntropy"]

_ALIVE, _SUSPECT, _DEAD = MemberStatus.ALIVE, MemberStatus.SUSPECT, MemberStatus.DEAD
_STATUS = {Alive: int(_ALIVE), Suspect: int(_SUSPECT), Dead: int(_DEAD)}


class AntiEntropy(MachineCore):
    """Digest exchanges and view pages with one random member at a time."""

    def _init_sync(self) -> None:
        #: When the next digest exchange is due (``_sync_soon`` may bring it forward).
        self._push_pull_at = math.inf

    def _on_push_pull_timer(self, arg: None, now: float, out: list[Effect]) -> None:
        self._sync_with_random(now, out, full=False)
        self._push_pull_at = now + self.cfg.push_pull_interval
        out.append(self._timer(TimerKind.PUSH_PULL, None, self._push_pull_at))

    def _sync_with_random(self, now: float, out: list[Effect], *, full: bool) -> None:
        """Push-pull with one random member: a full bounded page when joining, else our bucket
        digests (anti-entropy: in-sync members exchange ``2 * 8 * sync_buckets`` bytes)."""
        for peer in self._random_nodes(1, set(), now):
            self._synced = True
            if full:
                out.append(Send(to=peer, msg=self._sync_packet(PacketKind.SYNC, peer)))
            else:
                pk = self._page_packet(PacketKind.SYNC, peer, ())
                out.append(Send(to=peer, msg=pk))

    def _sync_soon(self, now: float, out: list[Effect]) -> None:
        """We were declared dead (a healed partition, a long stall): our view has drifted, and
        an epidemic busy with many refutations misses a few members, so bring the next digest
        exchange forward to within a few periods (once; it re-arms as usual). Only members
        that were declared dead pay for it, so its cost does not grow with N."""
        cfg = self.cfg
        if cfg.push_pull_interval <= 0:
            return
        at = now + 3 * cfg.probe_interval * self._rng.uniform(1, 2)
        if at < self._push_pull_at:
            self._push_pull_at = at
            out.append(self._timer(TimerKind.PUSH_PULL, None, at))

    # -- digests -------------------------------------------------------------------------------

    def _digests(self) -> list[int]:
        """Our bucket digests: the table's, plus our own (member, incarnation, alive) entry."""
        d = list(self.table.digests)
        d[bucket_of(self.me, len(d))] ^= entry_hash(self.me, self.incarnation, _ALIVE)
        return d

    def _digest_bytes(self) -> bytes:
        return b"".join(x.to_bytes(8, "big") for x in self._digests())

    def _differing(self, digest: bytes) -> list[int] | None:
        """Buckets whose digest differs from ``digest`` (None: not comparable, e.g. another
        bucket count)."""
        mine = self._digests()
        if len(digest) != 8 * len(mine):
            return None
        return [
            b for b, x in enumerate(mine) if int.from_bytes(digest[8 * b : 8 * b + 8], "big") != x
        ]

    def _diff_records(self, buckets: list[int], skip: set[tuple[bytes, int, int]]) -> list[Update]:
        """Our records of ``buckets``, most recently changed first, within ``sync_diff_bytes``;
        records the peer just sent us (``skip``: node, incarnation, status) are left out."""
        mine = bucket_of(self.me, self.cfg.sync_buckets)
        cands: list[tuple[float, Update]] = []
        for b in buckets:
            if b == mine and (self.me, self.incarnation, int(_ALIVE)) not in skip:
                cands.append((math.inf, self.self_alive))
            for m in self.table.in_bucket(b):
                if (m.node, m.incarnation, int(m.status)) not in skip:
                    cands.append((m.updated, m.last))
        cands.sort(key=lambda c: -c[0])
        budget = self.cfg.sync_diff_bytes
        page: list[Update] = []
        for _, u in cands:
            cost = update_size(u) + UPDATE_OVERHEAD
            if cost > budget:
                break
            budget -= cost
            page.append(u)
        return page

    # -- packets -------------------------------------------------------------------------------

    def _page_packet(
        self, kind: PacketKind, to: bytes, updates: tuple[Update, ...], *, digest: bool = True
    ) -> Packet:
        """A push-pull packet carrying ``updates`` (no piggyback) and, if asked, our digests."""
        m = self.table.get(to)
        return Packet(
            kind=kind,
            sender=self.me,
            inc=self.incarnation,
            yinc=-1 if m is None else m.incarnation,
            ystatus=-1 if m is None else int(m.status),
            updates=updates,
            digest=self._digest_bytes() if digest else b"",
        )

    def _on_sync(self, sender: bytes, p: Packet, now: float, out: list[Effect]) -> None:
        """SYNC, SYNC_ACK and SYNC_PAGE after their updates were applied."""
        kind = p.kind
        diff = self._differing(p.digest) if p.digest else None
        heavy = diff is not None and 4 * len(diff) > self.cfg.sync_buckets
        if kind is PacketKind.SYNC:
            if diff is None or heavy:
                # A join (no digest) or a healed partition: a bounded page of our view (with
                # our digests when theirs came, so the initiator answers with its page).
                pk = self._sync_packet(PacketKind.SYNC_ACK, sender)
                if diff is not None:
                    self.counters["sync_pages"] += 1
                    pk = replace(pk, digest=self._digest_bytes())
            else:
                self.counters["sync_digests"] += 1
                pk = self._page_packet(
                    PacketKind.SYNC_ACK, sender, tuple(self._diff_records(diff, set()))
                )
            out.append(Send(to=sender, msg=pk))
        elif kind is PacketKind.SYNC_ACK and diff:
            # What still differs after their records: ours may be the newer ones.
            if heavy:
                pk = self._sync_packet(PacketKind.SYNC_PAGE, sender)
            else:
                sent = {(u.node, u.incarnation, _STATUS[type(u)]) for u in p.updates}
                page = self._diff_records(diff, sent)
                if not page:
                    return
                pk = self._page_packet(PacketKind.SYNC_PAGE, sender, tuple(page), digest=False)
            out.append(Send(to=sender, msg=pk))

    def _sync_packet(self, kind: PacketKind, to: bytes) -> Packet:
        """A bounded page of our view: accusations (newest first), then random alive records
        with ours first. A joiner learns who is gone; a healed island learns who is back."""
        budget = self.cfg.max_sync_bytes
        page: list[Update] = [self.self_alive]
        budget -= update_size(self.self_alive) + UPDATE_OVERHEAD
        seen = {self.me}
        accused = sorted(self._dead_since.items(), key=lambda kv: -kv[1])
        candidates = [x for x in self._suspicions] + [x for x, _ in accused]
        ids = self.table.ids
        for _ in range(min(len(ids), 4 * (budget // 200 + 1))):
            candidates.append(ids[self._rng.randrange(len(ids))])
        for x in candidates:
            if x in seen:
                continue
            seen.add(x)
            m = self.table.get(x)
            if m is None:
                continue
            cost = update_size(m.last) + UPDATE_OVERHEAD
            if cost > budget:
                break
            budget -= cost
            page.append(m.last)
        return self._page_packet(kind, to, tuple(page), digest=False)
