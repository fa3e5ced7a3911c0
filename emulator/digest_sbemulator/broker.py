"""The namespace: queues by (case-insensitive) name, and the mapping from AMQP link addresses to entities."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlparse

from digest_sbemulator.config import EmulatorConfig
from digest_sbemulator.queue import DLQ_SUFFIX, Queue

MANAGEMENT_SUFFIX = "/$management"
CBS = "$cbs"


class UnknownEntity(LookupError):
    """No such queue (or an entity kind the emulator does not serve, such as topics)."""


@dataclass(frozen=True)
class Address:
    """What a link address names."""

    queue: Queue | None
    dead_letter: bool = False
    management: bool = False
    cbs: bool = False


def entity_path(address: str) -> str:
    """`amqps://host:port/orders/$DeadLetterQueue` → `orders/$DeadLetterQueue` (the SDK keeps `amqps` even
    without TLS)."""
    if "://" in address:
        address = urlparse(address).path
    return address.strip("/")


class Namespace:
    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.queues = {name.lower(): Queue(name, props) for name, props in config.queues.items()}
        self._topics = {name.lower() for name in config.topics}

    def queue(self, name: str) -> Queue:
        queue = self.queues.get(name.lower())
        if queue is None:
            kind = "topic" if name.lower().split("/")[0] in self._topics else "queue"
            if kind == "topic":
                raise UnknownEntity(f"topics are not supported by this emulator: {name!r}")
            raise UnknownEntity(f"the messaging entity {name!r} could not be found")
        return queue

    def resolve(self, address: str) -> Address:
        path = entity_path(address)
        if path.lower() == CBS:
            return Address(None, cbs=True)
        management = path.lower().endswith(MANAGEMENT_SUFFIX.lower())
        if management:
            path = path[: -len(MANAGEMENT_SUFFIX)]
        dead_letter = path.lower().endswith(DLQ_SUFFIX.lower())
        if dead_letter:
            path = path[: -len(DLQ_SUFFIX)]
        return Address(self.queue(path), dead_letter=dead_letter, management=management)

    def next_deadline(self) -> float | None:
        deadlines = [d for q in self.queues.values() if (d := q.next_deadline()) is not None]
        return min(deadlines) if deadlines else None

    def soonest(self) -> float:
        """A lower bound of the next deadline of any queue (see `Queue.soonest`)."""
        return min((q.soonest for q in self.queues.values()), default=float("inf"))

    def tick(self, now: float) -> None:
        for queue in self.queues.values():
            queue.tick(now)
