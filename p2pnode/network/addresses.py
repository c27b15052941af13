"""Which addresses this node advertises: real interface addresses and announced ones.

A host listening on ``/ip4/0.0.0.0/tcp/4001`` accepts connections on every interface, but
``0.0.0.0`` is no address another machine can dial. :func:`addrs_factory` builds the function
py-libp2p's host applies to its listen addresses before it advertises them (identify, signed
peer records, ``host.get_addrs()``): each wildcard becomes one address per interface address
of this host, and the ``announce`` setting's addresses (a public IP, a NAT's forwarded port:
what the node cannot see on its own interfaces) come first. Order matters: peers keep only the
first few addresses of a node, and some dial only the first, so announced addresses lead,
then routable interface addresses, then loopback.

Interface addresses come from ``ifaddr`` (pure Python, installed with py-libp2p through
zeroconf); without it a wildcard is kept as it is.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Sequence

import multiaddr

log = logging.getLogger(__name__)

AddrsFactory = Callable[[list[multiaddr.Multiaddr]], list[multiaddr.Multiaddr]]

_WILDCARDS = {"ip4": "0.0.0.0", "ip6": "::"}


def interface_ips() -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The IP addresses of this host's interfaces (no IPv6 link-local: they need a scope)."""
    try:
        import ifaddr
    except ImportError:  # pragma: no cover - py-libp2p's zeroconf depends on it
        return []
    out: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    try:
        adapters = ifaddr.get_adapters()
    except OSError as exc:
        log.warning("cannot list network interfaces: %s", exc)
        return []
    for adapter in adapters:
        for ip in adapter.ips:
            raw = ip.ip if isinstance(ip.ip, str) else ip.ip[0]
            try:
                addr = ipaddress.ip_address(raw)
            except ValueError:
                continue
            if addr.version == 6 and addr.is_link_local:
                continue
            if addr not in out:
                out.append(addr)
    return out


def _rank(addr: multiaddr.Multiaddr) -> int:
    """0 for a routable address, 1 for loopback (useful only on this machine)."""
    for proto in ("ip4", "ip6"):
        try:
            value = addr.value_for_protocol(proto)
        except Exception:
            continue
        if value and ipaddress.ip_address(value).is_loopback:
            return 1
    return 0


def expand_wildcards(
    addrs: Sequence[multiaddr.Multiaddr],
    ips: Sequence[ipaddress.IPv4Address | ipaddress.IPv6Address] | None = None,
) -> list[multiaddr.Multiaddr]:
    """``addrs`` with each ``/ip4/0.0.0.0`` (``/ip6/::``) replaced by this host's IPv4 (IPv6)
    interface addresses, routable ones before loopback; duplicates dropped."""
    ips = interface_ips() if ips is None else ips
    out: list[multiaddr.Multiaddr] = []
    for addr in addrs:
        text = str(addr)
        replaced = False
        for proto, wildcard in _WILDCARDS.items():
            prefix = f"/{proto}/{wildcard}/"
            if not text.startswith(prefix):
                continue
            version = 4 if proto == "ip4" else 6
            rest = text[len(prefix) - 1 :]
            mine = [ip for ip in ips if ip.version == version]
            if mine:
                out.extend(multiaddr.Multiaddr(f"/{proto}/{ip}{rest}") for ip in mine)
                replaced = True
        if not replaced:
            out.append(addr)
    unique = list({str(a): a for a in out}.values())
    return sorted(unique, key=_rank)  # stable: the interfaces' order within each rank


def addrs_factory(announce: Sequence[str]) -> AddrsFactory:
    """The host's address factory: ``announce`` first, then the expanded listen addresses."""
    announced = [multiaddr.Multiaddr(a) for a in announce]

    def factory(candidates: list[multiaddr.Multiaddr]) -> list[multiaddr.Multiaddr]:
        merged = [*announced, *expand_wildcards(candidates)]
        return list({str(a): a for a in merged}.values())

    return factory


def advertise_relayed(host: object, relayed: Callable[[], Sequence[multiaddr.Multiaddr]]) -> None:
    """Make ``host.get_addrs()`` lead with ``relayed()`` (each ``<relay addr>/p2p/<relay>
    /p2p-circuit``, with our ``/p2p/<id>`` appended): a node behind a NAT is reached through
    its relays; a hole punch can then bring a direct connection.

    Not through the address factory: py-libp2p 0.8.1's ``get_addrs`` strips everything from an
    address's first ``/p2p/`` before appending ours, which turns a relayed address into the
    relay's own address with our id (a wrong address).
    """
    plain = host.get_addrs  # type: ignore[attr-defined]
    me = multiaddr.Multiaddr(f"/p2p/{host.get_id()}")  # type: ignore[attr-defined]

    def get_addrs() -> list[multiaddr.Multiaddr]:
        through_relays = [a.encapsulate(me) for a in relayed()]
        return list({str(a): a for a in [*through_relays, *plain()]}.values())

    host.get_addrs = get_addrs  # type: ignore[attr-defined]


__all__ = [
    "AddrsFactory",
    "addrs_factory",
    "advertise_relayed",
    "expand_wildcards",
    "interface_ips",
]
