"""The NAT service: is this node reachable, and if not, how do peers reach it.

Started by the node after the DHT (it dials configured relays through it). What it runs:

* the **dial-back** server, and a check loop asking connected peers (directly connected ones
  that speak ``/p2pnode/dialback/1.0.0``) to dial this node back: every couple of seconds
  until the answers add up to public or private, then every ``nat.check_interval``
  (:class:`~p2pnode_protocols.nat.reachability.ReachabilityTracker` decides). With
  ``nat.reachability`` set to public or private there is no check;
* the **relay client**: a private node keeps a reservation on up to ``nat.max_reservations``
  relays (``nat.relays``, else connected peers that serve as relays), renews each before it
  lapses, replaces one whose relay went away, and advertises its relayed addresses
  (:meth:`NatService.relayed_addrs`: the host's address factory reads them; connected peers
  are told by an identify push). Dials of relayed addresses go through :mod:`.circuit`;
* the **relay server** (:mod:`.relay`): stop side always; hop side when ``relay.service`` is
  on, or auto and this node is public;
* **hole punching** (:mod:`.punch`).

Cancellation: :meth:`NatService.run` runs until its nursery is cancelled; reservations lapse
on the relays by themselves (they end with the connection). Errors: a peer's bad answer, a
relay's refusal or a failed dial is logged and retried later, never raised. Resources: at most
``nat.max_reservations`` reservations, 16 verdicts, three dial-back requests at a time; the
relay side's are bounded by the ``relay.*`` limits.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Any

import multiaddr
import trio
from libp2p.abc import IHost
from libp2p.connection_types import ConnectionType
from libp2p.identity.identify_push.identify_push import push_identify_to_peers
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID as HOP_PROTOCOL

from p2pnode.config import Config
from p2pnode.network.host import set_guarded_handler
from p2pnode.network.nat import circuit
from p2pnode.network.nat.dialback import (
    DIALBACK_PROTOCOL,
    DialbackServer,
    ProbeNoise,
    ask_dialback,
)
from p2pnode.network.nat.punch import HolePuncher, has_direct, live_connections
from p2pnode.network.nat.relay import RelayServer, RelaySettings
from p2pnode.network.nat.reserve import Reservation, ReserveError, reserve
from p2pnode_protocols.nat.dialback import tcp_port
from p2pnode_protocols.nat.reachability import Reachability, ReachabilityTracker

log = logging.getLogger(__name__)

# Until the node knows, it asks again this often (seconds); a verdict takes one dial-back.
UNKNOWN_RETRY = 2.0
# Servers asked at once per check.
ASK_AT_ONCE = 3
# The reservation loop's tick, and how long a relay that refused us is left alone: doubling
# from the first to the last (a relay may not serve yet: it is still finding out it is public).
RESERVE_TICK = 1.0
RELAY_BACKOFF = (2.0, 30.0)
# A reservation is renewed once less than this share of its lifetime is left.
RENEW_SHARE = 0.25


class NatService:
    def __init__(
        self,
        host: IHost,
        cfg: Config,
        *,
        connect: Callable[[str], Awaitable[Any]],
    ) -> None:
        """``connect(full multiaddr)`` dials a configured relay (the DHT's connect, so the
        relay enters the routing table too)."""
        self.host = host
        self.cfg = cfg
        self._connect = connect
        nat = cfg.nat
        self.tracker = ReachabilityTracker(
            confirmations=nat.confirmations, ttl=max(nat.check_interval * 2, 60.0)
        )
        if nat.reachability != "auto":
            self.tracker.status = Reachability(nat.reachability)
        r = cfg.relay
        self.relay = RelayServer(
            host,
            RelaySettings(
                max_reservations=r.max_reservations,
                reservation_ttl=r.reservation_ttl,
                max_circuits=r.max_circuits,
                max_circuits_per_peer=r.max_circuits_per_peer,
                max_circuit_bytes=r.max_circuit_bytes,
                max_circuit_duration=r.max_circuit_duration,
                max_rate=r.max_rate * (1 << 20),
                max_requests_per_minute=r.max_requests_per_minute,
                write_timeout=cfg.network.request_timeout,
            ),
        )
        self.dialback = DialbackServer(host, timeout=nat.dialback_timeout)
        self._noise = ProbeNoise()
        self.puncher = HolePuncher(
            host, mode=nat.hole_punch, timeout=min(cfg.network.connect_timeout, 5.0)
        )
        self.reservations: dict[ID, Reservation] = {}
        # relay peer id -> (monotonic time to retry, pause after the next failure)
        self._relay_backoff: dict[str, tuple[float, float]] = {}
        self.checked_at: float | None = None
        self._nursery: trio.Nursery | None = None

    # -- views --------------------------------------------------------------------------------

    @property
    def reachability(self) -> str:
        """``public``; ``relayed`` (private, reachable through a relay); ``private`` (no
        reservation yet); ``unknown``."""
        status = self.tracker.status
        if status is Reachability.PRIVATE and self.reservations:
            return "relayed"
        return status.value

    def relayed_addrs(self) -> list[multiaddr.Multiaddr]:
        """Our addresses through the relays we hold a reservation on (without /p2p/<us>)."""
        now = time.time()
        out: list[multiaddr.Multiaddr] = []
        for res in self.reservations.values():
            if res.expires > now:
                for a in res.circuit_addrs():
                    with suppress(Exception):
                        out.append(multiaddr.Multiaddr(a))
        return out

    def connection(self, peer: ID) -> dict[str, Any]:
        """How we are connected to ``peer``: ``{"connection": "direct" | "relayed" |
        "punched" (direct, made by a hole punch) | None, "relay": relay id of a relayed
        connection in use or None}``."""
        conns = live_connections(self.host, peer)
        relays = [circuit.relay_of_connection(c) for c in conns]
        relay = next((r for r in relays if r is not None), None)
        if any(r is None for r in relays):
            kind = "punched" if peer in self.puncher.punched else "direct"
            return {"connection": kind, "relay": relay}
        return {"connection": "relayed" if relays else None, "relay": relay}

    def status(self) -> dict[str, Any]:
        now = time.time()
        mono = time.monotonic()
        return {
            "reachability": self.reachability,
            "configured": self.cfg.nat.reachability,
            "checked_ago": None if self.checked_at is None else round(mono - self.checked_at, 1),
            "verdicts": [
                {"peer_id": v.server, "reached": v.reached, "age": round(mono - v.at, 1)}
                for v in self.tracker.verdicts(mono)
            ],
            "relayed_addrs": [f"{a}/p2p/{self.host.get_id()}" for a in self.relayed_addrs()],
            "reservations": [
                {
                    "relay": relay.to_base58(),
                    "expires_in": round(res.expires - now, 1),
                    "max_circuit_bytes": res.max_bytes,
                    "max_circuit_seconds": res.max_seconds,
                }
                for relay, res in self.reservations.items()
            ],
            "relay_service": {"mode": self.cfg.relay.service, **self.relay.stats()},
            "hole_punch": self.puncher.stats(),
            "dialback": {"answered": self.dialback.answered, "refused": self.dialback.refused},
        }

    # -- running ------------------------------------------------------------------------------

    async def run(
        self, *, task_status: trio.TaskStatus[NatService] = trio.TASK_STATUS_IGNORED
    ) -> None:
        circuit.install(self.host, timeout=self.cfg.network.connect_timeout)
        self.relay.install()
        if self.cfg.relay.service == "on":
            self.relay.start_serving()
        set_guarded_handler(self.host, DIALBACK_PROTOCOL, self.dialback.handle)
        self._noise.install()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await nursery.start(self.puncher.run)
                if self.cfg.nat.reachability == "auto":
                    nursery.start_soon(self._check_loop)
                else:
                    self._apply()
                nursery.start_soon(self._reserve_loop)
                task_status.started(self)
        finally:
            self._noise.remove()

    async def punch(self, peer: ID) -> bool:
        """Try a hole punch to ``peer`` now (connected through a relay); True once a direct
        connection exists."""
        return bool(await self.puncher.initiate_hole_punch(peer))

    # -- reachability -------------------------------------------------------------------------

    def _listen_ports(self) -> tuple[int, ...]:
        ports: list[int] = []
        for a in self.host.get_transport_addrs():
            p = tcp_port(str(a))
            if p is not None and p not in ports:
                ports.append(p)
        return tuple(ports[:8])

    def _servers(self) -> list[ID]:
        """Connected peers that can answer a dial-back: directly connected, and speaking it."""
        out = []
        for peer in self.host.get_connected_peers():
            if not has_direct(self.host, peer):
                continue
            if DIALBACK_PROTOCOL in _protocols(self.host, peer):
                out.append(peer)
        return out

    async def _check_loop(self) -> None:
        while True:
            with suppress(Exception):
                await self.check_once()
            known = self.tracker.status is not Reachability.UNKNOWN
            await trio.sleep(self.cfg.nat.check_interval if known else UNKNOWN_RETRY)

    async def check_once(self) -> Reachability:
        """Ask up to a few connected peers that have no counted verdict to dial us back."""
        ports = self._listen_ports()
        servers = {p.to_base58(): p for p in self._servers()}
        now = time.monotonic()
        # Once known, each check asks again those whose answer is a check old: the verdicts
        # count for two intervals, so one missed check does not forget the status.
        known = self.tracker.status is not Reachability.UNKNOWN
        refresh = self.cfg.nat.check_interval * 0.9 if known else None
        due = self.tracker.due(sorted(servers), now, older_than=refresh)[:ASK_AT_ONCE]
        if not ports or not due:
            return self.tracker.status
        before = self.tracker.status

        async def ask(name: str) -> None:
            try:
                resp = await ask_dialback(
                    self.host,
                    servers[name],
                    ports,
                    timeout=self.cfg.nat.dialback_timeout,
                    noise=self._noise,
                )
            except Exception as exc:
                log.debug("dial-back request to %s failed: %r", name, exc)
                return
            if resp.refused:
                log.debug("%s would not dial back: %s", name, resp.refused)
                return
            self.tracker.record(name, bool(resp.reached), time.monotonic())

        async with trio.open_nursery() as nursery:
            for name in due:
                nursery.start_soon(ask, name)
        now = time.monotonic()
        self.checked_at = now
        if not self.tracker.due(sorted(servers), now):
            self.tracker.conclude(now)
        if self.tracker.status is not before:
            log.info("reachability: %s (was %s)", self.tracker.status.value, before.value)
        self._apply()
        return self.tracker.status

    def _apply(self) -> None:
        """Serve as a relay when public (relay.service auto)."""
        if self.cfg.relay.service != "auto":
            return
        if self.tracker.status is Reachability.PUBLIC and not self.relay.serving:
            self.relay.start_serving()
            self._addrs_changed()
        elif self.tracker.status is Reachability.PRIVATE and self.relay.serving:
            self.relay.stop_serving()
            self._addrs_changed()

    # -- reservations -------------------------------------------------------------------------

    async def _reserve_loop(self) -> None:
        while True:
            try:
                if self.tracker.status is Reachability.PRIVATE:
                    await self._keep_reservations()
                elif self.reservations:
                    log.info("reachable directly: dropping relay reservations")
                    self.reservations.clear()
                    self._addrs_changed()
            except Exception as exc:
                log.warning("relay reservations: %r", exc)
            await trio.sleep(RESERVE_TICK)

    def _relay_candidates(self) -> list[tuple[ID, list[str]]]:
        """Relays to try, in order: the configured ones, then connected peers serving as
        relays; each with the addresses we know it by."""
        out: list[tuple[ID, list[str]]] = []
        for addr in self.cfg.nat.relays:
            with suppress(Exception):
                info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
                out.append((info.peer_id, [addr]))
        if not self.cfg.nat.relays:
            for peer in self.host.get_connected_peers():
                if has_direct(self.host, peer) and HOP_PROTOCOL in _protocols(self.host, peer):
                    addrs = [f"{a}/p2p/{peer}" for a in _addrs(self.host, peer)]
                    out.append((peer, [a for a in addrs if not circuit.is_circuit(a)]))
        return out

    async def _keep_reservations(self) -> None:
        now = time.time()
        changed = False
        connected = set(self.host.get_connected_peers())
        for relay, res in list(self.reservations.items()):
            if relay not in connected or res.expires <= now:
                log.info("reservation on relay %s lapsed", relay)
                del self.reservations[relay]
                changed = True
        ttl = self.cfg.relay.reservation_ttl
        for relay, res in list(self.reservations.items()):
            if res.expires - now < max(RESERVE_TICK * 5, ttl * RENEW_SHARE):
                with suppress(ReserveError):
                    self.reservations[relay] = await self._reserve(relay, list(res.relay_addrs))
        mono = time.monotonic()
        for relay, addrs in self._relay_candidates():
            if len(self.reservations) >= self.cfg.nat.max_reservations:
                break
            retry_at, pause = self._relay_backoff.get(str(relay), (0.0, RELAY_BACKOFF[0]))
            if relay in self.reservations or retry_at > mono:
                continue
            try:
                if relay not in self.host.get_connected_peers():
                    await self._connect(addrs[0])
                self.reservations[relay] = await self._reserve(relay, addrs)
                changed = True
                self._relay_backoff.pop(str(relay), None)
                log.info(
                    "reserved a slot on relay %s: reachable at %s",
                    relay,
                    ", ".join(self.reservations[relay].circuit_addrs()),
                )
            except Exception as exc:
                log.info("no reservation on relay %s (again in %.0f s): %s", relay, pause, exc)
                self._relay_backoff[str(relay)] = (mono + pause, min(pause * 2, RELAY_BACKOFF[1]))
        if changed:
            self._addrs_changed()

    async def _reserve(self, relay: ID, addrs: list[str]) -> Reservation:
        return await reserve(
            self.host, relay, timeout=self.cfg.network.request_timeout, fallback_addrs=addrs
        )

    def _addrs_changed(self) -> None:
        """Tell connected peers our addresses and protocols changed (identify push)."""
        if self._nursery is None:
            return

        async def push() -> None:
            with trio.move_on_after(self.cfg.network.request_timeout * 2), suppress(Exception):
                await push_identify_to_peers(self.host)

        self._nursery.start_soon(push)


def _protocols(host: IHost, peer: ID) -> list[str]:
    try:
        return [str(p) for p in host.get_peerstore().get_protocols(peer)]
    except Exception:
        return []


def _addrs(host: IHost, peer: ID) -> list[str]:
    """``peer``'s direct addresses from its live connections' far ends first, then the
    peerstore's."""
    out: list[str] = []
    for conn in live_connections(host, peer):
        with suppress(Exception):
            if conn.get_connection_type() == ConnectionType.DIRECT:
                for a in conn.get_transport_addresses():
                    out.append(str(a))
    with suppress(Exception):
        out.extend(str(a) for a in host.get_peerstore().addrs(peer))
    return list(dict.fromkeys(a for a in out if "/p2p/" not in a))


__all__ = ["NatService"]
