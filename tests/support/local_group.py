"""An in-process stand-in for the collective ``Group`` of the client API (issue 16).

:class:`LocalWorld` holds the members of one group; each member is a :class:`LocalGroup`
driven by its own thread, with the client API's methods and semantics: an operation returns
only once every member of the current generation has given its part, and then every member
gets the same result (the sum is taken in rank order, in float32, once, and shared). A member
joining or leaving bumps the generation: operations not yet complete fail with
``GroupChangedError`` on every member, and ``refresh()`` adopts the new membership. Codecs are
applied to each member's part before the sum as the daemon would apply them (fp16 cast, int8
with one scale per part, top-1% with error feedback per array length), and ``stats`` counts the
bytes the daemon's algorithm (direct below 64 KiB, else ring) would move with that codec. It
exists so that code on top of the API (p2pnode.torch) is tested against its semantics without
daemons; the integration tests use the real thing.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from p2pnode.ipc.errors import CollectiveFailed, GroupChangedError

__all__ = ["LocalGroup", "LocalWorld", "run_all"]

T = TypeVar("T")
TOPK_FRACTION = 0.01
#: below this many bytes (float32) an all_reduce sends the whole array to every member, as
#: the daemon's "direct" algorithm does; above, a ring or butterfly moves 2(n-1)/n of it.
DIRECT_BELOW = 64 * 1024


@dataclass
class _Op:
    kind: str
    parts: dict[int, Any] = field(default_factory=dict)
    result: Any = None
    done: bool = False
    taken: int = 0


class LocalWorld:
    """One group's members, their generation and their operations in flight."""

    def __init__(self, size: int, *, name: str = "local", timeout: float = 20.0) -> None:
        if size < 1:
            raise ValueError("size must be >= 1")
        self.name = name
        self.timeout = timeout
        self.generation = 1
        self._cv = threading.Condition()
        self._ids = iter(range(1 << 30))
        self._members: list[LocalGroup] = []
        self._ops: dict[tuple[int, int], _Op] = {}
        for _ in range(size):
            self._members.append(LocalGroup(self, next(self._ids)))
        for g in self._members:
            g._adopt()
        self.groups: list[LocalGroup] = list(self._members)

    def join(self) -> LocalGroup:
        """A new member (a late joiner): the group re-forms with it, last in rank order."""
        with self._cv:
            g = LocalGroup(self, next(self._ids))
            self._members.append(g)
            self.generation += 1
            g._adopt()
            self._cv.notify_all()
            return g

    def _leave(self, g: LocalGroup) -> None:
        with self._cv:
            if g in self._members:
                self._members.remove(g)
                self.generation += 1
                self._cv.notify_all()


