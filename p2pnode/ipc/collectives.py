"""IPC methods of the collectives service (docs/collectives.md, docs/ipc.md).

``group.join`` (waits until formed; the node stays in the group until ``group.leave`` or
until every connection that joined it closes), ``group.leave``, ``group.status``, and the operations
``group.all_reduce``, ``group.broadcast``, ``group.all_gather``, ``group.barrier``. An
operation names the group and the generation its caller knows: a group that changed since
answers ``group_changed`` (refresh with ``group.join`` and retry). Arrays are float32 and come
either inline (``data``: little-endian bytes, for small ones) or in a shared-memory file
(``shm``: its path; the result is written back into it; :mod:`p2pnode.ipc.shm`).
"""

from __future__ import annotations

from contextlib import suppress
from typing import Any

import numpy as np

from p2pnode.collectives.engine import (
    MAX_GATHER,
    Algorithm,
    Kind,
    OpSpec,
    choose_algorithm,
    part_length,
)
from p2pnode.collectives.errors import CollectiveError, GroupChanged
from p2pnode.collectives.service import CollectivesService
from p2pnode.ipc.errors import CollectiveFailed, GroupChangedError, InvalidParams, NotFound
from p2pnode.ipc.params import param
from p2pnode.ipc.server import Method, Session
from p2pnode.ipc.shm import SharedMemoryError, open_shared

MAX_ELEMENTS = 1 << 30


def _timeout(params: dict[str, Any]) -> float | None:
    t = param(params, "timeout", (int, float), None)
    if t is not None and not 0 < t <= 86400:
        raise InvalidParams("timeout must be in (0, 86400] seconds")
    return None if t is None else float(t)


