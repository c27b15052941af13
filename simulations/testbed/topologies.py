"""Named topologies: each function returns a configured Testbed (not yet up).

Every :class:`Topology` also says which hosts run a daemon and which one the others bootstrap
from (None: no bootstrap address, the daemons are to find each other by mDNS). Link settings
given here are applied by the switch when the testbed comes up.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from p2pnode_simulations.testbed.links import LinkSpec
from p2pnode_simulations.testbed.testbed import Testbed

LAN_LINK = LinkSpec(delay=0.040, jitter=0.010, loss=0.01)
"""Every pair of ``lan6``: 40 ms ± 10 ms one way (80 ms round trip), 1% loss per direction."""
WAN_LINK = LinkSpec(delay=0.020, jitter=0.005)
CHAOS_LINK = LinkSpec(delay=0.020, jitter=0.005, loss=0.005)


def lan6(name: str = "tb", seed: int = 0) -> Testbed:
    """6 public hosts h1..h6, every link 40 ms ± 10 ms with 1% loss."""
    tb = Testbed(name, seed=seed)
    for i in range(1, 7):
        tb.add_host(f"h{i}")
    tb.set_default(LAN_LINK)
    return tb


def nat2(name: str = "tb", seed: int = 0) -> Testbed:
    """Public ``relay`` (the bootstrap and relay) and ``pub``; ``a`` behind NAT ``nata`` and
    ``b`` behind NAT ``natb`` (two different NATs); every switch link 20 ms ± 5 ms."""
    tb = Testbed(name, seed=seed)
    tb.add_host("relay")
    tb.add_host("pub")
    tb.add_nat("nata")
    tb.add_nat("natb")
    tb.add_host("a", behind="nata")
    tb.add_host("b", behind="natb")
    tb.set_default(WAN_LINK)
    return tb


def mdns4(name: str = "tb", seed: int = 0) -> Testbed:
    """4 hosts m1..m4 on one segment (perfect links), for discovery without a bootstrap."""
    tb = Testbed(name, seed=seed)
    for i in range(1, 5):
        tb.add_host(f"m{i}")
    return tb


def chaos8(name: str = "tb", seed: int = 0) -> Testbed:
    """8 public hosts c1..c8, every link 20 ms ± 5 ms with 0.5% loss (chaos runs change them)."""
    tb = Testbed(name, seed=seed)
    for i in range(1, 9):
        tb.add_host(f"c{i}")
    tb.set_default(CHAOS_LINK)
    return tb


@dataclass(frozen=True)
class Topology:
    build: Callable[..., Testbed]
    daemons: tuple[str, ...]
    bootstrap: str | None
    description: str


TOPOLOGIES: dict[str, Topology] = {
    "lan6": Topology(lan6, tuple(f"h{i}" for i in range(1, 7)), "h1", "6 hosts, 40±10 ms, 1% loss"),
    "nat2": Topology(
        nat2, ("relay", "pub", "a", "b"), "relay", "2 public hosts + 2 behind different NATs"
    ),
    "mdns4": Topology(mdns4, ("m1", "m2", "m3", "m4"), None, "4 hosts, one segment, no bootstrap"),
    "chaos8": Topology(chaos8, tuple(f"c{i}" for i in range(1, 9)), "c1", "8 hosts, 20±5 ms"),
}
