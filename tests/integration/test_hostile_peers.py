"""Remote peers that misbehave on the wire: the daemon stays up and keeps serving.

These tests run a py-libp2p host inside the test process against a real daemon process.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import multiaddr
import pytest
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.security.insecure.transport import PLAINTEXT_PROTOCOL_ID, InsecureTransport

from p2pnode.network.host import build_host
from p2pnode_protocols.framing import FrameDecoder, encode_frame
from tests.integration.harness import LocalSwarm, local_swarm

pytestmark = pytest.mark.timeout(120)
LISTEN = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSwarm]:
    with local_swarm(tmp_path_factory.mktemp("hostile"), 1) as s:
        yield s


async def read_frame(stream) -> dict | None:  # type: ignore[no-untyped-def]
    decoder = FrameDecoder(1 << 20)
    while True:
        frame = decoder.next_frame()
        if frame is not None:
            return frame
        try:
            data = await stream.read(65536)
        except Exception:
            return None
        if not data:
            return None
        decoder.receive_data(data)


async def test_plaintext_peers_are_refused(daemon: LocalSwarm) -> None:
    kp = create_new_key_pair()
    host = new_host(key_pair=kp, sec_opt={PLAINTEXT_PROTOCOL_ID: InsecureTransport(kp)})
    async with host.run(listen_addrs=LISTEN):
        with pytest.raises(Exception), trio.fail_after(20):  # noqa: B017 - any dial failure
            await host.connect(info_from_p2p_addr(multiaddr.Multiaddr(daemon.node(1).addr)))
    with daemon.client(1) as c:
        assert c.peers()["peers"] == []


async def test_garbage_on_every_protocol_leaves_the_daemon_serving(daemon: LocalSwarm) -> None:
    kp = create_new_key_pair()
    host = build_host(kp, psk=None, dial_timeout=5)
    target = info_from_p2p_addr(multiaddr.Multiaddr(daemon.node(1).addr))
    async with host.run(listen_addrs=LISTEN):
        with trio.fail_after(20):
            await host.connect(target)
            # Our RPC protocol: bad CBOR, a bad request, a valid one, then a frame that
            # claims 1 GB (the daemon must refuse it without allocating).
            s = await host.new_stream(target.peer_id, ["/p2pnode/dht/1.0.0"])
            await s.write(struct.pack(">I", 3) + b"\xff\xff\xff")
            assert (await read_frame(s))["ok"] is False
            await s.write(encode_frame({"id": 5, "op": "drop_tables", "key": "x"}))
            reply = await read_frame(s)
            assert reply == {"id": 5, "ok": False, "err": "unknown op 'drop_tables'"}
            await s.write(encode_frame({"id": 6, "op": "find_node", "key": "/p2pnode/kv/a"}))
            assert (await read_frame(s)) == {"id": 6, "ok": True}
            await s.write(encode_frame({"id": 7, "op": "store", "key": "k", "record": b"junk"}))
            assert (await read_frame(s))["ok"] is False
            await s.write(struct.pack(">I", 1 << 30))
            refusal = await read_frame(s)
            assert refusal is not None and "exceeds" in refusal["err"]
            # Kademlia's own protocol gets junk too.
            k = await host.new_stream(target.peer_id, ["/ipfs/kad/1.0.0"])
            await k.write(b"\xff\xff\xff\xff\x0f" + b"\x00" * 64)
            with trio.move_on_after(2):
                await read_frame(k)
    with daemon.client(1) as c:
        assert c.status()["pid"] == daemon.node(1).process.pid  # type: ignore[union-attr]
        c.dht_put("still-alive", b"yes")
        assert c.dht_get("still-alive")["value"] == b"yes"


class _Wire:
    """Frames and raw bytes from one stream, as a blob fetcher reads them."""

    def __init__(self, stream) -> None:  # type: ignore[no-untyped-def]
        self.stream = stream
        self.decoder = FrameDecoder(1 << 20)

    async def _more(self) -> bool:
        try:
            data = await self.stream.read(1 << 20)
        except Exception:
            data = b""
        self.decoder.receive_data(data)
        return bool(data)

    async def frame(self) -> dict | None:
        while (frame := self.decoder.next_frame()) is None:
            if not await self._more():
                return None
        return frame

    async def raw(self, n: int) -> bytes:
        while (data := self.decoder.next_raw(n)) is None:
            assert await self._more(), "stream ended inside raw bytes"
        return data


async def test_blob_requests_out_of_bounds_end_the_stream_and_nothing_else(
    daemon: LocalSwarm,
) -> None:
    from p2pnode_protocols.blobs.cid import manifest_cid, multihash
    from p2pnode_protocols.blobs.manifest import decode_manifest

    with daemon.client(1) as c:
        key = c.blob_put(data=bytes(range(256)) * (12 << 10))["key"]  # 3 MiB: 3 chunks
    host = build_host(create_new_key_pair(), psk=None, dial_timeout=5)
    target = info_from_p2p_addr(multiaddr.Multiaddr(daemon.node(1).addr))
    async with host.run(listen_addrs=LISTEN):
        with trio.fail_after(30):
            await host.connect(target)
            s = _Wire(await host.new_stream(target.peer_id, ["/p2pnode/blob/1.0.0"]))
            # The manifest and the first two chunks, in one answer.
            await s.stream.write(encode_frame({"key": key, "first": 2}))
            head = await s.frame()
            assert head is not None and head["key"] == key
            manifest = await s.raw(head["size"])
            assert manifest_cid(manifest) == key
            for mh, size in decode_manifest(manifest).chunks[:2]:
                assert await s.frame() == {"hash": mh, "size": size}
                assert multihash(await s.raw(size)) == mh
            # Not held: size 0 and nothing after it; the stream goes on.
            other = "bafyreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
            await s.stream.write(encode_frame({"key": other, "first": 1}))
            assert await s.frame() == {"key": other, "size": 0}
            # Out of bounds: the provider ends the stream.
            await s.stream.write(encode_frame({"key": key, "first": 10**6}))
            assert await s.frame() is None
            t = _Wire(await host.new_stream(target.peer_id, ["/p2pnode/blob/1.0.0"]))
            await t.stream.write(encode_frame({"hashes": [b"x"] * 65}))
            assert await t.frame() is None
    with daemon.client(1) as c:
        assert c.blob_stat(key)["complete"]
        assert c.status()["blobs"]["served_chunks"] >= 2
