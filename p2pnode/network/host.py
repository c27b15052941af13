"""Building the libp2p host with the field guide's unsafe defaults closed.

* Noise is the only security transport: py-libp2p's default also accepts ``/plaintext/2.0.0``.
* ``max_connections_per_peer=1``: the default waits 250 ms for a second "happy eyeballs" dial
  on every connect; yamux multiplexes everything over one connection anyway.
* The auto-connector's watermarks are lowered so a node does not dial every peer it has heard
  of every 30 s.
* Every stream handler goes through :func:`guarded`: an exception escaping a handler would
  otherwise tear down the swarm and stop the whole daemon, which a remote peer must never be
  able to cause.
* Writes go out in pieces that make one yamux frame fill exactly one Noise message
  (:func:`write_pieces`), sealed into one buffer and sent with one call per write
  (:mod:`p2pnode.network.bulkwrite`).
* The host advertises real addresses: a wildcard listen address becomes this machine's
  interface addresses, and the ``announce`` setting's addresses come first, after the
  addresses through relays of a node behind a NAT (:mod:`p2pnode.network.addresses`).
* Yamux returns receive credit the go-yamux way, in batches of half the window, instead of
  one WINDOW_UPDATE per read (``PY_YAMUX_RELEASE_ON_READ=0``, unless the environment says
  otherwise).
"""

from __future__ import annotations

import enum
import logging
import os
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import suppress
from typing import Any

import multiaddr
import trio
from libp2p import new_host
from libp2p.abc import IHost, INetStream
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.x25519 import create_new_key_pair as x25519_key_pair
from libp2p.network.config import ConnectionConfig
from libp2p.peer.id import ID
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_ID
from libp2p.security.noise.transport import Transport as NoiseTransport

from p2pnode.network.addresses import addrs_factory, advertise_relayed
from p2pnode.network.bulkwrite import BulkWriter, bulk_writer

log = logging.getLogger(__name__)

StreamHandler = Callable[[INetStream], Awaitable[None]]


def build_host(
    key_pair: KeyPair,
    *,
    psk: str | None,
    dial_timeout: float,
    announce: Sequence[str] = (),
    relayed_addrs: Callable[[], Sequence[multiaddr.Multiaddr]] | None = None,
    mdns: bool = False,
) -> IHost:
    """The daemon's host. ``relayed_addrs`` gives the addresses through relays to advertise
    first (p2pnode/network/nat/); ``mdns`` announces the node on the LAN by multicast DNS and
    listens for others (p2pnode/network/mdns.py connects to them)."""
    # py-libp2p reads its yamux tuning from the environment at each use. By default a reader
    # sends a WINDOW_UPDATE after every read: an encrypted frame out and in per read, 0.5-0.7 ms
    # of CPU per MiB on each end of a bulk transfer. go-yamux (and this setting) batch the
    # credit up to half the window; the window still grows to 16 MiB by auto-tuning.
    os.environ.setdefault("PY_YAMUX_RELEASE_ON_READ", "0")
    host = new_host(
        key_pair=key_pair,
        sec_opt={NOISE_ID: NoiseTransport(key_pair, noise_privkey=x25519_key_pair().private_key)},
        muxer_preference="YAMUX",
        connection_config=ConnectionConfig(
            max_connections_per_peer=1,
            min_connections=0,
            low_watermark=0,
            dial_timeout=dial_timeout,
        ),
        psk=psk,
        addrs_factory=addrs_factory(announce),
        enable_mDNS=mdns,
    )
    _disable_auto_connector(host)
    if relayed_addrs is not None:
        advertise_relayed(host, relayed_addrs)
    return host


def _disable_auto_connector(host: IHost) -> None:
    """Kademlia decides whom we dial. py-libp2p's auto-connector aims for 150 connections and
    re-dials every peer in the peerstore every 30 s, which turns any swarm into a full mesh."""
    connector = getattr(host.get_network(), "auto_connector", None)
    if connector is None:
        return

    async def idle(*args: Any, **kwargs: Any) -> None:
        return None

    connector.run_background_task = idle
    connector.maybe_connect = idle


