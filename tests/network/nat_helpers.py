"""Real libp2p hosts on 127.0.0.1 with the daemon's NAT service, in one trio process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import multiaddr
import trio
from libp2p.abc import IHost
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.peerinfo import info_from_p2p_addr

from p2pnode.config import load_config
from p2pnode.network.dial import dial_exact
from p2pnode.network.host import build_host
from p2pnode.network.nat.service import NatService

LOOPBACK = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]


@dataclass
class NatNode:
    host: IHost
    nat: NatService

    @property
    def addr(self) -> str:
        return str(self.host.get_addrs()[-1])

    @property
    def id(self) -> Any:
        return self.host.get_id()


async def connect(host: IHost, addr: str) -> None:
    """Dial the full multiaddr ``addr`` and remember it, as the DHT service's connect does."""
    info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
    await dial_exact(host, info.peer_id, info.addrs[0])
    host.get_peerstore().add_addrs(info.peer_id, info.addrs, 3600)


@asynccontextmanager
async def nat_nodes(tmp: Path, settings: list[dict[str, Any]]) -> AsyncIterator[list[NatNode]]:
    """One host and NAT service per entry of ``settings`` (dotted config keys)."""
    async with AsyncExitStack() as stack:
        nodes: list[NatNode] = []
        nursery = await stack.enter_async_context(trio.open_nursery())
        for i, overrides in enumerate(settings):
            d = tmp / f"n{i}"
            d.mkdir()
            cfg = load_config(d, env={}, overrides=overrides)
            holder: list[NatService] = []
            host = build_host(
                create_new_key_pair(),
                psk=None,
                dial_timeout=cfg.network.connect_timeout,
                relayed_addrs=lambda h=holder: h[0].relayed_addrs() if h else [],
            )
            await stack.enter_async_context(host.run(listen_addrs=LOOPBACK))

            async def dial(addr: str, host: IHost = host) -> None:
                await connect(host, addr)

            nat = NatService(host, cfg, connect=dial)
            holder.append(nat)
            await nursery.start(nat.run)
            nodes.append(NatNode(host, nat))
        try:
            yield nodes
        finally:
            nursery.cancel_scope.cancel()


async def wait_for(predicate: Any, timeout: float = 10.0, step: float = 0.05) -> None:
    """Poll ``predicate`` until it holds; TooSlowError after ``timeout`` seconds."""
    with trio.fail_after(timeout):
        while True:
            if predicate():
                return
            await trio.sleep(step)
