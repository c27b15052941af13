"""A client's IPC request as the daemon handles it before any service sees it: the frame
(``p2pnode_protocols.framing.decode_payload``), its envelope (``p2pnode.ipc.server
.parse_request``) and the method's parameter checks (every adapter under ``p2pnode/ipc/``).

The first input byte picks a method (255: the method named in the frame itself); the rest is
the frame body. The services handed to the adapters are :class:`_Service` stand-ins that end
the request the moment an adapter touches one (the parameters were accepted), and the method
runs in a cancelled scope, so its first real wait ends it too. Allowed: ``FrameError`` and
``IpcError`` (what the server turns into an error reply; anything else becomes an
``internal`` reply, which is what this target looks for).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.fuzz.harness import Target, instrumented

with instrumented("p2pnode.ipc", "p2pnode_protocols.framing", "p2pnode.jobs", "p2pnode.config"):
    import trio

    from p2pnode.config import load_config
    from p2pnode.events import EventBus
    from p2pnode.ipc.blobs import build_blob_methods
    from p2pnode.ipc.collectives import build_collective_methods
    from p2pnode.ipc.consensus import build_consensus_methods
    from p2pnode.ipc.dht import build_dht_methods
    from p2pnode.ipc.errors import IpcError
    from p2pnode.ipc.jobs import build_job_methods
    from p2pnode.ipc.membership import build_membership_methods
    from p2pnode.ipc.peers import build_peer_methods
    from p2pnode.ipc.server import Session, parse_request
    from p2pnode.ipc.status import build_status_methods
    from p2pnode.ipc.subscriptions import build_subscription_methods
    from p2pnode.ipc.trust import build_trust_methods
    from p2pnode_protocols.framing import FrameError, decode_payload


PEER = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"


class _Reached(Exception):
    """A method touched a service: its parameters were accepted."""


class _Service:
    """Stands in for a service, a host or a stream: any use of it ends the request."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        raise _Reached(f"{self._name}.{attr}")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise _Reached(self._name)

    def __iter__(self) -> Any:
        raise _Reached(self._name)

    def __len__(self) -> int:
        raise _Reached(self._name)


def _methods() -> dict[str, Any]:
    s = _Service
    cfg = load_config(Path("/nonexistent-p2pnode-fuzz"), env={})
    return {
        **build_status_methods(
            cfg=cfg,
            peer_id=PEER,
            started_at=0.0,
            host=s("host"),  # type: ignore[arg-type]
            dht=s("dht"),  # type: ignore[arg-type]
            blobs=s("blobs"),  # type: ignore[arg-type]
            blob_store=s("blob_store"),  # type: ignore[arg-type]
            services={"dht": s("dht")},
        ),
        **build_peer_methods(host=s("host"), dht=s("dht"), connect_timeout=1.0),  # type: ignore[arg-type]
        **build_dht_methods(dht=s("dht")),  # type: ignore[arg-type]
        **build_subscription_methods(events=EventBus()),
        **build_blob_methods(
            blobs=s("blobs"),  # type: ignore[arg-type]
            blob_store=s("blob_store"),  # type: ignore[arg-type]
            dht=s("dht"),  # type: ignore[arg-type]
            peer_id=PEER,
        ),
        **build_membership_methods(membership=s("membership")),  # type: ignore[arg-type]
        **build_consensus_methods(consensus=s("consensus")),  # type: ignore[arg-type]
        **build_job_methods(rounds=s("rounds"), blobs=s("blobs")),  # type: ignore[arg-type]
        **build_collective_methods(collectives=s("collectives")),  # type: ignore[arg-type]
        **build_trust_methods(trust=s("trust")),  # type: ignore[arg-type]
    }


METHODS = _methods()
NAMES = sorted(METHODS)


async def _handle(frame: dict[str, Any], name: str | None) -> object:
    rid, method_name, params = parse_request(frame)
    method = METHODS.get(name or method_name)
    if method is None:
        return None  # UnknownMethod, in the server
    session = Session(_Service("stream"), _Service("nursery"))  # type: ignore[arg-type]
    with trio.CancelScope() as scope:
        scope.cancel()  # the method's first real wait ends it: only its checks run
        try:
            return await method(params, session, rid)
        except _Reached:
            return None
    return None


def decode(data: bytes) -> object:
    if not data:
        return None
    name = None if data[0] == 255 else NAMES[data[0] % len(NAMES)]
    frame = decode_payload(data[1:])
    return trio.run(_handle, frame, name)


def seeds() -> list[bytes]:
    import cbor2

    blob = "bafyreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
    params: list[dict[str, Any]] = [
        {},
        {"key": "a", "value": b"v"},
        {"key": blob, "path": "/tmp/x", "timeout": 5.0},
        {"topic": "commits"},
        {"job": "0123456789abcdef", "round": 1},
        {"group": "g", "size": 4, "data": b"\x00" * 16, "dtype": "float32"},
        {"spec": "name = 'j'\nrounds = 3\n", "init_key": blob},
        {"op": "kv", "key": "k", "value": b"v"},
        {"addr": f"/ip4/127.0.0.1/tcp/4001/p2p/{PEER}"},
    ]
    out = []
    for i, name in enumerate(NAMES):
        body = cbor2.dumps({"id": i, "method": name, "params": params[i % len(params)]})
        out.append(bytes([i]) + body)
    out.append(b"\xff" + cbor2.dumps({"id": 1, "method": "status", "params": None}))
    return out


TARGET = Target(
    name="ipc_request",
    decode=decode,
    allowed=(FrameError, IpcError),
    seeds=seeds,
    cbor_at=1,
    doc="an IPC request: frame, envelope (`parse_request`) and every method's parameter checks",
)
