"""The task dump names every trio task and the line it waits on."""

from __future__ import annotations

import pytest
import trio

from p2pnode.taskdump import task_tree

pytestmark = pytest.mark.timeout(30)


async def _parked(ev: trio.Event) -> None:
    await ev.wait()


async def test_the_tree_shows_a_parked_task_and_where_it_waits() -> None:
    ev = trio.Event()
    async with trio.open_nursery() as n:
        n.start_soon(_parked, ev, name="parked-one")
        await trio.lowlevel.checkpoint()
        lines = task_tree()
        ev.set()
    mine = [ln for ln in lines if "parked-one" in ln]
    assert len(mine) == 1 and "_parked" in mine[0] and "test_taskdump.py" in mine[0], lines
    assert mine[0].startswith("  ")  # a child: indented under its parent
