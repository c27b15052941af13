"""One collective operation on one member, with no I/O: parts in, parts out.

An :class:`Operation` is told what its member holds (an array, or a small value to gather),
its rank and the group's size, and then only two things: :meth:`Operation.start` (the parts to
send first) and :meth:`Operation.receive` (a part from another rank; the parts it lets us send
next). The service moves the parts over libp2p streams; tests wire several operations together
in memory. So the schedule, the arithmetic and every check run the same in both.

Algorithms (all_reduce):

- **butterfly** (Hivemind's reduce-scatter by shard): the array is cut into ``n`` shards; every
  member sends shard ``j`` to rank ``j``, which sums the ``n`` contributions (in rank order, so
  the sum does not depend on arrival order) and sends the reduced shard to every member. Two
  steps whatever ``n``; each member sends and receives ``2 (n-1)/n`` of the array.
- **ring**: ``n-1`` reduce-scatter steps to the next rank, each adding the received partial sum
  to the member's own values and passing it on, then ``n-1`` all-gather steps forwarding the
  reduced shards unchanged. The same bytes as butterfly, each member talking only to its two
  neighbours: what a ring ordered by measured links is for.
- **direct** (small arrays): every member sends the whole array to every other and sums all
  ``n`` itself, in rank order.

Each shard is cut into parts (``part_len`` elements) that travel and are reduced one by one, so
sending, receiving and adding overlap. Compressed operations encode each part; the member that
reduces a shard sends the *encoded* reduced shard and keeps its decoded copy, and forwarded
parts are forwarded as received, so every member ends with the identical array.

Checks: a part must be one this member expects from that sender (phase, step, offset) exactly
once, carry the count expected there, and decode to that count; anything else raises
:class:`~p2pnode_protocols.collectives.wire.PartError` naming the sender. The operation is done
only when every expected part arrived: a result never leaves out a part of any member.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from p2pnode.collectives.codecs import codec_of, decode_part, encode_part
from p2pnode_protocols.collectives import schedule
from p2pnode_protocols.collectives.errors import PartError
from p2pnode_protocols.collectives.schedule import (
    Algorithm,
    Phase,
    butterfly_plan,
    parts,
    ring_plan,
    shards,
)
from p2pnode_protocols.collectives.wire import Codec, PartHeader, descriptor_digest

#: the most elements per part (1 MiB of float32): big enough that per-part costs vanish
PART_ELEMENTS = 1 << 18
#: the fewest elements per part (64 KiB of float32), where a shard is cut finer
MIN_PART_ELEMENTS = 1 << 14
#: parts a shard is cut into at least (while they stay above the minimum), so the first parts
#: are being added while the last ones still travel
PARTS_PER_SHARD = 4


def part_length(length: int, n: int) -> int:
    """Elements per part for an array of ``length`` over ``n`` members (every member computes
    the same, and it is part of the operation's digest)."""
    shard = -(-length // max(n, 1))
    return max(MIN_PART_ELEMENTS, min(PART_ELEMENTS, -(-shard // PARTS_PER_SHARD)))


#: below this many bytes an all_reduce sends the whole array to everyone
DIRECT_BELOW = 64 * 1024
#: the step of butterfly's all-gather in the schedule's plan
BUTTERFLY_GATHER_STEP = 1
#: the largest value all_gather carries per member
MAX_GATHER = 64 * 1024


class Kind(StrEnum):
    ALL_REDUCE = "all_reduce"
    BROADCAST = "broadcast"
    ALL_GATHER = "all_gather"


def choose_algorithm(nbytes: int, n: int, codec: str = "none") -> Algorithm:
    """The schedule's choice (direct below :data:`DIRECT_BELOW`, butterfly up to 8 members,
    ring beyond), except that top-k always runs butterfly: its error feedback follows each
    member's own values, which a ring's partial sums mix."""
    algorithm = schedule.choose_algorithm(nbytes, n, direct_below=DIRECT_BELOW)
    if codec == "topk" and algorithm is Algorithm.RING:
        return Algorithm.BUTTERFLY
    return algorithm


def _pack_value(value: bytes) -> bytes:
    """An all_gather value as whole float32 words (a part's unit): its length, it, padding."""
    body = len(value).to_bytes(4, "little") + value
    return body + bytes(-len(body) % 4)


def _unpack_value(payload: bytes | memoryview, sender: int) -> bytes:
    data = bytes(payload)
    n = int.from_bytes(data[:4], "little") if len(data) >= 4 else -1
    if not 0 <= n <= MAX_GATHER or len(data) != 4 + n + (-(4 + n) % 4):
        raise PartError(f"rank {sender} sent a malformed all_gather value")
    return data[4 : 4 + n]


@dataclass(frozen=True, slots=True)
class OpSpec:
    """What every member must agree on for one operation (its digest travels in every part)."""

    kind: Kind
    length: int  # elements (0 for all_gather: each member's value has its own length)
    algorithm: Algorithm = Algorithm.BUTTERFLY
    reduce: str = "sum"  # "sum" or "mean"
    codec: str = "none"
    root: int = 0
    part_len: int = PART_ELEMENTS

    def __post_init__(self) -> None:
        if self.reduce not in ("sum", "mean"):
            raise ValueError("op must be 'sum' or 'mean'")
        codec_of(self.codec)
        if self.length < 0 or self.part_len < 1:
            raise ValueError("length >= 0 and part_len >= 1")
        if self.codec == "topk" and self.algorithm is Algorithm.RING:
            raise ValueError("top-k runs with the butterfly or direct algorithm, not the ring")

    @property
    def digest(self) -> int:
        algorithm = self.algorithm if self.kind is Kind.ALL_REDUCE else "-"
        return descriptor_digest(
            f"{self.kind}/{self.reduce}", self.length, "float32", self.codec, algorithm, self.root
        ) ^ zlib.crc32(str(self.part_len).encode())


@dataclass(frozen=True, slots=True)
class Out:
    """A part to send: to ``to`` (a rank), with its header (nbytes and crc of ``payload``)."""

    to: int
    header: PartHeader
    payload: bytes | memoryview


class Operation:
    """One member's side of one operation; see the module docstring."""

    def __init__(
        self,
        spec: OpSpec,
        *,
        rank: int,
        n: int,
        generation: int,
        seq: int,
        data: np.ndarray | bytes,
        residual: np.ndarray | None = None,
    ) -> None:
        if not 0 <= rank < n:
            raise ValueError("rank out of range")
        self.spec = spec
        self.rank, self.n = rank, n
        self.generation, self.seq = generation, seq
        self.codec = codec_of(spec.codec)
        self.digest = spec.digest
        self.rng = np.random.default_rng([generation, seq, rank])
        self.residual = residual
        self.expected: dict[tuple[int, Phase, int, int], int] = {}
        self.pending_reduce = 0  # own parts not yet fully reduced
        self.gathered: list[bytes | None] = []
        if spec.kind is Kind.ALL_GATHER:
            if not isinstance(data, bytes | bytearray) or len(data) > MAX_GATHER:
                raise ValueError(f"all_gather takes bytes of at most {MAX_GATHER}")
            self.value = bytes(data)
            self.x = np.zeros(0, np.float32)
        else:
            x = np.ascontiguousarray(data, dtype=np.float32).reshape(-1)
            if x.shape[0] != spec.length:
                raise ValueError(
                    f"the array has {x.shape[0]} elements, the operation {spec.length}"
                )
            self.x = x
        self.result = np.empty(spec.length, np.float32)
        self._contrib: dict[int, dict[int, np.ndarray]] = {}
        # a payload sent to several members is checksummed once
        self._last_crc: tuple[object, int] = (None, 0)
        self._plan()

    # -- the plan: what this member expects ------------------------------------------------------

    def _expect(self, sender: int, phase: Phase, step: int, start: int, stop: int) -> None:
        self.expected[(sender, phase, step, start)] = stop - start

    def _plan(self) -> None:
        s, r, n = self.spec, self.rank, self.n
        others = [j for j in range(n) if j != r]
        if s.kind is Kind.ALL_GATHER:
            self.gathered = [None] * n
            for j in others:
                self.expected[(j, Phase.DIRECT, 0, 0)] = -1  # any length up to MAX_GATHER
            return
        if s.kind is Kind.BROADCAST:
            if r != s.root:
                for a, b in parts(0, s.length, s.part_len):
                    self._expect(s.root, Phase.BROADCAST, 0, a, b)
            return
        if s.algorithm is Algorithm.DIRECT or n == 1:
            for j in others:
                self._expect(j, Phase.DIRECT, 0, 0, s.length)
            return
        # Ring and butterfly: what arrives, from whom and at which step, is the schedule's plan.
        sh = shards(s.length, n)
        plan = butterfly_plan(r, n) if s.algorithm is Algorithm.BUTTERFLY else ring_plan(r, n)
        for t in plan:
            if t.recv_shard is None:
                continue
            for sender in t.recv_from:
                for a, b in parts(*sh[t.recv_shard], s.part_len):
                    self._expect(sender, t.phase, t.step, a, b)
        owned = r if s.algorithm is Algorithm.BUTTERFLY else (r + 1) % n
        self.pending_reduce = len(parts(*sh[owned], s.part_len))

    @property
    def done(self) -> bool:
        return not self.expected and self.pending_reduce == 0

    def missing_from(self) -> set[int]:
        """The ranks this member still waits for."""
        return {key[0] for key in self.expected}

    # -- sending ---------------------------------------------------------------------------------

    def _out(self, to: int, phase: Phase, step: int, offset: int, count: int, payload) -> Out:  # type: ignore[no-untyped-def]
        if self._last_crc[0] is not payload:
            self._last_crc = (payload, zlib.crc32(payload))
        header = PartHeader(
            generation=self.generation,
            op=self.seq,
            desc=self.digest,
            phase=phase,
            codec=self.codec,
            step=step,
            sender=self.rank,
            offset=offset,
            count=count,
            nbytes=len(payload),
            crc=self._last_crc[1],
        )
        return Out(to, header, payload)

    def _encode_own(self, a: int, b: int) -> tuple[bytes | memoryview, np.ndarray]:
        """Wire bytes of this member's values [a, b) and what a receiver decodes of them (top-k
        adds the error-feedback residual and keeps what it did not send)."""
        values = self.x[a:b]
        if self.codec is Codec.NONE:
            return encode_part(self.codec, values, self.rng), values
        if self.residual is not None:
            values = values + self.residual[a:b]
        payload = encode_part(self.codec, values, self.rng)
        decoded = decode_part(self.codec, payload, b - a)
        if self.residual is not None:
            self.residual[a:b] = values - decoded
        return payload, decoded

    def _finish(self, a: int, b: int, total: np.ndarray) -> bytes | memoryview:
        """Store the reduced values [a, b) (as every member will decode them) and return their
        wire bytes."""
        if self.spec.reduce == "mean":
            total /= np.float32(self.n)
        if self.codec is Codec.NONE:
            self.result[a:b] = total
            return memoryview(self.result[a:b]).cast("B")
        if self.residual is not None:
            total = total + self.residual[a:b]
        payload = encode_part(self.codec, total, self.rng)
        decoded = decode_part(self.codec, payload, b - a)
        if self.residual is not None:
            self.residual[a:b] = total - decoded
        self.result[a:b] = decoded
        return payload

    def start(self) -> list[Out]:
        s, r, n = self.spec, self.rank, self.n
        others = [j for j in range(n) if j != r]
        out: list[Out] = []
        if s.kind is Kind.ALL_GATHER:
            self.gathered[r] = self.value
            packed = _pack_value(self.value)
            count = len(packed) // 4
            return [self._out(j, Phase.DIRECT, 0, 0, count, packed) for j in others]
        if s.kind is Kind.BROADCAST:
            if r == s.root:
                for a, b in parts(0, s.length, s.part_len):
                    payload, decoded = self._encode_own(a, b)
                    self.result[a:b] = decoded
                    out += [self._out(j, Phase.BROADCAST, 0, a, b - a, payload) for j in others]
            return out
        if s.algorithm is Algorithm.DIRECT or n == 1:
            payload, decoded = self._encode_own(0, s.length)
            self._contrib[0] = {r: np.array(decoded, dtype=np.float32)}
            out = [self._out(j, Phase.DIRECT, 0, 0, s.length, payload) for j in others]
            return out + self._direct_ready()
        sh = shards(s.length, n)
        if s.algorithm is Algorithm.BUTTERFLY:
            for j in others:
                for a, b in parts(*sh[j], s.part_len):
                    payload, _ = self._encode_own(a, b)
                    out.append(self._out(j, Phase.REDUCE_SCATTER, 0, a, b - a, payload))
            if n == 1:
                return out
            return out
        # ring: our own shard starts the reduce-scatter
        self.buf = self.x.copy() if self.residual is None else self.x + self.residual
        if self.residual is not None:
            self.residual[:] = 0
        nxt = (r + 1) % n
        for a, b in parts(*sh[r], s.part_len):
            payload = self._ring_payload(a, b)
            out.append(self._out(nxt, Phase.REDUCE_SCATTER, 0, a, b - a, payload))
        return out

    def _ring_payload(self, a: int, b: int) -> bytes | memoryview:
        if self.codec is Codec.NONE:
            return memoryview(self.buf[a:b]).cast("B")
        return encode_part(self.codec, self.buf[a:b], self.rng)

    # -- receiving -------------------------------------------------------------------------------

    def receive(self, header: PartHeader, payload: bytes | memoryview) -> list[Out]:
        """Take one part (its payload's checksum already checked); the parts it lets us send."""
        h, s = header, self.spec
        if h.generation != self.generation or h.op != self.seq:
            raise PartError(f"rank {h.sender} sent a part of another operation")
        if h.desc != self.digest:
            raise PartError(f"rank {h.sender} called a different operation (digest mismatch)")
        if h.codec is not self.codec:
            raise PartError(f"rank {h.sender} used another codec")
        key = (h.sender, h.phase, h.step, h.offset)
        want = self.expected.pop(key, None)
        if want is None:
            raise PartError(f"rank {h.sender} sent a part this member does not expect: {key}")
        if s.kind is Kind.ALL_GATHER:
            self.gathered[h.sender] = _unpack_value(payload, h.sender)
            return []
        if h.count != want:
            raise PartError(f"rank {h.sender} sent {h.count} elements where {want} belong")
        values = decode_part(self.codec, payload, h.count)
        a, b = h.offset, h.offset + h.count
        if s.kind is Kind.BROADCAST:
            self.result[a:b] = values
            return []
        if h.phase is Phase.DIRECT:
            self._contrib[0][h.sender] = values
            return self._direct_ready()
        if s.algorithm is Algorithm.BUTTERFLY:
            if h.phase is Phase.ALL_GATHER:
                self.result[a:b] = values
                return []
            got = self._contrib.setdefault(a, {})
            got[h.sender] = values
            if len(got) < self.n - 1:
                return []
            del self._contrib[a]
            total = np.array(self.x[a:b] if self.rank == 0 else got[0], dtype=np.float32)
            for k in range(1, self.n):
                total += self.x[a:b] if k == self.rank else got[k]
            self.pending_reduce -= 1
            payload_out = self._finish(a, b, total)
            return [
                self._out(j, Phase.ALL_GATHER, BUTTERFLY_GATHER_STEP, a, b - a, payload_out)
                for j in range(self.n)
                if j != self.rank
            ]
        return self._ring_receive(h, values, payload)

    def _ring_receive(self, h: PartHeader, values: np.ndarray, payload) -> list[Out]:  # type: ignore[no-untyped-def]
        a, b = h.offset, h.offset + h.count
        nxt = (self.rank + 1) % self.n
        last = self.n - 2
        if h.phase is Phase.ALL_GATHER:
            self.result[a:b] = values
            if h.step < last:
                return [self._out(nxt, Phase.ALL_GATHER, h.step + 1, a, b - a, payload)]
            return []
        self.buf[a:b] += values
        if h.step < last:
            return [
                self._out(nxt, Phase.REDUCE_SCATTER, h.step + 1, a, b - a, self._ring_payload(a, b))
            ]
        self.pending_reduce -= 1
        payload_out = self._finish(a, b, self.buf[a:b].copy())
        return [self._out(nxt, Phase.ALL_GATHER, 0, a, b - a, payload_out)]

    def _direct_ready(self) -> list[Out]:
        got = self._contrib[0]
        if len(got) < self.n:
            return []
        total = np.array(got[0], dtype=np.float32)
        for k in range(1, self.n):
            total += got[k]
        if self.spec.reduce == "mean":
            total /= np.float32(self.n)
        self.result[:] = total
        del self._contrib[0]
        return []
