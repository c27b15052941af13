"""CBOR wire codec for packets, and the bytes each signature covers.

Packets are compact CBOR arrays (no map keys on the wire: a heartbeat is sent a lot):
``[1, kind, sender, seq, target, inc, yinc, ystatus, [update...]]`` (push-pull packets may add
a tenth element, the sender's bucket digests as one byte string); an update is
``[0, node, inc, state, sig]`` (alive), ``[1, node, inc, accuser, sig]`` (suspect) or
``[2, ...]`` (dead); a state is ``[addrs, version, cpu, mem, gpu, bw, tasks, free, models]``.

:func:`decode_packet` is the only entry point for peer bytes: every failure becomes a
:class:`RemoteProtocolError` whose ``reason`` is ``oversized``, ``unsigned`` or ``malformed``.
Signatures are *not* checked here (the machine checks them only when an update would change
its view: most gossip is duplicates).
"""

from __future__ import annotations

import io
from typing import Any

import cbor2

from p2pnode_protocols.cbor_tree import fits

from .errors import HeartbeatError, RemoteProtocolError
from .messages import Alive, Dead, NodeState, Packet, PacketKind, Suspect, Update

__all__ = [
    "PACKET_OVERHEAD",
    "UPDATE_OVERHEAD",
    "accusation_payload",
    "alive_payload",
    "decode_packet",
    "encode_packet",
    "encode_state",
    "update_size",
]

WIRE_VERSION = 1
#: Upper bound of a packet's bytes besides its updates (header with two 64-byte ids).
PACKET_OVERHEAD = 200
#: CBOR array framing per update beyond its own encoding.
UPDATE_OVERHEAD = 2
_ALIVE, _SUSPECT, _DEAD = 0, 1, 2


def _state_list(s: NodeState) -> list[Any]:
    return [
        list(s.addrs),
        s.version,
        s.cpu_cores,
        s.memory_mb,
        s.gpu,
        float(s.bandwidth_mbps),
        s.tasks_running,
        s.free_slots,
        list(s.models),
    ]


def encode_state(s: NodeState) -> bytes:
    return cbor2.dumps(_state_list(s), canonical=True)


def alive_payload(node: bytes, incarnation: int, state: NodeState) -> bytes:
    """The bytes an alive record's signature covers (domain-separated)."""
    return cbor2.dumps(
        ["p2pnode/hb/alive/1", node, incarnation, _state_list(state)], canonical=True
    )


def accusation_payload(kind: str, node: bytes, incarnation: int, accuser: bytes) -> bytes:
    """The bytes a suspect or dead record's signature covers; ``kind`` is the record type."""
    return cbor2.dumps([f"p2pnode/hb/{kind}/1", node, incarnation, accuser], canonical=True)


def _update_list(u: Update) -> list[Any]:
    if isinstance(u, Alive):
        return [_ALIVE, u.node, u.incarnation, _state_list(u.state), u.signature]
    tag = _SUSPECT if isinstance(u, Suspect) else _DEAD
    return [tag, u.node, u.incarnation, u.accuser, u.signature]


def update_size(u: Update) -> int:
    """Encoded size of one update (cached on the record: records are immutable)."""
    size = u._size
    if size < 0:
        size = len(cbor2.dumps(_update_list(u)))
        object.__setattr__(u, "_size", size)
    return size


_SYNC_KINDS = (PacketKind.SYNC, PacketKind.SYNC_ACK, PacketKind.SYNC_PAGE)


def encode_packet(p: Packet) -> bytes:
    raw = [
        WIRE_VERSION,
        int(p.kind),
        p.sender,
        p.seq,
        p.target,
        p.inc,
        p.yinc,
        p.ystatus,
        [_update_list(u) for u in p.updates],
    ]
    if p.digest:
        raw.append(p.digest)
    return cbor2.dumps(raw)


