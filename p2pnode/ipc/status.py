"""The ``status`` IPC method: this node's identity, addresses and the health of its services.

``status`` reads counters from several services but changes nothing; each is handed in by
:mod:`p2pnode.node`. docs/ipc.md documents every field.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

from libp2p.abc import IHost

from p2pnode import __version__
from p2pnode.blobs.service import BlobService
from p2pnode.blobs.store import BlobStore
from p2pnode.config import Config
from p2pnode.config.join import committee_fingerprint
from p2pnode.ipc.server import Method, Session
from p2pnode.network.dht import Dht
from p2pnode.network.handshakes import HandshakeWatch
from p2pnode.network.host import full_addrs, listen_addrs
from p2pnode.network.nat.service import NatService


def service_row(name: str, service: object | None) -> dict[str, Any]:
    """``{"name", "state", "error"}`` for one service.

    A service this node does not run at all (``None``: consensus without validators) is
    ``off``; one whose ``error`` is set stopped on that error (a bug in its machine: the rest
    of the daemon goes on); any other is ``running``. Services without an ``error`` attribute
    cannot stop on their own while the daemon runs (a failure of theirs ends the daemon).
    """
    if service is None:
        return {"name": name, "state": "off", "error": None}
    error = getattr(service, "error", None)
    return {"name": name, "state": "running" if error is None else "stopped", "error": error}


def build_status_methods(
    *,
    cfg: Config,
    peer_id: str,
    started_at: float,
    host: IHost,
    dht: Dht,
    blobs: BlobService,
    blob_store: BlobStore,
    services: Mapping[str, object | None],
    handshakes: HandshakeWatch | None = None,
    nat: NatService | None = None,
) -> dict[str, Method]:
    """``status``; ``services`` names every service of the node (``None`` for one that is off),
    in the order the reply lists them."""
    validators = cfg.consensus.validators
    committee = (
        {"validators": len(validators), "fingerprint": committee_fingerprint(validators)}
        if validators
        else None
    )

    async def status(params: dict[str, Any], session: Session, rid: int) -> Any:
        return {
            "peer_id": peer_id,
            "addrs": full_addrs(host),
            "listen_addrs": listen_addrs(host),
            "announce": list(cfg.announce),
            "bootstrap": list(cfg.bootstrap),
            "version": __version__,
            "uptime": round(time.monotonic() - started_at, 3),
            "pid": os.getpid(),
            "data_dir": str(cfg.data_dir),
            "connected_peers": len(host.get_connected_peers()),
            "routing_table_size": dht.table_size(),
            "records": dht.record_count(),
            "bootstrapped": dht.bootstrapped.is_set(),
            "private_network": cfg.psk_file is not None,
            "blobs": {
                **blobs.stats(),  # stored_bytes, bytes_by_kind, quotas (docs/blobs.md)
                "served_chunks": blobs.served_chunks,
                "fetched_chunks": blobs.fetched_chunks,
                "bad_chunks": blobs.bad_chunks,
                "streams_opened": blobs.streams_opened,
                "provider_lookups": blobs.provider_lookups,
            },
            "services": [service_row(name, svc) for name, svc in services.items()],
            "committee": committee,
            "handshake_failures": handshakes.summary() if handshakes is not None else None,
            # public / relayed / private / unknown (docs/networking.md), and the details.
            "reachability": nat.reachability if nat is not None else None,
            "nat": nat.status() if nat is not None else None,
        }

    return {"status": status}