def build_collective_methods(*, collectives: CollectivesService) -> dict[str, Method]:
    svc = collectives

    # The connections that joined each group: the node leaves a group when the last of them
    # closes, so a training script that crashed does not leave a member that never calls.
    holders: dict[str, set[Session]] = {}

    def hold(session: Session, name: str) -> None:
        key = ("group", name)
        if key in session.extras:
            return
        session.extras[key] = True  # a member's connection is never evicted as idle
        holders.setdefault(name, set()).add(session)

        def release() -> None:
            held = holders.get(name, set())
            held.discard(session)
            if not held:
                holders.pop(name, None)
                svc.leave_soon(name)

        session.on_close.append(release)

    def group_of(params: dict[str, Any]) -> tuple[str, int]:
        name = param(params, "name", str)
        if name not in svc.groups:
            raise NotFound(f"this node is not in group {name!r}: call group.join first")
        return name, param(params, "generation", int)

    async def run(  # type: ignore[no-untyped-def]
        name: str, generation: int, spec: OpSpec, data: Any, timeout: float | None, out=None
    ):
        try:
            return await svc.run_op(name, generation, spec, data, timeout=timeout, out=out)
        except GroupChanged as exc:
            raise GroupChangedError(str(exc)) from None
        except CollectiveError as exc:
            raise CollectiveFailed(str(exc)) from None
        except ValueError as exc:
            raise InvalidParams(str(exc)) from None

    async def join(params: dict[str, Any], session: Session, rid: int) -> Any:
        name = param(params, "name", str)
        size = param(params, "size", int, 0)
        min_size = param(params, "min_size", int, 0)
        wait = float(param(params, "wait", (int, float), 0.0))
        timeout = _timeout(params) or 60.0
        try:
            g = await svc.join(name, size=size, min_size=min_size, wait=wait, timeout=timeout)
        except ValueError as exc:
            raise InvalidParams(str(exc)) from None
        except CollectiveError as exc:
            raise CollectiveFailed(str(exc)) from None
        hold(session, name)
        return g.describe()

    async def leave(params: dict[str, Any], session: Session, rid: int) -> Any:
        name = param(params, "name", str)
        holders.pop(name, None)
        session.extras.pop(("group", name), None)
        await svc.leave(name)
        return {"left": name}

    async def status(params: dict[str, Any], session: Session, rid: int) -> Any:
        name = param(params, "name", str, None)
        out = svc.status()
        if name is not None:
            groups = [g for g in out["groups"] if g["name"] == name]
            if not groups:
                raise NotFound(f"this node is not in group {name!r}")
            out["groups"] = groups
        return out

    async def array_op(params: dict[str, Any], kind: Kind) -> Any:
        name, generation = group_of(params)
        length = param(params, "length", int)
        if not 0 <= length <= MAX_ELEMENTS:
            raise InvalidParams(f"length must be 0 to {MAX_ELEMENTS}")
        codec = param(params, "codec", str, "none")
        reduce = param(params, "op", str, "sum")
        root = param(params, "root", int, 0)
        algo = param(params, "algorithm", str, None)
        n = len(svc.groups[name].members)
        try:
            algorithm = choose_algorithm(4 * length, n, codec) if algo is None else Algorithm(algo)
            spec = OpSpec(
                kind,
                length,
                algorithm=algorithm,
                reduce=reduce,
                codec=codec,
                root=root,
                part_len=part_length(length, n),
            )
        except ValueError as exc:
            raise InvalidParams(str(exc)) from None
        if kind is Kind.BROADCAST and not 0 <= root < max(n, 1):
            raise InvalidParams(f"root must be a rank of the group (0 to {n - 1})")
        shm_path = param(params, "shm", str, None)
        data = param(params, "data", bytes, None)
        if (shm_path is None) == (data is None):
            raise InvalidParams("give exactly one of 'data' or 'shm'")
        timeout = _timeout(params)
        if data is not None:
            if len(data) != 4 * length:
                raise InvalidParams(f"data holds {len(data)} bytes, not 4 x {length}")
            op = await run(name, generation, spec, np.frombuffer(data, "<f4"), timeout)
            return {
                "generation": generation,
                "algorithm": str(algorithm),
                "data": op.result.tobytes(),
            }
        try:
            mm = open_shared(shm_path, 4 * length)  # type: ignore[arg-type]
        except (SharedMemoryError, OSError) as exc:
            raise InvalidParams(f"shm: {exc}") from None
        try:
            view = np.frombuffer(mm, "<f4", count=length)
            # The result is written over the array in place: every algorithm reads a part
            # before it writes there.
            op = await run(name, generation, spec, view, timeout, out=view)
            del view, op
        finally:
            with suppress(BufferError):  # a view still held: the mapping goes with it
                mm.close()
        return {"generation": generation, "algorithm": str(algorithm), "shm": shm_path}

    async def all_reduce(params: dict[str, Any], session: Session, rid: int) -> Any:
        return await array_op(params, Kind.ALL_REDUCE)

    async def broadcast(params: dict[str, Any], session: Session, rid: int) -> Any:
        return await array_op(params, Kind.BROADCAST)

    async def all_gather(params: dict[str, Any], session: Session, rid: int) -> Any:
        name, generation = group_of(params)
        value = param(params, "value", bytes)
        if len(value) > MAX_GATHER:
            raise InvalidParams(f"all_gather carries at most {MAX_GATHER} bytes a member")
        op = await run(name, generation, OpSpec(Kind.ALL_GATHER, 0), value, _timeout(params))
        return {"generation": generation, "values": op.gathered}

    async def barrier(params: dict[str, Any], session: Session, rid: int) -> Any:
        name, generation = group_of(params)
        await run(name, generation, OpSpec(Kind.ALL_GATHER, 0), b"", _timeout(params))
        return {"generation": generation}

    return {
        "group.join": join,
        "group.leave": leave,
        "group.status": status,
        "group.all_reduce": all_reduce,
        "group.broadcast": broadcast,
        "group.all_gather": all_gather,
        "group.barrier": barrier,
    }
