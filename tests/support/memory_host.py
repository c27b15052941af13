"""An in-memory stand-in for the parts of a py-libp2p host the services use, for tests in
virtual time (trio's ``MockClock``): no sockets, no Noise, no yamux.

What the real transports (:class:`~p2pnode.network.datagram.DatagramTransport`,
:class:`~p2pnode.network.rpc.RpcService`) and the helpers of :mod:`p2pnode.network.host`
touch, and nothing more:

- ``MemoryHost``: ``get_id``, ``get_addrs``, ``get_connected_peers``,
  ``get_peerstore().add_addrs``, ``get_network()`` (no ``_negative_peer_cache``, so
  ``allow_redial`` does nothing), ``set_stream_handler``, ``new_stream(peer, protocols)`` and
  ``disconnect(peer)``.
- ``MemoryStream``: ``read(n)``, ``write(data)``, ``close()`` (half close: the other end reads
  EOF), ``reset()`` (both ends fail) and ``muxed_conn.peer_id`` (the remote peer, as Noise would
  have authenticated it). It has no ``muxed_stream``, so ``bulk_writer`` returns None and
  ``shielded_write`` writes piece by piece through ``write``. Reads raise ``StreamEOF`` at the
  end and ``StreamReset`` after a reset, as py-libp2p's ``NetStream`` does.

Each stream is a ``trio.testing.memory_stream_pair()``. With a ``chunk_seed`` the bytes of
every write reach the reader in pieces of random sizes (a seeded PRNG per stream) with a
scheduling point between pieces, so framing code meets partial reads; no piece takes virtual
time, so a test can still assert exact times.

Faults: :meth:`MemoryNetwork.crash` is ``kill -9``: the peer's streams end (the other end
reads EOF, writes to it fail) and dials to or from it fail at once. :meth:`MemoryNetwork.hang`
is a frozen machine: its connections stay up, but every byte to or from it vanishes and dials
to it never complete (the dialler's own timeout ends them). Either way the test must also stop
the peer's services (cancel their scope): the network only cuts the wires.

Cancellation: handler tasks run in the network's nursery; a peer's are cancelled when it
crashes, and all of them when :func:`open_memory_network` exits. An exception escaping a
handler is NOT swallowed: it fails the test, as it would take down a real swarm.

Resources: unbounded in-memory buffers (trio's memory streams); fine for tests.
"""

from __future__ import annotations

import hashlib
import itertools
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import multiaddr
import trio
import trio.testing
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.keys import KeyPair
from libp2p.network.stream.exceptions import StreamClosed, StreamEOF, StreamReset
from libp2p.peer.id import ID

__all__ = [
    "MemoryDialError",
    "MemoryHost",
    "MemoryNetwork",
    "MemoryStream",
    "key_pair_for",
    "open_memory_network",
]

StreamHandler = Callable[[Any], Awaitable[None]]


class MemoryDialError(Exception):
    """A stream could not be opened (peer crashed, unknown, or not speaking the protocol)."""


def key_pair_for(i: int, salt: bytes = b"") -> KeyPair:
    """A deterministic Ed25519 key pair (the services sign with it; the peer id derives
    from it)."""
    seed = hashlib.sha256(b"p2pnode/tests/memory-host\x00" + salt + i.to_bytes(4, "big"))
    return create_new_key_pair(seed.digest())


class _Conn:
    """What a stream's ``muxed_conn`` offers the transports: the authenticated remote id."""

    __slots__ = ("peer_id",)

    def __init__(self, peer_id: ID) -> None:
        self.peer_id = peer_id


