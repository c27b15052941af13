"""``subscribe`` / ``unsubscribe``: the daemon's event bus (:mod:`p2pnode.events`) forwarded
to one IPC connection.

A subscription's forwarder runs in the connection's nursery, so it ends with the connection
at the latest; ``unsubscribe`` cancels it sooner.
"""

from __future__ import annotations

from typing import Any

import trio

from p2pnode.events import TOPICS, EventBus
from p2pnode.ipc.errors import InvalidParams, NotFound
from p2pnode.ipc.params import param
from p2pnode.ipc.server import Method, Session


def build_subscription_methods(*, events: EventBus) -> dict[str, Method]:
    async def subscribe(params: dict[str, Any], session: Session, rid: int) -> Any:
        topic = param(params, "topic", str)
        if topic not in TOPICS:
            raise InvalidParams(f"unknown topic {topic!r}; topics: {', '.join(TOPICS)}")
        received = events.subscribe(topic)
        scope = trio.CancelScope()
        session.subscriptions[rid] = scope

        async def forward() -> None:
            with scope:
                try:
                    async for event in received:
                        await session.send({"id": rid, "event": event})
                finally:
                    events.unsubscribe(topic, received)
                    session.subscriptions.pop(rid, None)

        session.nursery.start_soon(forward)
        return {"subscription": rid, "topic": topic}

    async def unsubscribe(params: dict[str, Any], session: Session, rid: int) -> Any:
        sub = param(params, "subscription", int)
        scope = session.subscriptions.get(sub)
        if scope is None:
            raise NotFound(f"no subscription {sub} on this connection")
        scope.cancel()
        return {"subscription": sub}

    return {"subscribe": subscribe, "unsubscribe": unsubscribe}
