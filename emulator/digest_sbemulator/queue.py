"""The broker core: one queue with its dead-letter sub-queue, pure and clock-driven (no I/O, no threads).

Messages are kept as opaque encoded sections plus the few facts the broker needs. Every structure is indexed:
available messages by sequence number (a heap), locks by token, lock expiries, scheduled times and TTL
expiries by deadline (heaps with lazy deletion), so no operation scans the queue.

Delivery count convention (AMQP `header.delivery-count`, exposed raw by the Python SDK as `delivery_count`):
the number of *previous failed* deliveries, so 0 on the first delivery. A message whose failed deliveries reach
MaxDeliveryCount (abandon or lock expiry) moves to the dead-letter queue with reason `MaxDeliveryCountExceeded`.
A message released by a closing receiver (never handed to the application) does not count as a failed delivery.
"""

from __future__ import annotations

import bisect
import enum
import heapq
import random
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from digest_sbemulator.config import QueueProperties

_random_bits = random.Random().getrandbits  # lock tokens need uniqueness, not cryptographic strength
MAX_DELIVERY_COUNT_EXCEEDED = "MaxDeliveryCountExceeded"
TTL_EXPIRED = "TTLExpiredException"
DLQ_SUFFIX = "/$DeadLetterQueue"


class State(enum.IntEnum):
    """`x-opt-message-state`."""

    ACTIVE = 0
    DEFERRED = 1
    SCHEDULED = 2


class LockLost(Exception):
    """The lock token is unknown, expired or was already settled."""


class NotDeferred(Exception):
    """A sequence number names no deferred message."""


@dataclass(slots=True)
class Message:
    """A stored message: the client's encoded bare message plus broker-owned facts."""

    body: bytes
    """Encoded sections after the header and message annotations (properties, application properties, body,
    footer), exactly as the client sent them."""
    message_id: Any = None
    annotations: dict[str, Any] = field(default_factory=dict)
    """Message annotations the client set (e.g. x-opt-partition-key); server annotations are added on delivery."""
    time_to_live: float | None = None
    """Seconds, from the client's header ttl; None means the queue's default."""
    application_properties: dict[str, Any] = field(default_factory=dict)
    """Only the entries the broker sets itself (DeadLetterReason, DeadLetterErrorDescription)."""

    # broker-owned
    sequence_number: int = 0
    enqueued_time: float = 0.0
    expires_at: float | None = None
    delivery_count: int = 0
    state: State = State.ACTIVE
    scheduled_time: float | None = None
    lock_token: int | None = None
    """The lock's key (see `lock_tag`), while locked."""
    locked_until: float | None = None
    encoded: tuple[bytes, bytes, int, bytes] | None = None
    """The server's cache of what every delivery of this message repeats; cleared when that changes."""


@dataclass(frozen=True)
class Counts:
    active: int
    dead_letter: int
    scheduled: int
    deferred: int

    @property
    def total(self) -> int:
        return self.active + self.dead_letter + self.scheduled + self.deferred


def lock_tag(key: int) -> bytes:
    """The delivery tag of lock `key`. Locks are plain 128-bit integers (hashing and comparing UUID objects runs
    Python code); the SDK reads a delivery's lock token as `uuid.UUID(bytes_le=tag)`, so a key is its tag's
    big-endian integer."""
    return key.to_bytes(16, "big")


def lock_token(key: int) -> uuid.UUID:
    """Lock `key` as the SDK shows it (and sends it back in management requests)."""
    return uuid.UUID(bytes_le=lock_tag(key))


def lock_key(token: uuid.UUID) -> int:
    return int.from_bytes(token.bytes_le, "big")


def _lost(key: int, path: str) -> LockLost:
    return LockLost(f"the lock {lock_token(key)} on {path} is lost or expired")