class MemoryStream:
    """One end of an in-memory libp2p stream. See the module docstring."""

    def __init__(
        self,
        net: MemoryNetwork,
        stapled: trio.StapledStream[Any, Any],
        local: ID,
        remote: ID,
        protocol: str,
    ) -> None:
        self._net = net
        self._s = stapled
        self.local = local
        self.remote = remote
        self.protocol = protocol
        self.muxed_conn = _Conn(remote)
        self.other: MemoryStream | None = None
        self._reset = False
        self._remote_reset = False
        self._write_closed = False

    @property
    def done(self) -> bool:
        return self._reset or (self._write_closed and self._remote_done)

    @property
    def _remote_done(self) -> bool:
        o = self.other
        return o is None or o._reset or o._write_closed

    def get_protocol(self) -> str:
        return self.protocol

    async def read(self, n: int | None = None) -> bytes:
        if self._reset:
            raise StreamReset("stream is reset")
        try:
            data = await self._s.receive_some(n)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise StreamReset("stream is reset") from None
        if data:
            return bytes(data)
        if self._reset or self._remote_reset:
            raise StreamReset("stream reset by the remote")
        raise StreamEOF()

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._reset:
            raise StreamReset("cannot write: stream is reset")
        if self._write_closed:
            raise StreamClosed("cannot write: closed for writing")
        if self._net.is_silent(self.local) or self._net.is_silent(self.remote):
            await trio.lowlevel.checkpoint()
            return  # a hung peer: the bytes vanish, the write "succeeds"
        try:
            await self._s.send_all(data)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise StreamReset("stream reset by the remote") from None

    async def close(self) -> None:
        """Half close: the other end reads what was written, then EOF."""
        if not self._write_closed and not self._reset:
            self._write_closed = True
            if not self._net.is_silent(self.local):
                self._s.send_stream.close()
        await trio.lowlevel.checkpoint()

    async def reset(self) -> None:
        self.abort(tell_remote=True)
        await trio.lowlevel.checkpoint()

    def abort(self, *, tell_remote: bool) -> None:
        """Close both directions now. With ``tell_remote`` the other end's reads fail with
        ``StreamReset`` (a reset frame); without, they end with EOF (a dead process's socket)."""
        if self._reset:
            return
        self._reset = True
        if self._net.is_silent(self.local):
            return  # a hung peer's resets never reach the wire
        if tell_remote and self.other is not None:
            self.other._remote_reset = True
        self._s.send_stream.close()
        self._s.receive_stream.close()


class _Peerstore:
    def __init__(self) -> None:
        self._addrs: dict[ID, list[multiaddr.Multiaddr]] = {}

    def add_addrs(self, peer_id: ID, addrs: Sequence[multiaddr.Multiaddr], ttl: int = 0) -> None:
        known = self._addrs.setdefault(peer_id, [])
        known += [a for a in addrs if a not in known]

    def addrs(self, peer_id: ID) -> list[multiaddr.Multiaddr]:
        return list(self._addrs.get(peer_id, ()))


class _NetworkView:
    """``host.get_network()``: it has no ``_negative_peer_cache`` (dials are never blocked
    here), so ``allow_redial`` has nothing to clear."""


class MemoryHost:
    """One peer on a :class:`MemoryNetwork`. See the module docstring for what it offers."""

    def __init__(self, net: MemoryNetwork, key_pair: KeyPair, port: int) -> None:
        self._net = net
        self.key_pair = key_pair
        self._id = ID.from_pubkey(key_pair.public_key)
        self._addr = multiaddr.Multiaddr(f"/ip4/127.0.0.1/tcp/{port}/p2p/{self._id.to_base58()}")
        self.handlers: dict[str, StreamHandler] = {}
        self._peerstore = _Peerstore()
        self._network = _NetworkView()
        self._handler_scopes: set[trio.CancelScope] = set()

    def get_id(self) -> ID:
        return self._id

    def get_addrs(self) -> list[multiaddr.Multiaddr]:
        return [self._addr]

    def get_connected_peers(self) -> list[ID]:
        return self._net.connected_peers(self._id)

    def get_peerstore(self) -> _Peerstore:
        return self._peerstore

    def get_network(self) -> _NetworkView:
        return self._network

    def set_stream_handler(self, protocol: str, handler: StreamHandler) -> None:
        self.handlers[protocol] = handler

    async def new_stream(self, peer_id: ID, protocol_ids: Sequence[str]) -> MemoryStream:
        return await self._net.open_stream(self._id, peer_id, protocol_ids)

    async def connect(self, peer_id: ID) -> None:
        await trio.lowlevel.checkpoint()
        self._net.connect(self._id, peer_id)

    async def disconnect(self, peer_id: ID) -> None:
        await trio.lowlevel.checkpoint()
        self._net.disconnect(self._id, peer_id)


