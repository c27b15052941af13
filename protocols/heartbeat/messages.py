"""What travels between members: packets, and the updates piggybacked on them.

A ``Packet`` is one transport send (one frame on a libp2p stream in the daemon, one datagram in
the simulator). Its header says who sends it, why (``kind``), a probe sequence number, the probe
target for indirect probes, the sender's incarnation, and what the sender knows of the
*receiver* (``yinc``/``ystatus``): a receiver that learns it is thought suspect or dead refutes
at once (Lifeguard's buddy system) and one that learns the sender has not heard its current
incarnation pushes its alive record back.

Updates: ``Alive`` is the heartbeat proper, the member's node state signed by the member itself;
``Suspect`` and ``Dead`` are accusations signed by their accuser. All are frozen, slotted,
keyword-only dataclasses that check their bounds on construction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

from .errors import LocalProtocolError

__all__ = [
    "MAX_ADDRS",
    "MAX_MODELS",
    "Alive",
    "Dead",
    "NodeState",
    "Packet",
    "PacketKind",
    "Suspect",
    "Update",
]

MAX_ADDRS = 8
MAX_MODELS = 16
MAX_TEXT = 128
MAX_ID = 64
MAX_SIG = 128
MAX_INC = (1 << 63) - 1
#: Most anti-entropy buckets a digest may carry (8 bytes each).
MAX_BUCKETS = 1024


class PacketKind(IntEnum):
    #: Are you alive? Answered by ACK with the same seq.
    PING = 1
    ACK = 2
    #: Please probe ``target`` for me (seq is mine); answered by ACK or, on timeout, NACK.
    PING_REQ = 3
    NACK = 4
    #: Piggyback only: a gossip round, or a push of our alive record.
    GOSSIP = 5
    #: Push-pull. With a ``digest`` (anti-entropy, the steady state): our bucket digests,
    #: answered by SYNC_ACK with the receiver's digests and its records of the buckets that
    #: differ; the initiator then sends its own records of the buckets still differing in a
    #: SYNC_PAGE. Without a digest (a join), or when most buckets differ (a healed partition):
    #: a bounded page of the view (accusations first, then alive records), answered in kind.
    #: Up to ``max_sync_bytes`` instead of a packet's cap.
    SYNC = 6
    SYNC_ACK = 7
    SYNC_PAGE = 8


def _text(name: str, v: object, limit: int = MAX_TEXT) -> None:
    if not isinstance(v, str) or len(v) > limit:
        raise LocalProtocolError(f"{name} must be text of at most {limit} characters")


def _count(name: str, v: object, hi: int = 1 << 40) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= hi:
        raise LocalProtocolError(f"{name} must be an integer in [0, {hi}]")


def _node(name: str, v: object) -> None:
    if not isinstance(v, bytes) or not 1 <= len(v) <= MAX_ID:
        raise LocalProtocolError(f"{name} must be 1 to {MAX_ID} bytes")


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeState:
    """What a member can do and how busy it is: the heartbeat's payload (bounded)."""

    addrs: tuple[str, ...] = ()
    version: str = ""
    cpu_cores: int = 0
    memory_mb: int = 0
    #: GPU model name, "" when none was found.
    gpu: str = ""
    #: Measured bandwidth estimate in Mbit/s (0: not measured yet).
    bandwidth_mbps: float = 0.0
    tasks_running: int = 0
    free_slots: int = 0
    #: Model versions held, e.g. "mnist-mlp@12".
    models: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.addrs, tuple) or len(self.addrs) > MAX_ADDRS:
            raise LocalProtocolError(f"addrs must be a tuple of at most {MAX_ADDRS}")
        for a in self.addrs:
            _text("addr", a)
        if not isinstance(self.models, tuple) or len(self.models) > MAX_MODELS:
            raise LocalProtocolError(f"models must be a tuple of at most {MAX_MODELS}")
        for m in self.models:
            _text("model", m, 80)
        _text("version", self.version, 32)
        _text("gpu", self.gpu, 64)
        for name in ("cpu_cores", "memory_mb", "tasks_running", "free_slots"):
            _count(name, getattr(self, name), 1 << 32)
        bw = self.bandwidth_mbps
        if isinstance(bw, bool) or not isinstance(bw, int | float) or not 0 <= bw <= 1e7:
            raise LocalProtocolError("bandwidth_mbps must be a number in [0, 1e7]")

    def as_dict(self) -> dict[str, object]:
        return {
            "addrs": list(self.addrs),
            "version": self.version,
            "cpu_cores": self.cpu_cores,
            "memory_mb": self.memory_mb,
            "gpu": self.gpu or None,
            "bandwidth_mbps": self.bandwidth_mbps,
            "tasks_running": self.tasks_running,
            "free_slots": self.free_slots,
            "models": list(self.models),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Alive:
    """``node`` is alive at ``incarnation`` with ``state``; signed by ``node``."""

    node: bytes
    incarnation: int
    state: NodeState
    signature: bytes
    _size: int = field(default=-1, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _node("node", self.node)
        _count("incarnation", self.incarnation, MAX_INC)
        if not isinstance(self.state, NodeState):
            raise LocalProtocolError("state must be a NodeState")
        if not isinstance(self.signature, bytes) or len(self.signature) > MAX_SIG:
            raise LocalProtocolError("signature must be bytes")


@dataclass(frozen=True, slots=True, kw_only=True)
class Suspect:
    """``accuser`` could not reach ``node`` at ``incarnation``; signed by ``accuser``."""

    node: bytes
    incarnation: int
    accuser: bytes
    signature: bytes
    _size: int = field(default=-1, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _node("node", self.node)
        _node("accuser", self.accuser)
        _count("incarnation", self.incarnation, MAX_INC)
        if not isinstance(self.signature, bytes) or len(self.signature) > MAX_SIG:
            raise LocalProtocolError("signature must be bytes")


@dataclass(frozen=True, slots=True, kw_only=True)
class Dead:
    """``accuser``'s suspicion of ``node`` at ``incarnation`` ran out; signed by ``accuser``."""

    node: bytes
    incarnation: int
    accuser: bytes
    signature: bytes
    _size: int = field(default=-1, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _node("node", self.node)
        _node("accuser", self.accuser)
        _count("incarnation", self.incarnation, MAX_INC)
        if not isinstance(self.signature, bytes) or len(self.signature) > MAX_SIG:
            raise LocalProtocolError("signature must be bytes")


Update = Alive | Suspect | Dead


@dataclass(frozen=True, slots=True, kw_only=True)
class Packet:
    kind: PacketKind
    sender: bytes
    seq: int = 0
    #: The member to probe (PING_REQ) or that was probed (ACK/NACK relayed by a helper).
    target: bytes = b""
    #: The sender's incarnation.
    inc: int = 0
    #: The incarnation and status (-1: unknown) the sender knows for the receiver.
    yinc: int = -1
    ystatus: int = -1
    updates: tuple[Update, ...] = ()
    #: Push-pull only: the sender's bucket digests, 8 bytes each (empty: none).
    digest: bytes = b""

    def __post_init__(self) -> None:
        if not isinstance(self.kind, PacketKind):
            raise LocalProtocolError("kind must be a PacketKind")
        _node("sender", self.sender)
        _count("seq", self.seq, MAX_INC)
        _count("inc", self.inc, MAX_INC)
        if not isinstance(self.target, bytes) or len(self.target) > MAX_ID:
            raise LocalProtocolError("target must be bytes")
        if isinstance(self.yinc, bool) or not isinstance(self.yinc, int) or self.yinc < -1:
            raise LocalProtocolError("yinc must be an integer >= -1")
        if self.ystatus not in (-1, 0, 1, 2):
            raise LocalProtocolError("ystatus must be -1, 0, 1 or 2")
        if not isinstance(self.updates, tuple):
            raise LocalProtocolError("updates must be a tuple")
        d = self.digest
        if not isinstance(d, bytes) or len(d) % 8 or len(d) > 8 * MAX_BUCKETS:
            raise LocalProtocolError(f"digest must be at most {MAX_BUCKETS} 8-byte buckets")
