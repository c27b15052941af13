"""Prometheus metrics: a per-node registry and a small trio HTTP endpoint on 127.0.0.1.

prometheus-client renders the text format; serving is ours (one trio task, loopback only)
rather than prometheus-client's thread or py-libp2p's metrics channel, which stalls the DHT
when nothing drains it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

log = logging.getLogger(__name__)

# A ``_created`` series beside every counter doubles what is scraped and stored for a figure
# nobody graphs (the start time is p2pnode_start_time_seconds).
disable_created_metrics()

_LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
MAX_REQUEST_HEAD = 8192
READ_TIMEOUT = 5.0


class NodeMetrics:
    def __init__(
        self,
        *,
        connected_peers: Callable[[], float],
        routing_table_size: Callable[[], float],
        records: Callable[[], float],
    ) -> None:
        self.registry = CollectorRegistry()
        Gauge(
            "p2pnode_connected_peers", "Peers with an open connection", registry=self.registry
        ).set_function(connected_peers)
        Gauge(
            "p2pnode_routing_table_size",
            "Peers in the Kademlia routing table",
            registry=self.registry,
        ).set_function(routing_table_size)
        Gauge(
            "p2pnode_dht_records", "DHT records held by this node", registry=self.registry
        ).set_function(records)
        self.dht_seconds = Histogram(
            "p2pnode_dht_operation_seconds",
            "Latency of DHT operations started on this node",
            ["op", "outcome"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.ipc_requests = Counter(
            "p2pnode_ipc_requests_total",
            "IPC requests by method and outcome (ok or an error code)",
            ["method", "outcome"],
            registry=self.registry,
        )
        self.ipc_seconds = Histogram(
            "p2pnode_ipc_request_seconds",
            "IPC request handling time",
            ["method"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )

        self.collective_seconds = Histogram(
            "p2pnode_collective_operation_seconds",
            "Time of collective operations on this node, by kind and outcome (ok, failed or"
            " group_changed)",
            ["kind", "outcome"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.collective_bytes = Counter(
            "p2pnode_collective_bytes_total",
            "Payload bytes of collective operations, by direction (sent or received)",
            ["direction"],
            registry=self.registry,
        )

        self.commit_seconds = Histogram(
            "p2pnode_consensus_commit_seconds",
            "Time from submitting a transaction on this node to its commit",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.blob_fetch_seconds = Histogram(
            "p2pnode_blob_fetch_seconds",
            "Time of blob fetches (ok, or failed: not found, no space...), a blob already held"
            " included",
            ["outcome"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.blob_fetched_bytes = Counter(
            "p2pnode_blob_fetched_bytes",
            "Bytes of blobs made complete here by fetches from peers",
            registry=self.registry,
        )
        for outcome in ("ok", "failed"):
            self.blob_fetch_seconds.labels(outcome)
        for direction in ("sent", "received"):
            self.collective_bytes.labels(direction)

        self._service_up = Gauge(
            "p2pnode_service_up",
            "1 while a service runs, 0 once a bug (or a failed write) stopped it",
            ["service"],
            registry=self.registry,
        )

    def watch_service(self, name: str, running: Callable[[], bool]) -> None:
        """Export ``p2pnode_service_up{service=name}``, read from ``running`` at each scrape."""
        self._service_up.labels(name).set_function(lambda: 1.0 if running() else 0.0)

    def observe_commit(self, seconds: float) -> None:
        self.commit_seconds.observe(seconds)

    def observe_blob_fetch(self, seconds: float, ok: bool, fetched_bytes: int) -> None:
        self.blob_fetch_seconds.labels("ok" if ok else "failed").observe(seconds)
        if fetched_bytes:
            self.blob_fetched_bytes.inc(fetched_bytes)

    def observe_dht(self, op: str, seconds: float, ok: bool) -> None:
        self.dht_seconds.labels(op, "ok" if ok else "miss").observe(seconds)

    def observe_ipc(self, method: str, outcome: str, seconds: float) -> None:
        self.ipc_requests.labels(method, outcome).inc()
        self.ipc_seconds.labels(method).observe(seconds)

    def observe_collective(
        self, kind: str, outcome: str, seconds: float, sent: int, received: int
    ) -> None:
        self.collective_seconds.labels(kind, outcome).observe(seconds)
        self.collective_bytes.labels("sent").inc(sent)
        self.collective_bytes.labels("received").inc(received)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    async def serve(
        self, port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Answer ``GET /metrics`` on 127.0.0.1:``port`` until cancelled."""
        listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
        task_status.started(listeners[0].socket.getsockname()[1])
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, stream: trio.SocketStream) -> None:
        try:
            head = b""
            with trio.move_on_after(READ_TIMEOUT):
                while b"\r\n\r\n" not in head and len(head) < MAX_REQUEST_HEAD:
                    chunk = await stream.receive_some(4096)
                    if not chunk:
                        break
                    head += chunk
            line = head.split(b"\r\n", 1)[0].split()
            if len(line) >= 2 and line[0] == b"GET" and line[1].split(b"?")[0] == b"/metrics":
                try:
                    body = self.render()
                    status, ctype = b"200 OK", CONTENT_TYPE_LATEST.encode()
                except Exception:  # a bug in one collector must not stop the daemon
                    log.exception("metrics: rendering failed")
                    body = b"rendering the metrics failed; see the daemon's log\n"
                    status, ctype = b"500 Internal Server Error", b"text/plain"
            else:
                body = b"only GET /metrics is served here\n"
                status, ctype = b"404 Not Found", b"text/plain"
            await stream.send_all(
                b"HTTP/1.1 "
                + status
                + b"\r\nContent-Type: "
                + ctype
                + b"\r\nContent-Length: "
                + str(len(body)).encode()
                + b"\r\nConnection: close\r\n\r\n"
                + body
            )
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            with trio.move_on_after(1, shield=True):
                await stream.aclose()