class SubQueue:
    """The message store of one entity (a queue, or its dead-letter queue)."""

    def __init__(self, path: str, lock_duration: float) -> None:
        self.path = path
        self.lock_duration = lock_duration
        self.messages: OrderedDict[int, Message] = OrderedDict()  # by sequence number
        self._order: list[int] = []
        """Sequence numbers in ascending order, for peeking: a dead-letter queue fills out of order (messages keep
        their sequence numbers and fail at different times). Removed ones are skipped, and dropped by `_compact`."""
        self._available: list[int] = []  # heap of sequence numbers that may be delivered
        self._available_set: set[int] = set()
        self.locks: dict[int, int] = {}  # lock key → sequence number
        self._lock_expiry: list[tuple[float, int]] = []  # (deadline, lock key)
        self.deferred = 0
        self.scheduled = 0
        self.soonest = float("inf")
        """A lower bound of the next lock expiry (exact after `Queue.tick`), so callers need not look."""

    # --- availability ---
    def make_available(self, message: Message) -> None:
        seq = message.sequence_number
        if seq not in self._available_set:
            self._available_set.add(seq)
            heapq.heappush(self._available, seq)

    def _pop_available(self) -> Message | None:
        while self._available:
            seq = heapq.heappop(self._available)
            self._available_set.discard(seq)
            message = self.messages.get(seq)
            if message is not None and message.state is State.ACTIVE and message.lock_token is None:
                return message
        return None

    @property
    def available_count(self) -> int:
        return len(self._available_set)

    def add(self, message: Message) -> None:
        seq = message.sequence_number
        self.messages[seq] = message
        order = self._order
        if not order or seq > order[-1]:
            order.append(seq)  # the main queue: always in order
        else:
            bisect.insort(order, seq)
        if len(order) > 2 * len(self.messages) + 1024:  # settled messages leave stale entries
            self._compact()
        if message.state is State.SCHEDULED:
            self.scheduled += 1
        elif message.state is State.DEFERRED:
            self.deferred += 1
        else:
            self.make_available(message)

    def remove(self, message: Message) -> None:
        self.messages.pop(message.sequence_number, None)
        self._available_set.discard(message.sequence_number)  # the heap entry is skipped lazily
        if message.lock_token is not None:
            self.locks.pop(message.lock_token, None)
            message.lock_token = message.locked_until = None
        if message.state is State.SCHEDULED:
            self.scheduled -= 1
        elif message.state is State.DEFERRED:
            self.deferred -= 1

    # --- locks ---
    def lock(self, message: Message, now: float) -> int:
        return self._lock_all([message], now)[0][1]

    def _lock_all(self, messages: list[Message], now: float) -> list[tuple[Message, int]]:
        """Lock each message with a new key; every delivery of a peek-lock receiver comes through here."""
        until, locks, expiry = now + self.lock_duration, self.locks, self._lock_expiry
        taken = []
        for message in messages:
            key = _random_bits(128)
            message.lock_token = key
            message.locked_until = until
            locks[key] = message.sequence_number
            heapq.heappush(expiry, (until, key))
            taken.append((message, key))
        if until < self.soonest:
            self.soonest = until
        if len(expiry) > 2 * len(locks) + 1024:
            self._compact_lock_expiry()
        return taken

    def _compact_lock_expiry(self) -> None:
        """Settled locks leave stale heap entries until their deadline; rebuilt (by `lock`) when they dominate, so
        memory follows the locks held, not the throughput."""
        live = []
        for key, seq in self.locks.items():
            message = self.messages.get(seq)
            if message is not None and message.lock_token == key and message.locked_until is not None:
                live.append((message.locked_until, key))
        heapq.heapify(live)
        self._lock_expiry = live

    def locked(self, token: int, now: float) -> Message:
        seq = self.locks.get(token)
        message = self.messages.get(seq) if seq is not None else None
        if message is None or message.lock_token != token or message.locked_until is None \
                or message.locked_until <= now:
            raise _lost(token, self.path)
        return message

    def unlock(self, message: Message) -> None:
        if message.lock_token is not None:
            self.locks.pop(message.lock_token, None)
        message.lock_token = message.locked_until = None

    def expired_locks(self, now: float) -> Iterator[Message]:
        while self._lock_expiry and self._lock_expiry[0][0] <= now:
            _, key = heapq.heappop(self._lock_expiry)
            seq = self.locks.get(key)
            message = self.messages.get(seq) if seq is not None else None
            if message is not None and message.lock_token == key and message.locked_until is not None \
                    and message.locked_until <= now:
                yield message

    def next_lock_expiry(self) -> float | None:
        while self._lock_expiry:
            deadline, key = self._lock_expiry[0]
            seq = self.locks.get(key)
            message = self.messages.get(seq) if seq is not None else None
            if message is not None and message.lock_token == key and message.locked_until == deadline:
                return deadline
            heapq.heappop(self._lock_expiry)  # stale: settled, renewed or released
        return None

    def renew(self, token: int, now: float) -> float:
        message = self.locked(token, now)
        message.locked_until = now + self.lock_duration
        heapq.heappush(self._lock_expiry, (message.locked_until, token))
        self.soonest = min(self.soonest, message.locked_until)
        return message.locked_until

    def hand_out(self, message: Message, now: float, *, lock: bool) -> tuple[Message, int | None]:
        """Deliver: PEEK_LOCK locks the message, RECEIVE_AND_DELETE removes it at once."""
        if lock:
            return message, self.lock(message, now)
        self.remove(message)
        return message, None

    def take(self, now: float, count: int, *, lock: bool) -> list[tuple[Message, int | None]]:
        pop = self._pop_available
        messages: list[Message] = []
        while len(messages) < count and (message := pop()) is not None:
            messages.append(message)
        if lock:
            return [*self._lock_all(messages, now)]
        for message in messages:
            self.remove(message)
        return [(message, None) for message in messages]

    def complete(self, token: int, now: float) -> Message:
        """Settle a locked message for good (the hot path of every completion: `locked` + `remove` inlined)."""
        seq = self.locks.get(token)
        message = self.messages.get(seq) if seq is not None else None
        if seq is None or message is None or message.lock_token != token or message.locked_until is None \
                or message.locked_until <= now:
            raise _lost(token, self.path)
        del self.locks[token]
        del self.messages[seq]
        self._available_set.discard(seq)
        message.lock_token = message.locked_until = None
        if message.state is State.DEFERRED:
            self.deferred -= 1
        return message

    def _compact(self) -> None:
        messages = self.messages
        self._order = sorted(messages) if len(messages) < len(self._order) // 8 else \
            [seq for i, seq in enumerate(self._order) if seq in messages and (i == 0 or self._order[i - 1] != seq)]

    def peek(self, from_sequence: int, count: int) -> list[Message]:
        """Up to `count` messages from `from_sequence` on, in sequence order (a bisection, then a short scan)."""
        result: list[Message] = []
        messages, order = self.messages, self._order
        last, stale = None, 0
        for i in range(bisect.bisect_left(order, from_sequence), len(order)):
            seq = order[i]
            message = messages.get(seq)
            if message is None or seq == last:  # settled since, or added again after leaving
                stale += 1
                continue
            result.append(message)
            last = seq
            if len(result) == count:
                break
        if stale > 1024 and stale > len(messages):  # a drained queue: do not scan its history again
            self._compact()
        return result


