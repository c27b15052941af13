"""In-daemon event bus feeding IPC subscriptions.

Publishing never blocks: each subscriber has a bounded queue and an event that does not fit is
dropped for that subscriber alone (counted in ``dropped``), so one slow client cannot stall the
daemon or other clients.
"""

from __future__ import annotations

from typing import Any

import trio

TOPICS = ("peers", "records", "members", "commits", "jobs", "rounds", "collectives", "trust")
QUEUE_SIZE = 256


class EventBus:
    def __init__(self) -> None:
        self._subscribers: dict[str, set[trio.MemorySendChannel[dict[str, Any]]]] = {
            t: set() for t in TOPICS
        }
        self.dropped = 0

    def subscribe(self, topic: str) -> trio.MemoryReceiveChannel[dict[str, Any]]:
        if topic not in self._subscribers:
            raise KeyError(topic)
        send, receive = trio.open_memory_channel[dict[str, Any]](QUEUE_SIZE)
        self._subscribers[topic].add(send)
        return receive

    def unsubscribe(self, topic: str, receive: trio.MemoryReceiveChannel[Any]) -> None:
        receive.close()  # the next publish finds the send side broken and drops it

    def publish(self, topic: str, event: dict[str, Any]) -> None:
        for send in list(self._subscribers[topic]):
            try:
                send.send_nowait({"topic": topic, **event})
            except trio.WouldBlock:
                self.dropped += 1
            except trio.BrokenResourceError:
                self._subscribers[topic].discard(send)