class LocalGroup:
    """One member's view of a :class:`LocalWorld` (the client API's ``Group``)."""

    def __init__(self, world: LocalWorld, member_id: int) -> None:
        self._world = world
        self.member_id = member_id
        self.name = world.name
        self.rank = -1
        self.world_size = 0
        self.generation = 0
        self.members: list[str] = []
        self._seq = 0
        self._residuals: dict[int, np.ndarray] = {}
        self.stats: dict[str, int] = {"bytes_sent": 0, "bytes_received": 0, "ops": 0, "failures": 0}

    def _adopt(self) -> None:
        """Take the world's current membership (the caller holds the lock)."""
        w = self._world
        self.generation = w.generation
        self.rank = w._members.index(self)
        self.world_size = len(w._members)
        self.members = [f"local-{m.member_id}" for m in w._members]
        self._seq = 0

    def refresh(self) -> None:
        with self._world._cv:
            if self not in self._world._members:
                raise CollectiveFailed("this member left the group")
            self._adopt()

    def leave(self) -> None:
        self._world._leave(self)

    # -- the rendezvous -------------------------------------------------------------------

    def _collective(self, kind: str, part: Any, combine: Callable[[list[Any]], Any]) -> Any:
        w = self._world
        with w._cv:
            if self.generation != w.generation or self not in w._members:
                self.stats["failures"] += 1
                raise GroupChangedError(f"group {self.name} changed (generation {w.generation})")
            key = (self.generation, self._seq)
            self._seq += 1
            op = w._ops.setdefault(key, _Op(kind))
            if op.kind != kind:
                self.stats["failures"] += 1
                raise CollectiveFailed(f"members called different collectives: {op.kind}, {kind}")
            op.parts[self.rank] = part
            w._cv.notify_all()
            deadline = time.monotonic() + w.timeout
            # A complete operation delivers to every member, even if the group changes after.
            while len(op.parts) < self.world_size:
                if w.generation != self.generation:
                    self.stats["failures"] += 1
                    raise GroupChangedError(
                        f"group {self.name} changed (generation {w.generation})"
                    )
                left = deadline - time.monotonic()
                if left <= 0:
                    self.stats["failures"] += 1
                    raise CollectiveFailed(f"{kind} timed out")
                w._cv.wait(left)
            if not op.done:
                op.result = combine([op.parts[r] for r in range(self.world_size)])
                op.done = True
            op.taken += 1
            if op.taken == self.world_size:
                del w._ops[key]
            self.stats["ops"] += 1
            return op.result

    # -- the operations -------------------------------------------------------------------

    def all_reduce(
        self,
        array: np.ndarray,
        *,
        op: str = "mean",
        codec: str = "none",
        algorithm: str | None = None,
        timeout: float | None = None,
    ) -> np.ndarray:
        if op not in ("sum", "mean"):
            raise ValueError(f"unknown op {op!r}")
        x = np.ascontiguousarray(array, np.float32)
        flat = x.reshape(-1)
        part, wire = self._encode(flat, codec)
        n = self.world_size

        def combine(parts: list[np.ndarray]) -> np.ndarray:
            total = parts[0].copy()
            for p in parts[1:]:
                total += p
            return total / np.float32(n) if op == "mean" else total

        result = self._collective(f"all_reduce/{op}/{codec}/{flat.size}", part, combine)
        moved = (n - 1) * wire if 4 * flat.size < DIRECT_BELOW else round(2 * (n - 1) / n * wire)
        self.stats["bytes_sent"] += moved
        self.stats["bytes_received"] += moved
        return result.reshape(x.shape).copy()

    def _encode(self, flat: np.ndarray, codec: str) -> tuple[np.ndarray, int]:
        """This member's part as the codec lets it through, and its size on the wire."""
        if codec == "none":
            return flat.copy(), 4 * flat.size
        if codec == "fp16":
            return flat.astype(np.float16).astype(np.float32), 2 * flat.size
        if codec == "int8":
            peak = float(np.max(np.abs(flat))) if flat.size else 0.0
            scale = np.float32(peak / 127.0 if peak > 0 else 1.0)
            q = np.clip(np.rint(flat / scale), -127, 127)
            # The daemon's int8 keeps a float32 minimum and step per block of 256.
            return (q * scale).astype(np.float32), flat.size + 8 * math.ceil(flat.size / 256)
        if codec == "topk":
            acc = flat + self._residuals.get(flat.size, np.zeros_like(flat))
            k = max(1, math.ceil(TOPK_FRACTION * flat.size))
            keep = np.argpartition(np.abs(acc), -k)[-k:]
            part = np.zeros_like(flat)
            part[keep] = acc[keep]
            self._residuals[flat.size] = acc - part
            return part, 6 * k  # a u32 index and a float16 value per kept coordinate
        raise ValueError(f"unknown codec {codec!r}")

    def broadcast(self, array: np.ndarray, *, root: int = 0) -> np.ndarray:
        x = np.ascontiguousarray(array, np.float32)
        if not 0 <= root < self.world_size:
            raise ValueError(f"root {root} out of range")
        shape = x.shape

        def combine(parts: list[np.ndarray]) -> np.ndarray:
            if any(p.shape != shape for p in parts):
                raise CollectiveFailed("broadcast: the members' arrays differ in shape")
            return parts[root].copy()

        result = self._collective(f"broadcast/{root}", x.copy(), combine)
        wire = 4 * x.size
        if self.rank == root:
            self.stats["bytes_sent"] += wire * (self.world_size - 1)
        else:
            self.stats["bytes_received"] += wire
        return result.copy()

    def barrier(self) -> None:
        self._collective("barrier", None, lambda parts: None)

    def all_gather(self, value: bytes) -> list[bytes]:
        if len(value) > 64 * 1024:
            raise ValueError("all_gather values are at most 64 KiB")
        result: list[bytes] = self._collective("all_gather", bytes(value), list)
        self.stats["bytes_sent"] += len(value) * (self.world_size - 1)
        self.stats["bytes_received"] += sum(len(v) for v in result) - len(value)
        return list(result)


def run_all(
    groups: Sequence[LocalGroup], fn: Callable[[LocalGroup], T], timeout: float = 60.0
) -> list[T]:
    """``fn(group)`` on a thread per member; the results in member order. The first error
    raised by any member is raised again here."""
    results: list[Any] = [None] * len(groups)
    errors: list[BaseException | None] = [None] * len(groups)

    def body(i: int) -> None:
        try:
            results[i] = fn(groups[i])
        except BaseException as e:
            errors[i] = e

    threads = [threading.Thread(target=body, args=(i,), daemon=True) for i in range(len(groups))]
    for th in threads:
        th.start()
    deadline = time.monotonic() + timeout
    for th in threads:
        th.join(max(0.0, deadline - time.monotonic()))
    if any(th.is_alive() for th in threads):
        raise TimeoutError("a member did not finish in time")
    for e in errors:
        if e is not None:
            raise e
    return results