def guarded(name: str, handler: StreamHandler) -> StreamHandler:
    """Wrap a stream handler so no exception from it can reach the swarm's nursery."""

    async def wrapper(stream: INetStream) -> None:
        try:
            await handler(stream)
        except Exception as exc:
            peer = _remote_peer(stream)
            log.warning("%s handler failed for peer %s: %r", name, peer, exc)
            with suppress(Exception):
                await stream.reset()

    wrapper.__name__ = f"guarded_{name}"
    return wrapper


def guarded_validator(name: str, validator: Callable[..., bool]) -> Callable[..., bool]:
    """Wrap a pubsub topic validator: it must return False on anything odd, never raise.

    A validator that raises on a remote peer's message stops py-libp2p's Pubsub service and,
    with it, the daemon.
    """

    def wrapper(*args: Any) -> bool:
        try:
            return bool(validator(*args))
        except Exception as exc:
            log.warning("%s validator rejected a message by raising %r", name, exc)
            return False

    return wrapper


def allow_redial(host: IHost, peer: ID) -> None:
    """Lift py-libp2p's 60 s block on dialing a peer whose addresses all failed once.

    The swarm's negative cache refuses, silently, every dial to such a peer for a minute; a
    peer that restarts within that minute could not be reached by an explicit connect or a
    blob fetch. Callers with their own backoff clear it before a deliberate retry.
    """
    cache = getattr(host.get_network(), "_negative_peer_cache", None)
    if cache is not None:
        with suppress(Exception):
            cache.evict(str(peer))


# py-libp2p 0.8.1 cuts a write into yamux frames of up to 12 + 65,524 bytes and each frame into
# Noise messages of at most 65,519 plaintext bytes, so every full frame costs two Noise messages,
# the second of 17 bytes: two length reads, two decryptions, twice the Python per message.
# Pieces of 65,519 - 12 bytes make each frame exactly one message. Moving 256 MiB over one
# stream this cut CPU per MiB from 2.7 to 2.0 ms (sender) and 3.3 to 2.3 ms (receiver reading
# 1 MiB at a time), and raised throughput by 40%.
WRITE_PIECE = 65_519 - 12


class PieceCutter:
    """Cuts bytes written over several calls into pieces of exactly ``size`` bytes.

    What is left over after a call waits for the next one, so a stream written chunk by chunk
    (a header and 1 MiB of data each time) fills every frame instead of ending each chunk with
    a short one: a short frame costs a Noise message and the per-message Python at both ends,
    about as much as a full one. Large buffers are sliced without copying; small ones are joined
    to their neighbours. Buffers handed in must not change until their bytes are written.
    """

    __slots__ = ("_carried", "_carry", "size")

    def __init__(self, size: int = WRITE_PIECE) -> None:
        if size <= 0:
            raise ValueError("size must be positive")
        self.size = size
        self._carry: list[memoryview] = []
        self._carried = 0

    @property
    def pending(self) -> int:
        """Bytes held back for the next call or :meth:`flush`."""
        return self._carried

    def cut(self, bufs: Iterable[bytes | memoryview]) -> Iterator[bytes | memoryview]:
        """The full pieces ``bufs`` completes; the remainder is kept."""
        size = self.size
        for buf in bufs:
            view = memoryview(buf).cast("B")
            at = 0
            if self._carried:
                take = min(size - self._carried, len(view))
                self._carry.append(view[:take])
                self._carried += take
                at = take
                if self._carried < size:
                    continue
                yield b"".join(self._carry)
                self._carry, self._carried = [], 0
            while len(view) - at >= size:
                yield view[at : at + size]
                at += size
            if at < len(view):
                self._carry.append(view[at:])
                self._carried = len(view) - at

    def flush(self) -> bytes | memoryview | None:
        """The bytes held back, as one last short piece (None if there are none)."""
        if not self._carried:
            return None
        carry, self._carry, self._carried = self._carry, [], 0
        return carry[0] if len(carry) == 1 else b"".join(carry)


def write_pieces(
    bufs: Sequence[bytes | memoryview], size: int = WRITE_PIECE
) -> Iterator[bytes | memoryview]:
    """The bytes of ``bufs``, in order, as pieces of exactly ``size`` bytes (the last may be
    shorter): one write's worth of :class:`PieceCutter`."""
    cutter = PieceCutter(size)
    yield from cutter.cut(bufs)
    if (last := cutter.flush()) is not None:
        yield last