class MemoryNetwork:
    """Hosts, their connections and streams. Build it with :func:`open_memory_network`."""

    def __init__(self, nursery: trio.Nursery, *, chunk_seed: int | None = 0) -> None:
        self._nursery = nursery
        self.hosts: dict[ID, MemoryHost] = {}
        self._links: set[frozenset[ID]] = set()
        self._streams: list[MemoryStream] = []
        self._crashed: set[ID] = set()
        self._silent: set[ID] = set()
        self._ports = itertools.count(4001)
        self._chunk_rng = None if chunk_seed is None else random.Random(chunk_seed)
        #: Streams opened so far, by protocol (for tests that check reuse).
        self.streams_opened: dict[str, int] = {}

    # -- membership of the network -------------------------------------------------------------

    def add_host(self, key_pair: KeyPair) -> MemoryHost:
        host = MemoryHost(self, key_pair, next(self._ports))
        self.hosts[host.get_id()] = host
        return host

    def connect(self, a: ID, b: ID) -> None:
        if a != b and self._up(a) and self._up(b):
            self._links.add(frozenset((a, b)))

    def connect_all(self) -> None:
        """A full mesh, as after bootstrap: every host sees every other as connected."""
        for a, b in itertools.combinations(list(self.hosts), 2):
            self.connect(a, b)

    def connected_peers(self, me: ID) -> list[ID]:
        if not self._up(me):
            return []
        out = []
        for link in self._links:
            if me in link:
                (other,) = link - {me}
                if self._up(other):
                    out.append(other)
        return out

    def is_silent(self, peer: ID) -> bool:
        return peer in self._silent

    def _up(self, peer: ID) -> bool:
        return peer in self.hosts and peer not in self._crashed

    # -- faults --------------------------------------------------------------------------------

    def crash(self, peer: ID) -> None:
        """``kill -9``: the peer's streams end (EOF on the other end), its connections drop,
        dials to and from it fail, its handler tasks are cancelled."""
        self._crashed.add(peer)
        self._links = {link for link in self._links if peer not in link}
        for s in self._streams:
            if s.local == peer:
                s.abort(tell_remote=False)
            elif s.remote == peer and s.other is not None:
                # The dead end closes its side; ours still fails writes (nothing reads them).
                s.other.abort(tell_remote=False)
        for scope in self.hosts[peer]._handler_scopes:
            scope.cancel()
        self._prune()

    def hang(self, peer: ID) -> None:
        """A frozen machine: connections stay up, bytes to and from it vanish, dials to it
        never complete."""
        self._silent.add(peer)

    def disconnect(self, a: ID, b: ID) -> None:
        """Close the connection between ``a`` and ``b``: every stream on it is reset."""
        self._links.discard(frozenset((a, b)))
        for s in self._streams:
            if {s.local, s.remote} == {a, b}:
                s.abort(tell_remote=True)
        self._prune()

    # -- streams -------------------------------------------------------------------------------

    async def open_stream(self, me: ID, peer: ID, protocols: Sequence[str]) -> MemoryStream:
        await trio.lowlevel.checkpoint()
        if not self._up(me):
            raise MemoryDialError(f"{me} has crashed")
        if peer in self._silent:
            await trio.sleep_forever()  # the SYN never gets an answer
        if not self._up(peer):
            raise MemoryDialError(f"{peer} is unreachable")
        target = self.hosts[peer]
        protocol = next((p for p in protocols if p in target.handlers), None)
        if protocol is None:
            raise MemoryDialError(f"{peer} speaks none of {list(protocols)}")
        self.connect(me, peer)
        left, right = trio.testing.memory_stream_pair()
        if self._chunk_rng is not None:
            rng = random.Random(self._chunk_rng.getrandbits(64))
            _trickle(left, right, rng)
            _trickle(right, left, rng)
        ours = MemoryStream(self, left, me, peer, protocol)
        theirs = MemoryStream(self, right, peer, me, protocol)
        ours.other, theirs.other = theirs, ours
        self._prune()
        self._streams += (ours, theirs)
        self.streams_opened[protocol] = self.streams_opened.get(protocol, 0) + 1
        self._nursery.start_soon(self._serve, target, target.handlers[protocol], theirs)
        return ours

    async def _serve(self, host: MemoryHost, handler: StreamHandler, stream: MemoryStream) -> None:
        with trio.CancelScope() as scope:
            host._handler_scopes.add(scope)
            try:
                await handler(stream)
            finally:
                host._handler_scopes.discard(scope)

    def _prune(self) -> None:
        self._streams = [s for s in self._streams if not s.done]


def _trickle(
    src: trio.StapledStream[Any, Any], dst: trio.StapledStream[Any, Any], rng: random.Random
) -> None:
    """Deliver what ``src`` writes to ``dst`` in pieces of random size (1 B to 64 KiB, log
    uniform), with a scheduling point between pieces and no virtual time spent."""
    send, recv = src.send_stream, dst.receive_stream

    async def pump() -> None:
        # Not trio's memory_stream_pump in a loop: once ``send`` is closed it reports EOF
        # forever, and a loop over it would spin without letting virtual time advance.
        while True:
            try:
                data = send.get_data_nowait(int(2 ** rng.uniform(0, 16)))
            except trio.WouldBlock:
                return
            if not data:
                recv.put_eof()
                return
            try:
                recv.put_data(data)
            except trio.ClosedResourceError:
                raise trio.BrokenResourceError("the reading end is closed") from None
            await trio.lowlevel.checkpoint()

    send.send_all_hook = pump


@asynccontextmanager
async def open_memory_network(*, chunk_seed: int | None = 0) -> AsyncIterator[MemoryNetwork]:
    """A :class:`MemoryNetwork` whose handler tasks live in a nursery of its own, cancelled
    on exit."""
    async with trio.open_nursery() as nursery:
        yield MemoryNetwork(nursery, chunk_seed=chunk_seed)
        nursery.cancel_scope.cancel()
