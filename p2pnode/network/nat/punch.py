"""Hole punching: py-libp2p's DCUtR, with a record of which connections it made.

Two peers joined through a relay exchange their addresses over the circuit (CONNECT), then
dial each other at the same moment (SYNC, half a round trip later), from their listen ports,
so that each NAT sees an outgoing connection before the other's packets arrive and lets them
in: a TCP simultaneous open, which the library upgrades with fixed Noise roles
(docs/networking.md has what was checked). :class:`HolePuncher` changes three things:

* ``mode``: ``auto`` lets the library's loop start a punch towards every peer reached only
  through a relay; ``manual`` punches only when asked (:meth:`HolePuncher.initiate_hole_punch`,
  IPC ``nat.punch``), so a test can move bytes over the relay first;
* a successful punch is recorded per peer (``status`` reports the connection as ``punched``),
  with counters of attempts;
* after a punch the relayed connection closes ``RELAY_CLOSE_GRACE`` seconds later (the
  library waits a minute), and only while the direct one still works: new streams prefer the
  direct connection, but streams kept open for reuse (the blob fetcher's, the datagram
  transport's) stay on the connection they were opened on until it closes. The reservation
  and the relayed addresses stay: should the direct connection fail, the next dial goes
  through the relay again.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import trio
from libp2p.abc import IHost
from libp2p.connection_types import ConnectionType
from libp2p.peer.id import ID
from libp2p.relay.circuit_v2.dcutr import PROTOCOL_ID as DCUTR_PROTOCOL
from libp2p.relay.circuit_v2.dcutr import DCUtRProtocol
from multiaddr import Multiaddr

from p2pnode.network.host import set_guarded_handler

log = logging.getLogger(__name__)

PUNCH_MODES = ("auto", "manual", "off")
# Seconds the relayed connection outlives a punch: streams under way on it finish first.
RELAY_CLOSE_GRACE = 5.0


class HolePuncher(DCUtRProtocol):
    def __init__(self, host: IHost, *, mode: str, timeout: float) -> None:
        if mode not in PUNCH_MODES:
            raise ValueError(f"mode must be one of {PUNCH_MODES}")
        # Round numbers: the library types its timeouts as int.
        t = max(1, round(timeout))
        super().__init__(host, read_timeout=t, write_timeout=t, dial_timeout=t)
        self.mode = mode
        self.punched: dict[ID, float] = {}  # peer -> unix time of the punch
        self.attempts = 0
        self.successes = 0

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Serve DCUtR and, in ``auto`` mode, drive punches; until cancelled."""
        if self.mode != "off":
            set_guarded_handler(self.host, DCUTR_PROTOCOL, self._handle_dcutr_stream)
        self.event_started.set()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            if self.mode == "auto":
                nursery.start_soon(self._auto_drive_loop)
            task_status.started(self)
            await trio.sleep_forever()

    async def _perform_hole_punch(
        self, peer_id: ID, addrs: list[Multiaddr], as_responder: bool = False
    ) -> bool:
        self.attempts += 1
        ok = await super()._perform_hole_punch(peer_id, addrs, as_responder)
        if ok:
            self.successes += 1
            self.punched[peer_id] = time.time()
            log.info("hole punch to %s succeeded: direct connection", peer_id)
        else:
            log.info("hole punch to %s failed; staying on the relay", peer_id)
        return ok

    async def _try_unilateral_upgrade(self, peer_id: ID) -> bool:
        """A plain dial of the peer's direct addresses (one of us is public, or we share a
        LAN): a direct connection without a punch; the relayed one goes as after a punch."""
        ok = await super()._try_unilateral_upgrade(peer_id)
        if ok and any(
            _kind(c) == ConnectionType.RELAYED for c in live_connections(self.host, peer_id)
        ):
            self._schedule_relay_close(peer_id)
        return ok

    async def _close_relayed_conns_after_grace(
        self, peer_id: ID, grace: float = RELAY_CLOSE_GRACE
    ) -> None:
        await super()._close_relayed_conns_after_grace(peer_id, grace)

    def on_peer_disconnected(self, peer_id: ID) -> None:
        super().on_peer_disconnected(peer_id)
        if not has_direct(self.host, peer_id):
            self.punched.pop(peer_id, None)

    def stats(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "attempts": self.attempts,
            "successes": self.successes,
            "punched_peers": len(self.punched),
        }


def live_connections(host: IHost, peer: ID) -> list[Any]:
    network: Any = host.get_network()
    try:
        return [c for c in network.get_connections(peer) if not getattr(c, "is_closed", False)]
    except Exception:
        return []


def has_direct(host: IHost, peer: ID) -> bool:
    return any(_kind(c) == ConnectionType.DIRECT for c in live_connections(host, peer))


def _kind(conn: Any) -> ConnectionType:
    try:
        return conn.get_connection_type()
    except Exception:
        return ConnectionType.DIRECT


__all__ = ["PUNCH_MODES", "HolePuncher", "has_direct", "live_connections"]
