"""The ``nat.*``, ``relay.*`` and ``discovery.*`` settings: reachability, relays, hole
punching and LAN discovery (docs/networking.md)."""

from __future__ import annotations

from p2pnode.config.setting import Setting, _range

__all__ = ["NAT_SCHEMA"]


def _one_of(*choices: str):  # type: ignore[no-untyped-def]
    return lambda v: None if v in choices else f"must be one of {', '.join(choices)}"


def _relay_addrs(v: list[str]) -> str | None:
    import multiaddr  # imported here: see schema._multiaddrs

    for a in v:
        try:
            multiaddr.Multiaddr(a)
        except Exception as exc:
            return f"{a!r} is not a multiaddr ({exc})"
        if "/p2p/" not in a or "/p2p-circuit" in a:
            return f"{a!r}: give the relay's direct address with /p2p/<peer id>"
    return None


NAT_SCHEMA: tuple[Setting, ...] = (
    Setting(
        "nat.reachability",
        str,
        "auto",
        "Whether peers can dial this node: auto (find out by asking connected peers to dial "
        "back), public or private (take it as given). A private node reserves a slot on a relay "
        "and advertises its relayed address.",
        _one_of("auto", "public", "private"),
    ),
    Setting(
        "nat.relays",
        list,
        [],
        "Relays a private node reserves a slot on, as full multiaddrs with /p2p/<peer id>. "
        "Empty: any connected peer that serves as a relay.",
        _relay_addrs,
    ),
    Setting(
        "nat.max_reservations",
        int,
        2,
        "How many relays a private node holds a reservation on at once.",
        _range(1, 8),
    ),
    Setting(
        "nat.confirmations",
        int,
        2,
        "Dial-back answers that must agree before the node calls itself public or private "
        "(fewer when fewer peers can be asked).",
        _range(1, 8),
    ),
    Setting(
        "nat.check_interval",
        float,
        300.0,
        "Seconds between reachability checks once known (every few seconds until then).",
        _range(1, 86400),
    ),
    Setting(
        "nat.dialback_timeout",
        float,
        3.0,
        "Seconds a peer tries to dial this node back at one address before it says no.",
        _range(0.2, 60),
    ),
    Setting(
        "nat.hole_punch",
        str,
        "auto",
        "Direct connections through NATs (DCUtR): auto (punch towards every peer reached only "
        "through a relay), manual (only when asked: IPC nat.punch) or off.",
        _one_of("auto", "manual", "off"),
    ),
    Setting(
        "relay.service",
        str,
        "auto",
        "Serve as a relay for private peers: auto (once this node finds it is public), on, off.",
        _one_of("auto", "on", "off"),
    ),
    Setting(
        "relay.max_reservations",
        int,
        32,
        "Peers that may hold a reservation on this relay at once.",
        _range(1, 4096),
    ),
    Setting(
        "relay.reservation_ttl",
        float,
        3600.0,
        "Seconds a reservation lasts (the holder renews it before then).",
        _range(10, 86400),
    ),
    Setting(
        "relay.max_circuits",
        int,
        32,
        "Relayed connections this relay carries at once.",
        _range(1, 4096),
    ),
    Setting(
        "relay.max_circuits_per_peer",
        int,
        4,
        "Relayed connections to one reserved peer at once.",
        _range(1, 256),
    ),
    Setting(
        "relay.max_circuit_bytes",
        int,
        128 << 20,
        "Bytes one relayed connection may carry (both directions together) before the relay "
        "cuts it.",
        _range(1024, 1 << 40),
        size=True,
    ),
    Setting(
        "relay.max_circuit_duration",
        float,
        600.0,
        "Seconds one relayed connection may last before the relay cuts it.",
        _range(1, 86400),
    ),
    Setting(
        "relay.max_rate",
        float,
        8.0,
        "MiB/s this relay forwards over all circuits together (0: no limit); faster senders wait.",
        _range(0, 1e6),
    ),
    Setting(
        "relay.max_requests_per_minute",
        float,
        30.0,
        "Reservation and connect requests one peer may make per minute; more are refused.",
        _range(1, 1e6),
    ),
    Setting(
        "discovery.mdns",
        bool,
        False,
        "Find daemons on the same LAN by multicast DNS and connect to them, with no bootstrap "
        "address. Off by default: it announces this node to the whole LAN.",
    ),
)