class WriteOutcome(enum.Enum):
    OK = "ok"
    FAILED = "failed"  #: the stream raised (reset, closed, connection lost)
    STALLED = "stalled"  #: the deadline passed; the peer was disconnected


async def shielded_write(
    host: IHost,
    stream: INetStream,
    peer: ID,
    bufs: Sequence[bytes | memoryview],
    *,
    timeout: float,
    disconnect_timeout: float | None = None,
    cutter: PieceCutter | None = None,
    flush: bool = True,
    writer: BulkWriter | None = None,
) -> WriteOutcome:
    """Write ``bufs`` in order, never cancelled half-way, under a deadline of its own.

    With a ``cutter`` kept by the caller for the stream, a short remainder may wait for the
    caller's next write (``flush=False``), so back-to-back writes fill whole frames. The
    frames go out through a :class:`~p2pnode.network.bulkwrite.BulkWriter` (the caller's
    ``writer``, kept for the stream by callers that write a lot, or a new one), or piece by
    piece through the stream where the connection is not one it can write to.

    py-libp2p corrupts the shared Noise session when a task is cancelled inside
    ``stream.write`` (field guide §4), so the caller's cancellation is shielded off. If the
    write stalls past ``timeout`` we abandon it and disconnect the peer: the next use redials a
    clean connection. Errors from the stream are reported, never raised.
    """
    with trio.CancelScope(shield=True):
        with trio.move_on_after(timeout) as scope:
            try:
                if cutter is None:
                    pieces = list(write_pieces(bufs))
                else:
                    pieces = list(cutter.cut(bufs))
                    if flush and (last := cutter.flush()) is not None:
                        pieces.append(last)
                if writer is None:
                    writer = bulk_writer(stream)
                if writer is not None:
                    await writer.write(pieces)
                else:
                    for piece in pieces:
                        await stream.write(piece)  # type: ignore[arg-type]  # any buffer works
            except Exception as exc:
                log.debug("write to %s failed: %r", peer, exc)
                return WriteOutcome.FAILED
        if scope.cancelled_caught:
            log.warning("write to %s stalled for %.1f s; disconnecting", peer, timeout)
            with trio.move_on_after(timeout if disconnect_timeout is None else disconnect_timeout):
                with suppress(Exception):
                    await host.disconnect(peer)
            return WriteOutcome.STALLED
    return WriteOutcome.OK


def set_guarded_handler(host: IHost, protocol: str, handler: StreamHandler) -> None:
    host.set_stream_handler(protocol, guarded(protocol, handler))  # type: ignore[arg-type]


def _remote_peer(stream: INetStream) -> str:
    try:
        return stream.muxed_conn.peer_id.to_base58()
    except Exception:
        return "?"


def full_addrs(host: IHost) -> list[str]:
    """Advertised multiaddrs with /p2p/<peer id>, as another node would dial them (announced
    ones first, wildcards replaced by interface addresses)."""
    return [str(a) for a in host.get_addrs()]


def advertised_addrs(host: IHost) -> list[multiaddr.Multiaddr]:
    """The addresses in :func:`full_addrs`, without /p2p/ (as DHT peer records carry them)."""
    if not hasattr(host, "get_addrs"):  # a stand-in host (unit tests): its bound addresses
        return list(getattr(host, "get_transport_addrs", list)())
    suffix = multiaddr.Multiaddr(f"/p2p/{host.get_id()}")
    return [a.decapsulate(suffix) for a in host.get_addrs()]


def listen_addrs(host: IHost) -> list[str]:
    """The sockets the host listens on, as bound (``/ip4/0.0.0.0/...`` stays a wildcard)."""
    return [str(a) for a in host.get_transport_addrs()]


def parse_multiaddr(text: str) -> multiaddr.Multiaddr:
    try:
        return multiaddr.Multiaddr(text)
    except Exception as exc:
        raise ValueError(f"{text!r} is not a valid multiaddr: {exc}") from None
