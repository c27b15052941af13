"""A stand-in for the daemon's event bus (``p2pnode.events.EventBus``) as the services use
it, ``publish(topic, event)``: it keeps every event with the (virtual) time it was published,
so tests can assert when something happened and wait for it without polling."""

from __future__ import annotations

from typing import Any

import trio

__all__ = ["EventRecorder"]


class EventRecorder:
    def __init__(self) -> None:
        #: (virtual time, topic, event), in publication order.
        self.events: list[tuple[float, str, dict[str, Any]]] = []
        self._wake = trio.Event()

    def publish(self, topic: str, event: dict[str, Any]) -> None:
        self.events.append((trio.current_time(), topic, event))
        self._wake.set()
        self._wake = trio.Event()

    def find(self, **match: Any) -> list[tuple[float, dict[str, Any]]]:
        """The events whose fields include ``match``, with their times."""
        return [
            (at, e)
            for at, _topic, e in self.events
            if all(k in e and e[k] == v for k, v in match.items())
        ]

    def first(self, **match: Any) -> float | None:
        """When the first event matching ``match`` was published, or None."""
        found = self.find(**match)
        return found[0][0] if found else None

    async def wait_for(self, **match: Any) -> float:
        """Wait until an event matching ``match`` is published; its time."""
        while (at := self.first(**match)) is None:
            await self._wake.wait()
        return at
