"""The length-prefixed CBOR frame codec every stream protocol reads with (RPC, DHT, blobs, IPC).

The input is cut into pieces whose sizes its first byte picks (as reads would bring them),
fed to a :class:`FrameDecoder`, and every frame taken out until it needs more, then at end
of input. Allowed: ``FrameError`` (``FrameTooLarge``, ``MalformedFrame``).
"""

from __future__ import annotations

from tests.fuzz.harness import Target, instrumented

with instrumented("p2pnode_protocols.framing"):
    from p2pnode_protocols.framing import FrameDecoder, FrameError, encode_frame

MAX_FRAME = 1 << 16


def decode(data: bytes) -> list[dict]:
    step = 1 + (data[0] % 64) if data else 1
    body = data[1:]
    dec = FrameDecoder(MAX_FRAME)
    frames = []
    for at in range(0, len(body), step):
        dec.receive_data(body[at : at + step])
        while (frame := dec.next_frame()) is not None:
            frames.append(frame)
    dec.receive_data(b"")
    while (frame := dec.next_frame()) is not None:
        frames.append(frame)
    return frames


def seeds() -> list[bytes]:
    frames = [
        {"id": 1, "method": "status", "params": {}},
        {"id": 7, "op": "find_value", "key": "/p2pnode/kv/x"},
        {"hashes": [b"\x12\x20" + bytes(32)]},
        {"ok": True, "closer": [["12D3KooW", ["/ip4/127.0.0.1/tcp/4001"]]]},
    ]
    return [bytes([n]) + b"".join(encode_frame(f) for f in frames) for n in (0, 3, 63)]


TARGET = Target(
    name="framing",
    decode=decode,
    allowed=(FrameError,),
    seeds=seeds,
    doc="`p2pnode_protocols.framing.FrameDecoder`: every stream protocol's frames",
)