def packet_size(p: Packet) -> int:
    """Encoded size without encoding the header (used by the simulator's byte counts)."""
    size = 24 + len(p.sender) + len(p.target) + sum(update_size(u) for u in p.updates)
    return size + (len(p.digest) + 3 if p.digest else 0)


def decode_packet(
    data: bytes, *, max_bytes: int, max_sync_bytes: int = 0, max_state_bytes: int = 512
) -> Packet:
    """Decode one packet: at most ``max_bytes``, or ``max_sync_bytes`` for push-pull pages."""
    limit = max(max_bytes, max_sync_bytes + PACKET_OVERHEAD if max_sync_bytes else 0)
    if len(data) > limit:
        raise RemoteProtocolError(f"packet of {len(data)} bytes over {limit}", reason="oversized")
    try:
        buf = io.BytesIO(data)
        raw = cbor2.CBORDecoder(buf).decode()
    except Exception as exc:  # cbor2 raises many types on hostile input
        raise RemoteProtocolError(f"not CBOR: {exc}") from None
    if buf.tell() != len(data):
        raise RemoteProtocolError("trailing bytes after the packet")
    try:
        if not isinstance(raw, list) or len(raw) not in (9, 10) or raw[0] != WIRE_VERSION:
            raise RemoteProtocolError("not a version-1 heartbeat packet")
        _, kind, sender, seq, target, inc, yinc, ystatus, ups = raw[:9]
        digest = raw[9] if len(raw) == 10 else b""
        if not isinstance(ups, list):
            raise RemoteProtocolError("updates must be an array")
        if len(data) > max_bytes and kind not in _SYNC_KINDS:
            raise RemoteProtocolError(
                f"{len(data)}-byte packet over {max_bytes}", reason="oversized"
            )
        if digest and kind not in _SYNC_KINDS:
            raise RemoteProtocolError("a digest outside push-pull")
        updates = tuple(_decode_update(u, max_state_bytes) for u in ups)
        return Packet(
            kind=PacketKind(kind),
            sender=sender,
            seq=seq,
            target=target,
            inc=inc,
            yinc=yinc,
            ystatus=ystatus,
            updates=updates,
            digest=digest,
        )
    except RemoteProtocolError:
        raise
    except (HeartbeatError, ValueError, TypeError, cbor2.CBORError) as exc:
        # CBORError: re-encoding a node state built of shared references (tags 28/29) fails
        raise RemoteProtocolError(f"bad packet: {exc}") from None


def _decode_update(u: Any, max_state_bytes: int) -> Update:
    if not isinstance(u, list) or len(u) != 5:
        raise RemoteProtocolError("an update is a 5-element array")
    tag, node, inc, body, sig = u
    if not isinstance(sig, bytes) or not sig:
        raise RemoteProtocolError("update without a signature", reason="unsigned")
    if tag == _ALIVE:
        if not isinstance(body, list) or len(body) != 9:
            raise RemoteProtocolError("a node state is a 9-element array")
        if not fits(body, max_state_bytes) or len(cbor2.dumps(body)) > max_state_bytes:
            raise RemoteProtocolError("node state over its size cap", reason="oversized")
        addrs, version, cpu, mem, gpu, bw, tasks, free, models = body
        if not isinstance(addrs, list) or not isinstance(models, list):
            raise RemoteProtocolError("addrs and models must be arrays")
        state = NodeState(
            addrs=tuple(addrs),
            version=version,
            cpu_cores=cpu,
            memory_mb=mem,
            gpu=gpu,
            bandwidth_mbps=bw,
            tasks_running=tasks,
            free_slots=free,
            models=tuple(models),
        )
        return Alive(node=node, incarnation=inc, state=state, signature=sig)
    if tag == _SUSPECT:
        return Suspect(node=node, incarnation=inc, accuser=body, signature=sig)
    if tag == _DEAD:
        return Dead(node=node, incarnation=inc, accuser=body, signature=sig)
    raise RemoteProtocolError(f"unknown update type {tag!r}")
