"""What every trio task of the daemon is waiting on, for a person looking at a stuck daemon.

``kill -USR1 <pid>`` logs the task tree: each task's name and the chain of coroutine frames
it is suspended in, innermost last. Nothing else changes; the daemon goes on. Threads are not
shown (``py-spy dump`` shows those, but not trio's tasks: hence this).
"""

from __future__ import annotations

import logging
import signal
from types import CoroutineType, FrameType
from typing import Any

import trio

log = logging.getLogger(__name__)
MAX_TASKS = 2000  # a bounded dump, even of a daemon whose task count ran away
MAX_DEPTH = 40


def _frames(coro: Any) -> list[str]:
    out = []
    for _ in range(MAX_DEPTH):
        frame: FrameType | None = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is None:
            break
        code = frame.f_code
        where = "/".join(code.co_filename.rsplit("/", 2)[-2:])
        out.append(f"{where}:{frame.f_lineno} {code.co_name}")
        nxt = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
        if not isinstance(nxt, CoroutineType) and not hasattr(nxt, "gi_frame"):
            break
        coro = nxt
    return out


def task_tree() -> list[str]:
    """One line per task, indented by depth: name, then its frames."""
    lines: list[str] = []

    def walk(task: trio.lowlevel.Task, depth: int) -> None:
        if len(lines) >= MAX_TASKS:
            return
        lines.append("  " * depth + f"{task.name}: " + " > ".join(_frames(task.coro)))
        for nursery in task.child_nurseries:
            for child in sorted(nursery.child_tasks, key=lambda t: t.name):
                walk(child, depth + 1)

    walk(trio.lowlevel.current_root_task(), 0)
    return lines


async def dump_on_signal() -> None:
    """Log the task tree on every SIGUSR1, until cancelled."""
    with trio.open_signal_receiver(signal.SIGUSR1) as signals:
        async for _ in signals:
            lines = task_tree()
            log.warning("task dump (%d tasks):\n%s", len(lines), "\n".join(lines))


__all__ = ["dump_on_signal", "task_tree"]
