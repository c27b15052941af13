"""IPC method ``doctor.check``: the network half of ``p2pnode doctor``, run by the daemon.

Given bootstrap addresses and peer ids, it dials each (addresses exactly as given; peers at the
addresses the peerstore knows, unless connected already) and asks each reachable peer for its
clock (``/p2pnode/time/1.0.0``). Everything runs at once, each item bounded by ``timeout``, so
the call ends within about ``timeout`` whatever the peers do.
"""

from __future__ import annotations

from typing import Any

import trio
from libp2p.abc import IHost
from libp2p.peer.id import ID

from p2pnode.ipc.errors import InvalidParams
from p2pnode.ipc.params import param
from p2pnode.ipc.server import Method, Session
from p2pnode.network.clock import clock_offset
from p2pnode.network.dht import Dht, DhtError

MAX_ITEMS = 64
MAX_TIMEOUT = 30.0


def _strings(params: dict[str, Any], name: str) -> list[str]:
    items = param(params, name, list, [])
    if len(items) > MAX_ITEMS or not all(isinstance(x, str) for x in items):
        raise InvalidParams(f"{name} must be a list of at most {MAX_ITEMS} strings")
    return list(items)


def build_doctor_methods(*, host: IHost, dht: Dht) -> dict[str, Method]:
    async def check(params: dict[str, Any], session: Session, rid: int) -> Any:
        addrs = _strings(params, "addrs")
        peer_texts = _strings(params, "peers")
        timeout = param(params, "timeout", (int, float), 5.0)
        if not 0 < timeout <= MAX_TIMEOUT:
            raise InvalidParams(f"timeout must be in (0, {MAX_TIMEOUT:g}] seconds")
        peers: list[ID] = []
        for text in peer_texts:
            try:
                peers.append(ID.from_base58(text))
            except Exception:
                raise InvalidParams(f"{text!r} is not a peer id") from None
        addr_rows: list[dict[str, Any]] = [{"addr": a} for a in addrs]
        peer_rows: list[dict[str, Any]] = [{"peer_id": p.to_base58()} for p in peers]

        async def dial_addr(row: dict[str, Any]) -> None:
            with trio.move_on_after(timeout):
                try:
                    peer = await dht.connect(row["addr"], probe_connected=False)
                except DhtError as exc:
                    row.update(reachable=False, error=str(exc))
                    return
                row.update(reachable=True, peer_id=peer.to_base58())
                await _clock(row, peer)
                return
            row.setdefault("reachable", False)
            row.setdefault("error", f"no answer within {timeout:g} s")

        async def reach_peer(row: dict[str, Any], peer: ID) -> None:
            with trio.move_on_after(timeout):
                if peer not in host.get_connected_peers():
                    errors = []
                    for a in dht.known_addrs(peer)[:4]:
                        try:
                            await dht.connect(f"{a}/p2p/{peer.to_base58()}")
                            break
                        except DhtError as exc:
                            errors.append(str(exc))
                    else:
                        row.update(
                            reachable=False,
                            error="; ".join(errors) or "no known address for this peer",
                        )
                        return
                row["reachable"] = True
                await _clock(row, peer)
                return
            row.setdefault("reachable", False)
            row.setdefault("error", f"no answer within {timeout:g} s")

        async def _clock(row: dict[str, Any], peer: ID) -> None:
            try:
                offset, rtt = await clock_offset(host, peer, timeout=timeout)
            except Exception as exc:  # an old peer without the protocol, a timeout
                row["clock_error"] = f"{type(exc).__name__}: {exc}"[:200]
            else:
                row.update(clock_offset=round(offset, 4), rtt=round(rtt, 4))

        async with trio.open_nursery() as nursery:
            for row in addr_rows:
                nursery.start_soon(dial_addr, row)
            for row, peer in zip(peer_rows, peers, strict=True):
                nursery.start_soon(reach_peer, row, peer)
        return {"addrs": addr_rows, "peers": peer_rows}

    return {"doctor.check": check}
