"""The dial-back check on the wire: ``/p2pnode/dialback/1.0.0``.

One request and one answer per stream, each a varint-prefixed CBOR message
(:mod:`p2pnode_protocols.nat.dialback`). The server dials the requester back on a **fresh**
connection: a TCP dial and the Noise handshake to the address it sees the request come from,
at the requester's listen ports, which proves the requester's key is there, then closed
(:func:`~p2pnode.network.dial.prove_key_at`). py-libp2p's AutoNAT dials back with
``host.connect``, which returns at once because the requester is connected already, so it
calls every node public (docs/networking.md).

A request that arrives over a relayed connection is refused (the server cannot see where it
came from), and each peer may ask a few times a minute.

The asker's swarm takes the server's probe for a new connection and logs an ERROR when the
server hangs up after the handshake ("fail to upgrade mux"); :class:`ProbeNoise` drops that
record for the servers we are waiting on, so every check does not leave errors in the log.
"""

from __future__ import annotations

import logging
import time
from contextlib import suppress
from typing import ClassVar

import multiaddr
import trio
from libp2p.abc import IHost, INetStream
from libp2p.connection_types import ConnectionType
from libp2p.peer.id import ID
from libp2p.utils.varint import encode_varint_prefixed, read_varint_prefixed_bytes_limited

from p2pnode.network.dial import DialError, prove_key_at
from p2pnode.network.ratelimit import TokenBuckets
from p2pnode_protocols.nat.dialback import (
    MAX_MESSAGE_BYTES,
    DialbackInvalid,
    DialbackRequest,
    DialbackResponse,
    decode_request,
    decode_response,
    dialback_targets,
    encode_request,
    encode_response,
)

log = logging.getLogger(__name__)

DIALBACK_PROTOCOL = "/p2pnode/dialback/1.0.0"
REQUESTS_PER_MINUTE = 6.0


def _is_relayed(stream: INetStream) -> bool:
    try:
        conn = stream.muxed_conn
        kind = getattr(conn, "get_connection_type", None)
        if callable(kind) and kind() == ConnectionType.RELAYED:
            return True
        return any("/p2p-circuit" in str(a) for a in conn.get_transport_addresses() or [])
    except Exception:
        return True  # cannot tell: do not dial anything on its word


class DialbackServer:
    """Answers dial-back requests. ``timeout`` bounds each dial back and each message."""

    def __init__(self, host: IHost, *, timeout: float) -> None:
        self.host = host
        self.timeout = timeout
        self._requests = TokenBuckets(rate=REQUESTS_PER_MINUTE / 60.0, burst=3.0)
        self.answered = 0
        self.refused = 0

    async def handle(self, stream: INetStream) -> None:
        peer: ID = stream.muxed_conn.peer_id
        try:
            with trio.fail_after(self.timeout):
                data = await read_varint_prefixed_bytes_limited(stream, MAX_MESSAGE_BYTES)
            req = decode_request(data)
        except (DialbackInvalid, trio.TooSlowError, Exception) as exc:
            log.debug("dial-back request from %s refused: %r", peer, exc)
            with suppress(Exception):
                await stream.reset()
            return
        resp = await self._answer(peer, stream, req)
        try:
            with trio.move_on_after(self.timeout):
                await stream.write(encode_varint_prefixed(encode_response(resp)))
        finally:
            with suppress(Exception):
                await stream.close()

    async def _answer(self, peer: ID, stream: INetStream, req: DialbackRequest) -> DialbackResponse:
        if _is_relayed(stream):
            self.refused += 1
            return DialbackResponse(observed="", reached=(), refused="relayed connection")
        if not self._requests.allow(peer, time.monotonic()):
            self.refused += 1
            return DialbackResponse(observed="", reached=(), refused="rate limited")
        observed = None
        with suppress(Exception):
            remote = stream.get_remote_address()
            observed = remote[0] if remote else None
        reached: list[str] = []
        for target in dialback_targets(observed, req.ports):
            with trio.move_on_after(self.timeout):
                try:
                    await prove_key_at(self.host.get_network(), peer, multiaddr.Multiaddr(target))
                    reached.append(target)
                except DialError as exc:
                    log.debug("dial-back of %s at %s failed: %s", peer, target, exc)
        self.answered += 1
        return DialbackResponse(observed=observed or "", reached=tuple(reached))


class ProbeNoise(logging.Filter):
    """Drops py-libp2p's "fail to upgrade mux for peer X" while X is dialling us back."""

    LOGGER: ClassVar[str] = "libp2p.network.swarm"
    _PREFIX: ClassVar[str] = "fail to upgrade mux for peer "

    def __init__(self) -> None:
        super().__init__()
        self._until: dict[str, float] = {}  # server peer id -> monotonic end of its probes

    def expect(self, server: ID, seconds: float) -> None:
        now = time.monotonic()
        self._until = {p: t for p, t in self._until.items() if t > now}  # stays small
        self._until[server.to_base58()] = now + seconds

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not message.startswith(self._PREFIX):
            return True
        until = self._until.get(message[len(self._PREFIX) :].strip())
        return until is None or until < time.monotonic()

    def install(self) -> ProbeNoise:
        logging.getLogger(self.LOGGER).addFilter(self)
        return self

    def remove(self) -> None:
        logging.getLogger(self.LOGGER).removeFilter(self)


async def ask_dialback(
    host: IHost,
    server: ID,
    ports: tuple[int, ...],
    *,
    timeout: float,
    noise: ProbeNoise | None = None,
) -> DialbackResponse:
    """Ask ``server`` to dial us back at ``ports``; ``timeout`` is the server's per dial (we
    wait for all of them). Raises on a transport error, a timeout or a malformed answer."""
    wait = timeout * (len(ports) + 2)
    if noise is not None:
        noise.expect(server, wait + timeout)
    stream = await host.new_stream(server, [DIALBACK_PROTOCOL])  # type: ignore[list-item]
    try:
        with trio.fail_after(wait):
            await stream.write(encode_varint_prefixed(encode_request(DialbackRequest(ports=ports))))
            data = await read_varint_prefixed_bytes_limited(stream, MAX_MESSAGE_BYTES)
        return decode_response(data)
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(timeout), suppress(Exception):
            await stream.close()


__all__ = ["DIALBACK_PROTOCOL", "DialbackServer", "ProbeNoise", "ask_dialback"]
