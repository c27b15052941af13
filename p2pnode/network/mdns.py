"""LAN discovery: connect to the daemons multicast DNS finds (``discovery.mdns``).

py-libp2p's mDNS (zeroconf, started with the host by ``build_host(mdns=True)``) announces
this node on the LAN and puts the addresses of the peers it hears into the peerstore, from
zeroconf's own thread; it connects to nobody (the swarm's auto-connector would, and we turn
that off: docs/networking.md). :class:`MdnsConnector` polls what it found and dials each new
peer through the DHT service, so the peer also enters the routing table: a LAN of daemons
with no bootstrap address ends up joined.

Cancellation: :meth:`MdnsConnector.run` runs until cancelled. Errors: a failed dial is
logged and retried after ``RETRY`` seconds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Any

import trio
from libp2p.abc import IHost
from libp2p.peer.id import ID

log = logging.getLogger(__name__)

POLL = 0.5
RETRY = 10.0


class MdnsConnector:
    def __init__(self, host: IHost, *, connect: Callable[[str], Awaitable[Any]]) -> None:
        self.host = host
        self._connect = connect
        self.found: set[str] = set()  # peer ids heard on the LAN
        self._retry_at: dict[str, float] = {}

    def _heard(self) -> list[ID]:
        mdns = getattr(self.host, "mDNS", None)
        listener = getattr(mdns, "listener", None)
        services = getattr(listener, "discovered_services", None) or {}
        # zeroconf's thread adds entries while we read: copy first.
        return [peer for peer, _at in list(services.values())]

    async def run(
        self, *, task_status: trio.TaskStatus[MdnsConnector] = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started(self)
        me = self.host.get_id()
        while True:
            connected = set(self.host.get_connected_peers())
            for peer in self._heard():
                name = peer.to_base58()
                self.found.add(name)
                if (
                    peer == me
                    or peer in connected
                    or self._retry_at.get(name, 0) > time.monotonic()
                ):
                    continue
                await self._dial(peer)
            await trio.sleep(POLL)

    async def _dial(self, peer: ID) -> None:
        name = peer.to_base58()
        addrs: list[str] = []
        with suppress(Exception):
            addrs = [str(a) for a in self.host.get_peerstore().addrs(peer)]
        for addr in addrs:
            try:
                await self._connect(f"{addr}/p2p/{name}")
                log.info("mDNS: joined %s at %s", name, addr)
                self._retry_at.pop(name, None)
                return
            except Exception as exc:
                log.debug("mDNS: %s at %s did not answer: %s", name, addr, exc)
        self._retry_at[name] = time.monotonic() + RETRY


__all__ = ["MdnsConnector"]