class Queue:
    """A queue: active messages, scheduled and deferred ones, TTL, duplicate detection and its dead-letter queue."""

    def __init__(self, name: str, properties: QueueProperties) -> None:
        self.name = name
        self.properties = properties
        lock = properties.lock_duration.total_seconds()
        self.main = SubQueue(name, lock)
        self.dead_letter = SubQueue(name + DLQ_SUFFIX, lock)
        self._next_sequence = 1
        self._scheduled: list[tuple[float, int]] = []
        self._expiry: list[tuple[float, int]] = []
        self._seen_ids: OrderedDict[Any, float] = OrderedDict()
        self._soonest = float("inf")  # lower bound of the next schedule or TTL deadline

    # --- sending ---
    def _stamp(self, message: Message, now: float) -> None:
        message.sequence_number = self._next_sequence
        self._next_sequence += 1
        message.enqueued_time = now
        ttl = self.properties.default_message_time_to_live.total_seconds()
        if message.time_to_live is not None:
            ttl = min(ttl, message.time_to_live)  # the service caps a TTL above the entity default
        message.expires_at = now + ttl
        heapq.heappush(self._expiry, (message.expires_at, message.sequence_number))
        self._soonest = min(self._soonest, message.expires_at)
        if len(self._expiry) > 2 * len(self.main.messages) + 1024:  # completed messages leave stale entries
            self._expiry = [(m.expires_at, seq) for seq, m in self.main.messages.items() if m.expires_at is not None]
            heapq.heapify(self._expiry)

    def _duplicate(self, message: Message, now: float) -> bool:
        if not self.properties.requires_duplicate_detection or message.message_id is None:
            return False
        window = self.properties.duplicate_detection_history_time_window.total_seconds()
        while self._seen_ids:
            seen_at = next(iter(self._seen_ids.values()))
            if seen_at + window > now:
                break
            self._seen_ids.popitem(last=False)
        if message.message_id in self._seen_ids:
            return True
        self._seen_ids[message.message_id] = now
        return False

    def send(self, message: Message, now: float) -> int | None:
        """Enqueue; returns the sequence number, or None when duplicate detection dropped the message."""
        if self._duplicate(message, now):
            return None
        self._stamp(message, now)
        self.main.add(message)
        return message.sequence_number

    def schedule(self, message: Message, enqueue_at: float, now: float) -> int:
        """Enqueue at `enqueue_at`; returns the sequence number. Duplicate detection applies as to any send: a
        duplicate is accepted and dropped (it still gets a sequence number, which names nothing)."""
        if self._duplicate(message, now):
            self._next_sequence += 1
            return self._next_sequence - 1
        self._stamp(message, now)
        if enqueue_at <= now:
            self.main.add(message)
            return message.sequence_number
        message.state = State.SCHEDULED
        message.scheduled_time = enqueue_at
        if message.expires_at is not None:  # the TTL runs from the scheduled enqueue time
            message.expires_at += enqueue_at - now
            heapq.heappush(self._expiry, (message.expires_at, message.sequence_number))
            self._soonest = min(self._soonest, message.expires_at)
        message.enqueued_time = enqueue_at
        self.main.add(message)
        heapq.heappush(self._scheduled, (enqueue_at, message.sequence_number))
        self._soonest = min(self._soonest, enqueue_at)
        return message.sequence_number

    def cancel_scheduled(self, sequence_numbers: list[int]) -> None:
        for seq in sequence_numbers:
            message = self.main.messages.get(seq)
            if message is not None and message.state is State.SCHEDULED:
                self.main.remove(message)

    # --- receiving ---
    def sub(self, dead_letter: bool) -> SubQueue:
        return self.dead_letter if dead_letter else self.main

    def receive(self, now: float, count: int, *, lock: bool, dead_letter: bool = False) \
            -> list[tuple[Message, int | None]]:
        self.tick(now)
        return self.sub(dead_letter).take(now, count, lock=lock)

    def receive_deferred(self, sequence_numbers: list[int], now: float, *, lock: bool,
                         dead_letter: bool = False) -> list[tuple[Message, int | None]]:
        sub = self.sub(dead_letter)
        messages = []
        for seq in sequence_numbers:
            message = sub.messages.get(seq)
            if message is None or message.state is not State.DEFERRED:
                raise NotDeferred(f"no deferred message with sequence number {seq} in {sub.path}")
            messages.append(message)
        return [sub.hand_out(message, now, lock=lock) for message in messages]

    def peek(self, from_sequence: int, count: int, *, dead_letter: bool = False, now: float | None = None) \
            -> list[Message]:
        if now is not None:
            self.tick(now)
        return self.sub(dead_letter).peek(from_sequence, count)

    # --- settling ---
    def complete(self, token: int, now: float, *, dead_letter: bool = False) -> Message:
        return (self.dead_letter if dead_letter else self.main).complete(token, now)

    def abandon(self, token: int, now: float, *, dead_letter: bool = False) -> Message:
        sub = self.sub(dead_letter)
        message = sub.locked(token, now)
        self._failed_delivery(sub, message, now)
        return message

    def release(self, token: int, now: float, *, dead_letter: bool = False) -> None:
        """Unlock without counting a failed delivery (the receiver never handed it to the application)."""
        sub = self.sub(dead_letter)
        try:
            message = sub.locked(token, now)
        except LockLost:
            return
        sub.unlock(message)
        if message.state is State.ACTIVE:
            sub.make_available(message)

    def defer(self, token: int, now: float, *, dead_letter: bool = False) -> Message:
        sub = self.sub(dead_letter)
        message = sub.locked(token, now)
        sub.unlock(message)
        if message.state is not State.DEFERRED:
            message.state = State.DEFERRED
            sub.deferred += 1
        return message

    def dead_letter_message(self, token: int, now: float, reason: str | None, description: str | None, *,
                            dead_letter: bool = False) -> Message:
        sub = self.sub(dead_letter)
        message = sub.locked(token, now)
        if dead_letter:  # a dead-lettered message cannot be dead-lettered again: just unlock it
            sub.unlock(message)
            sub.make_available(message)
            return message
        self._move_to_dead_letter(message, reason, description)
        return message

    def renew_lock(self, token: int, now: float, *, dead_letter: bool = False) -> float:
        return self.sub(dead_letter).renew(token, now)

    def _failed_delivery(self, sub: SubQueue, message: Message, now: float) -> None:
        sub.unlock(message)
        message.delivery_count += 1
        if sub is self.main and message.delivery_count >= self.properties.max_delivery_count:
            self._move_to_dead_letter(
                message, MAX_DELIVERY_COUNT_EXCEEDED,
                f"Message could not be consumed after {self.properties.max_delivery_count} delivery attempts.",
            )
        elif message.state is State.ACTIVE:
            sub.make_available(message)

    def _move_to_dead_letter(self, message: Message, reason: str | None, description: str | None) -> None:
        message.encoded = None  # its application properties change
        self.main.remove(message)
        message.state = State.ACTIVE
        message.scheduled_time = None
        message.expires_at = None  # a dead-lettered message no longer expires
        if reason is not None:
            message.application_properties["DeadLetterReason"] = reason
        if description is not None:
            message.application_properties["DeadLetterErrorDescription"] = description
        self.dead_letter.add(message)

    # --- time ---
    def tick(self, now: float) -> None:
        """Apply everything due by `now`: expired locks, scheduled messages, TTL expiry."""
        if now < self.soonest:
            return  # nothing is due yet
        for sub in (self.main, self.dead_letter):
            for message in list(sub.expired_locks(now)):
                self._failed_delivery(sub, message, now)
        while self._scheduled and self._scheduled[0][0] <= now:
            _, seq = heapq.heappop(self._scheduled)
            due = self.main.messages.get(seq)
            if due is not None and due.state is State.SCHEDULED:
                due.state = State.ACTIVE
                due.scheduled_time = None
                self.main.scheduled -= 1
                self.main.make_available(due)
        while self._expiry and self._expiry[0][0] <= now:
            _, seq = heapq.heappop(self._expiry)
            expired = self.main.messages.get(seq)
            if expired is None or expired.expires_at is None or expired.expires_at > now:
                continue  # settled, dead-lettered, or an outdated entry
            if expired.state is State.DEFERRED:
                continue  # deferred messages stay until received by sequence number
            if expired.lock_token is not None:  # expires once its lock is released or lost
                heapq.heappush(self._expiry, (max(expired.locked_until or now, now + 0.001), seq))
                continue
            if self.properties.dead_lettering_on_message_expiration:
                self._move_to_dead_letter(expired, TTL_EXPIRED, "The message expired and was dead lettered.")
            else:
                self.main.remove(expired)
        self._soonest = min(self._scheduled[0][0] if self._scheduled else float("inf"),
                            self._expiry[0][0] if self._expiry else float("inf"))
        for sub in (self.main, self.dead_letter):
            sub.soonest = sub.next_lock_expiry() or float("inf")

    def expire_locks(self, now: float) -> int:
        """Fault injection: every lock held on this queue (and its DLQ) expires now; returns how many."""
        count = 0
        for sub in (self.main, self.dead_letter):
            for seq in list(sub.locks.values()):
                message = sub.messages.get(seq)
                if message is not None and message.lock_token is not None:
                    message.locked_until = now
                    heapq.heappush(sub._lock_expiry, (now, message.lock_token))
                    sub.soonest = now
                    count += 1
        self.tick(now)
        return count

    @property
    def soonest(self) -> float:
        """A lower bound of the next deadline, cheap to read: nothing is due before it."""
        return min(self._soonest, self.main.soonest, self.dead_letter.soonest)

    def next_deadline(self) -> float | None:
        """When `tick` next has something to do (for the server's timer)."""
        candidates = [d for d in (self.main.next_lock_expiry(), self.dead_letter.next_lock_expiry()) if d]
        if self._scheduled:
            candidates.append(self._scheduled[0][0])
        if self._expiry:
            candidates.append(self._expiry[0][0])
        return min(candidates) if candidates else None

    def counts(self) -> Counts:
        main = self.main
        return Counts(
            active=len(main.messages) - main.scheduled - main.deferred,
            dead_letter=len(self.dead_letter.messages),
            scheduled=main.scheduled,
            deferred=main.deferred,
        )
