"""The only Service Bus I/O of the toolkit (azure-servicebus, sync): peek, lock-scan-and-act, send, counts.

Order per message is always: receive under lock → send the copy → only then complete the original. A message whose
send failed, whose copy does not fit, or that is not selected is never completed; its lock is released at the end
(abandon). With the sync SDK nothing here is shared between threads.
"""

from __future__ import annotations

import datetime
import json
import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

from azure.servicebus import (
    ServiceBusClient,
    ServiceBusMessageBatch,
    ServiceBusReceivedMessage,
    ServiceBusReceiver,
    ServiceBusSender,
    ServiceBusSubQueue,
)
from azure.servicebus.amqp import AmqpAnnotatedMessage, AmqpMessageBodyType
from azure.servicebus.exceptions import (
    MessageLockLostError,
    MessageSizeExceededError,
    ServiceBusConnectionError,
    ServiceBusError,
)

from digest_worker.dlq.batching import pack
from digest_worker.dlq.copy import Copy
from digest_worker.dlq.message import PROPERTY_FIELDS, BodyType, DlqMessage, normalise_properties, text
from digest_worker.dlq.policy import RateLimiter
from digest_worker.dlq.report import Outcome

log = logging.getLogger("digest.dlq")

PEEK_PAGE = 250  # the service returns at most 250 per peek
RECEIVE_PAGE = 100
LOCK_SAFETY_SECONDS = 3.0
DEFAULT_BATCH_BYTES = 256 * 1024  # Standard tier; Premium allows 1 MB batches
_BODY_TYPES: dict[AmqpMessageBodyType, BodyType] = {
    AmqpMessageBodyType.DATA: "data", AmqpMessageBodyType.SEQUENCE: "sequence", AmqpMessageBodyType.VALUE: "value",
}


@dataclass(frozen=True)
class Endpoint:
    """How to reach a namespace: a connection string (emulator, SAS) or an FQDN with DefaultAzureCredential."""

    connection_string: str | None = None
    namespace: str | None = None
    ca_file: str | None = None
    """A CA bundle the management endpoint's certificate chains to (the local emulator's `ca.pem`)."""

    def client(self, **kwargs: Any) -> ServiceBusClient:
        if self.connection_string:
            return ServiceBusClient.from_connection_string(self.connection_string, **kwargs)
        if not self.namespace:
            raise ValueError("give --namespace or --connection-string")
        from azure.identity import DefaultAzureCredential

        return ServiceBusClient(self.namespace, DefaultAzureCredential(), **kwargs)

    def admin(self) -> Any:
        """A ServiceBusAdministrationClient, or None for the local emulator without its CA file (its management
        endpoint is HTTPS with a certificate from its own CA: `digestctl emulator` prints the path)."""
        from azure.servicebus.management import ServiceBusAdministrationClient

        verify: dict[str, Any] = {"connection_verify": self.ca_file} if self.ca_file else {}
        if self.connection_string:
            if "usedevelopmentemulator=true" in self.connection_string.lower().replace(" ", "") and not self.ca_file:
                return None
            return ServiceBusAdministrationClient.from_connection_string(self.connection_string, **verify)
        from azure.identity import DefaultAzureCredential

        return ServiceBusAdministrationClient(str(self.namespace), DefaultAzureCredential(), **verify)


# ---- conversion ----------------------------------------------------------------------------------------------

def _time(value: Any) -> datetime.datetime | None:
    if isinstance(value, datetime.datetime):
        return value if value.tzinfo else value.replace(tzinfo=datetime.UTC)
    if isinstance(value, int) and not isinstance(value, bool):
        return datetime.datetime.fromtimestamp(value / 1000, datetime.UTC)
    return None


def from_received(message: ServiceBusReceivedMessage) -> DlqMessage:
    """Normalise a received or peeked message once (the body generator is consumed exactly once here)."""
    raw = message.raw_amqp_message
    body_type = _BODY_TYPES[raw.body_type]
    body: Any
    if body_type == "data":
        body = [bytes(part) for part in raw.body]
    elif body_type == "sequence":
        body = [list(section) for section in raw.body]
    else:
        body = raw.body
    props_raw = raw.properties
    properties: dict[str, Any] = {}
    if props_raw is not None:
        for name in (*PROPERTY_FIELDS, "creation_time", "absolute_expiry_time"):
            value = getattr(props_raw, name, None)
            if value is not None:
                properties[name] = value if name in ("user_id",) else text(value)
    header: dict[str, Any] = {}
    if raw.header is not None:
        for name in ("time_to_live", "durable", "priority"):
            value = getattr(raw.header, name, None)
            if value is not None:
                header[name] = value
    annotations = {str(text(k)): text(v) for k, v in (raw.annotations or {}).items()}
    app = normalise_properties(raw.application_properties)
    dm = DlqMessage(
        sequence_number=int(message.sequence_number or 0),
        message_id=None if message.message_id is None else str(text(message.message_id)),
        enqueued_time=_time(message.enqueued_time_utc),
        delivery_count=message.delivery_count,
        body_type=body_type, body=body, properties=properties, application_properties=app,
        annotations=annotations, header=header,
    )
    return DlqMessage(**{**dm.__dict__, "size": estimate_size(dm)})


def estimate_size(message: DlqMessage) -> int:
    props = json.dumps({k: str(v) for k, v in {**message.properties, **message.application_properties}.items()})
    return len(message.body_bytes()) + len(props) + 64


def to_amqp(copy: Copy) -> AmqpAnnotatedMessage:
    """The outgoing message for a `Copy`."""
    body_kw: dict[str, Any]
    if copy.body_type == "data":
        body_kw = {"data_body": list(copy.body) or [b""]}
    elif copy.body_type == "sequence":
        body_kw = {"sequence_body": list(copy.body)}
    else:
        body_kw = {"value_body": copy.body}
    annotations: dict[str, Any] = dict(copy.annotations)
    if copy.scheduled_enqueue_time is not None:
        annotations["x-opt-scheduled-enqueue-time"] = copy.scheduled_enqueue_time
    header: dict[str, Any] = {"durable": True}
    if copy.time_to_live is not None:
        header["time_to_live"] = int(copy.time_to_live * 1000)
    return AmqpAnnotatedMessage(
        header=header, properties=dict(copy.properties), application_properties=dict(copy.application_properties),
        annotations=annotations or None, **body_kw,
    )


# ---- reading -------------------------------------------------------------------------------------------------

def dead_letter_receiver(client: ServiceBusClient, queue: str, **kwargs: Any) -> ServiceBusReceiver:
    return client.get_queue_receiver(queue, sub_queue=ServiceBusSubQueue.DEAD_LETTER, prefetch_count=0, **kwargs)


def peek_all(client: ServiceBusClient, queue: str, *, dead_letter: bool = True, from_sequence: int = 1,
             on_page: Callable[[int], None] | None = None) -> Iterator[DlqMessage]:
    """Every message, by sequence number, past the 250-per-peek cap; no lock, delivery counts untouched."""
    receiver = dead_letter_receiver(client, queue) if dead_letter else client.get_queue_receiver(queue)
    with receiver:
        next_seq = from_sequence
        while True:
            page = receiver.peek_messages(max_message_count=PEEK_PAGE, sequence_number=next_seq)
            if not page:
                return
            if on_page is not None:
                on_page(len(page))
            for message in page:
                yield from_received(message)
            next_seq = int(page[-1].sequence_number or next_seq) + 1


@dataclass(frozen=True)
class QueueFacts:
    requires_duplicate_detection: bool | None = None
    lock_duration: float | None = None
    max_delivery_count: int | None = None
    runtime: dict[str, Any] | None = None
    source: Literal["management", "unavailable"] = "unavailable"


def queue_facts(endpoint: Endpoint, queue: str, *, runtime: bool = False) -> QueueFacts:
    """Entity settings (and runtime counts) from the management API, when the endpoint offers one."""
    admin = endpoint.admin()
    if admin is None:
        return QueueFacts()
    with admin:
        props = admin.get_queue(queue)
        counts = None
        if runtime:
            rt = admin.get_queue_runtime_properties(queue)
            counts = {
                "activeMessageCount": rt.active_message_count,
                "deadLetterMessageCount": rt.dead_letter_message_count,
                "scheduledMessageCount": rt.scheduled_message_count,
                "transferMessageCount": rt.transfer_message_count,
                "transferDeadLetterMessageCount": rt.transfer_dead_letter_message_count,
                "totalMessageCount": rt.total_message_count,
                "sizeInBytes": rt.size_in_bytes,
            }
        lock = props.lock_duration
        return QueueFacts(
            requires_duplicate_detection=bool(props.requires_duplicate_detection),
            lock_duration=lock.total_seconds() if isinstance(lock, datetime.timedelta) else None,
            max_delivery_count=props.max_delivery_count, runtime=counts, source="management",
        )


def peek_counts(client: ServiceBusClient, queue: str) -> dict[str, Any]:
    """Runtime counts by peeking, where the management API is not reachable: every message is read once."""
    active = scheduled = deferred = 0
    for message in peek_all(client, queue, dead_letter=False):
        state = message.annotations.get("x-opt-message-state")
        if state == 2:
            scheduled += 1
        elif state == 1:
            deferred += 1
        else:
            active += 1
    dead = sum(1 for _ in peek_all(client, queue))
    return {"activeMessageCount": active, "deadLetterMessageCount": dead, "scheduledMessageCount": scheduled,
            "deferredMessageCount": deferred, "source": "peek"}


# ---- acting --------------------------------------------------------------------------------------------------

Chooser = Callable[[DlqMessage], "Act | None"]
"""Decides per received message: an `Act`, or None to leave it (its lock is held, then released)."""


@dataclass(frozen=True)
class Act:
    kind: Literal["requeue", "park", "purge"]
    target: str | None = None
    """Queue the copy goes to (requeue, park); None for purge."""
    copy: Copy | None = None
    fallback: Act | None = None
    """What to do when the copy is too large for a batch (e.g. park instead of requeue)."""


@dataclass
class _Held:
    message: ServiceBusReceivedMessage


@dataclass
class ActOptions:
    max_batch_bytes: int | None = None
    """Byte limit of one send batch; None = what the link allows (256 KB Standard, 1 MB Premium)."""
    receive_page: int = RECEIVE_PAGE
    max_wait_time: float = 2.0
    limiter: RateLimiter | None = None
    on_progress: Callable[[int], None] | None = None
    stop_after: int | None = None
    """Stop receiving after this many acted messages (per-run cap)."""
    after_send: Callable[[], None] | None = None
    """Called after each successful batch send, before its originals are completed (a seam for fault tests)."""
    seen: set[int] = field(default_factory=set)
    lanes: int = 1
    """Parallel scans, each on its own connection."""


class _Senders:
    def __init__(self, client: ServiceBusClient) -> None:
        self._client = client
        self._senders: dict[str, ServiceBusSender] = {}

        self._limits: dict[str, int] = {}

    def limit(self, queue: str, options: ActOptions) -> int:
        """min(--max-batch-bytes, what the link allows); the link's limit is read once per queue."""
        if queue not in self._limits:
            self._limits[queue] = self.get(queue).create_message_batch().max_size_in_bytes
        link = self._limits[queue]
        return link if options.max_batch_bytes is None else min(options.max_batch_bytes, link)

    def get(self, queue: str) -> ServiceBusSender:
        if queue not in self._senders:
            self._senders[queue] = self._client.get_queue_sender(queue)
        return self._senders[queue]

    def close(self) -> None:
        for sender in self._senders.values():
            try:
                sender.close()
            except Exception:  # closing after a dropped connection may fail; nothing is held by a sender
                log.debug("sender close failed", exc_info=True)


class _Scan:
    """What the lanes of one scan share: the sequence numbers seen, the acted count, the chooser (under a lock)."""

    def __init__(self, choose: Chooser, options: ActOptions) -> None:
        self._choose = choose
        self.options = options
        self._lock = threading.Lock()
        self.acted = 0
        self.max_seen = 0

    def remaining(self) -> int | None:
        stop = self.options.stop_after
        return None if stop is None else max(stop - self.acted, 0)

    def claim(self, received: ServiceBusReceivedMessage) -> tuple[DlqMessage | None, Act | None]:
        """(message, decision); message None when this sequence number was already seen (the scan has cycled)."""
        seq = int(received.sequence_number or 0)
        with self._lock:
            if seq in self.options.seen:
                return None, None
            self.options.seen.add(seq)
            self.max_seen = max(self.max_seen, seq)
        message = from_received(received)
        with self._lock:
            remaining = self.remaining()
            decision = None if remaining == 0 else self._choose(message)
            if decision is not None:
                self.acted += 1
        return message, decision


def act(connect: Callable[[], ServiceBusClient], queue: str, choose: Chooser, options: ActOptions) -> Outcome:
    """Lock-scan the dead-letter queue: act on chosen messages, hold the others, release everything at the end.

    `options.lanes` scans run in parallel, each on its own connection (competing consumers of the DLQ), so the
    round trips of settling overlap. A lane stops when a peek finds nothing beyond the highest sequence number seen
    (checked after every page, instead of waiting for an empty receive), when the DLQ stays empty for
    `max_wait_time`, when it receives a message already seen (everything left is locked by this scan), or after
    `stop_after` acted messages. Messages below that sequence number that another consumer holds are not waited for.
    """
    scan = _Scan(choose, options)
    lanes = max(1, options.lanes)
    if lanes == 1:
        return _lane(connect, queue, scan)
    with ThreadPoolExecutor(lanes, thread_name_prefix="dlq-lane") as pool:
        outcomes = list(pool.map(lambda _: _lane(connect, queue, scan), range(lanes)))
    merged = Outcome()
    for item in outcomes:
        merged.requeued += item.requeued
        merged.parked += item.parked
        merged.purged += item.purged
        merged.skipped += item.skipped
        merged.left.update(item.left)
        merged.failed.update(item.failed)
        merged.errors += [e for e in item.errors if e not in merged.errors]
    return merged


def _lane(connect: Callable[[], ServiceBusClient], queue: str, scan: _Scan) -> Outcome:
    outcome = Outcome()
    held: list[_Held] = []
    try:
        with connect() as client:
            senders = _Senders(client)
            try:
                with dead_letter_receiver(client, queue) as receiver:
                    _scan(receiver, senders, scan, outcome, held)
                    for item in held:
                        try:
                            receiver.abandon_message(item.message)
                        except (MessageLockLostError, ServiceBusError) as exc:
                            log.debug("releasing %s: %s", item.message.sequence_number, exc)
            finally:
                senders.close()
    except ServiceBusConnectionError as exc:
        outcome.errors.append(f"connection lost: {exc}; rerun to finish (completed originals are not resent)")
    except ServiceBusError as exc:
        outcome.errors.append(f"{type(exc).__name__}: {exc}")
    return outcome


def _scan(receiver: ServiceBusReceiver, senders: _Senders, scan: _Scan, outcome: Outcome,
          held: list[_Held]) -> None:
    options = scan.options
    while True:
        remaining = scan.remaining()
        if remaining == 0:
            return
        _renew_if_due(receiver, held, options)
        want = options.receive_page if remaining is None else max(1, min(options.receive_page, remaining))
        batch = receiver.receive_messages(max_message_count=want, max_wait_time=options.max_wait_time)
        if not batch:
            return
        todo: list[tuple[ServiceBusReceivedMessage, DlqMessage, Act]] = []
        cycled = False
        for received in batch:
            message, decision = scan.claim(received)
            if message is None:
                cycled = True
                held.append(_Held(received))
            elif decision is None:
                held.append(_Held(received))
                outcome.skipped.append(message.sequence_number)
            else:
                todo.append((received, message, decision))
        _execute(receiver, senders, todo, options, outcome, held)
        if options.on_progress is not None:
            options.on_progress(len(batch))
        if cycled:
            return
        if not _unseen_remain(receiver, scan):
            return  # drained: no need to wait max_wait_time for an empty receive


def _unseen_remain(receiver: ServiceBusReceiver, scan: _Scan) -> bool:
    """Whether the DLQ holds a message beyond the highest sequence number this scan has seen (one peek)."""
    page = receiver.peek_messages(max_message_count=1, sequence_number=scan.max_seen + 1)
    return bool(page)


def _renew_if_due(receiver: ServiceBusReceiver, held: list[_Held], options: ActOptions) -> None:
    now = datetime.datetime.now(datetime.UTC)
    margin = datetime.timedelta(seconds=LOCK_SAFETY_SECONDS + options.max_wait_time)
    keep: list[_Held] = []
    for item in held:
        until = item.message.locked_until_utc
        if until is not None and until - now < margin:
            try:
                receiver.renew_message_lock(item.message)
            except (MessageLockLostError, ServiceBusError):
                continue  # back in the DLQ; a second sighting ends the scan
        keep.append(item)
    held[:] = keep


def _execute(receiver: ServiceBusReceiver, senders: _Senders,
             todo: list[tuple[ServiceBusReceivedMessage, DlqMessage, Act]], options: ActOptions,
             outcome: Outcome, held: list[_Held]) -> None:
    purges = [(r, m) for r, m, a in todo if a.kind == "purge"]
    for received, message in purges:
        _complete(receiver, received, message, outcome, outcome.purged, held)
    by_target: dict[str, list[tuple[ServiceBusReceivedMessage, DlqMessage, Act]]] = {}
    for item in todo:
        if item[2].kind != "purge":
            by_target.setdefault(str(item[2].target), []).append(item)
    for target, items in by_target.items():
        def key(item: tuple[ServiceBusReceivedMessage, DlqMessage, Act]) -> object:
            copy = item[2].copy
            assert copy is not None
            return (copy.properties.get("group_id"), copy.annotations.get("x-opt-partition-key"))

        packing = pack(items, lambda item: item[1].size, senders.limit(target, options), key)
        for group in packing.batches:
            _send_group(receiver, senders, target, group, options, outcome, held)
        for received, message, decision in packing.oversize:
            _oversize(receiver, senders, received, message, decision, options, outcome, held)


def _send_group(receiver: ServiceBusReceiver, senders: _Senders, target: str,
                group: list[tuple[ServiceBusReceivedMessage, DlqMessage, Act]], options: ActOptions,
                outcome: Outcome, held: list[_Held]) -> None:
    """Send `group` as few SDK batches as its real encoded size allows, completing each batch's originals after."""
    sender = senders.get(target)
    pending: list[tuple[ServiceBusReceivedMessage, DlqMessage, Act]] = []
    batch: ServiceBusMessageBatch | None = None
    for item in group:
        if batch is None:
            batch = sender.create_message_batch(max_size_in_bytes=senders.limit(target, options))
        assert item[2].copy is not None
        outgoing = to_amqp(item[2].copy)
        try:
            batch.add_message(outgoing)
        except MessageSizeExceededError:
            if pending:  # our estimate was low: send what fits, retry this one in a fresh batch
                _flush(receiver, sender, batch, pending, options, outcome, held)
                batch = sender.create_message_batch(max_size_in_bytes=senders.limit(target, options))
                pending = []
                try:
                    batch.add_message(outgoing)
                except MessageSizeExceededError:
                    _oversize(receiver, senders, *item, options, outcome, held)
                    continue
            else:
                _oversize(receiver, senders, *item, options, outcome, held)
                continue
        pending.append(item)
    if batch is not None and pending:
        _flush(receiver, sender, batch, pending, options, outcome, held)


def _flush(receiver: ServiceBusReceiver, sender: ServiceBusSender, batch: ServiceBusMessageBatch,
           pending: list[tuple[ServiceBusReceivedMessage, DlqMessage, Act]], options: ActOptions,
           outcome: Outcome, held: list[_Held]) -> None:
    if options.limiter is not None:
        options.limiter.acquire(len(pending))
    try:
        sender.send_messages(batch)
    except (ServiceBusError, OSError) as exc:  # a dead connection also fails the next receive, ending the run
        for received, message, _ in pending:
            outcome.failed[message.sequence_number] = f"send failed: {type(exc).__name__}"
            held.append(_Held(received))
        return
    if options.after_send is not None:
        options.after_send()
    for received, message, decision in pending:
        done = outcome.requeued if decision.kind == "requeue" else outcome.parked
        _complete(receiver, received, message, outcome, done, held)


def _complete(receiver: ServiceBusReceiver, received: ServiceBusReceivedMessage, message: DlqMessage,
              outcome: Outcome, done: list[int], held: list[_Held]) -> None:
    try:
        receiver.complete_message(received)
    except MessageLockLostError:
        # The copy was sent but the original is back in the DLQ: a rerun re-sends it under the same
        # deterministic id, which duplicate detection drops (or, without it, delivers twice: reported).
        outcome.failed[message.sequence_number] = "lock lost after send (original not completed)"
        return
    done.append(message.sequence_number)


def _oversize(receiver: ServiceBusReceiver, senders: _Senders, received: ServiceBusReceivedMessage,
              message: DlqMessage, decision: Act, options: ActOptions, outcome: Outcome,
              held: list[_Held]) -> None:
    """Too large for one batch: try the fallback (park) as a single send, else leave it in the DLQ."""
    fallback = decision.fallback
    if fallback is not None and fallback.copy is not None and fallback.target is not None:
        try:
            senders.get(fallback.target).send_messages(to_amqp(fallback.copy))
        except ServiceBusConnectionError:
            raise
        except (ServiceBusError, ValueError) as exc:
            outcome.left[message.sequence_number] = f"oversize; park failed: {type(exc).__name__}"
            held.append(_Held(received))
            return
        _complete(receiver, received, message, outcome, outcome.parked, held)
        return
    outcome.left[message.sequence_number] = "oversize"
    held.append(_Held(received))


def send_copies(client: ServiceBusClient, target: str, copies: list[tuple[DlqMessage, Copy]],
                options: ActOptions) -> Outcome:
    """Send copies that have no dead-lettered original (import): packed by bytes, failures reported."""
    outcome = Outcome()
    senders = _Senders(client)
    try:
        sender = senders.get(target)
        packing = pack(copies, lambda item: item[0].size or estimate_size(item[0]), senders.limit(target, options),
                       lambda item: (item[1].properties.get("group_id"),
                                     item[1].annotations.get("x-opt-partition-key")))
        for message, _ in packing.oversize:
            outcome.left[message.sequence_number] = "oversize"
        for group in packing.batches:
            batch = sender.create_message_batch(max_size_in_bytes=senders.limit(target, options))
            chunk: list[DlqMessage] = []
            for message, copy in group:
                try:
                    batch.add_message(to_amqp(copy))
                except MessageSizeExceededError:
                    _send_plain(sender, batch, chunk, outcome, options)
                    batch = sender.create_message_batch(max_size_in_bytes=senders.limit(target, options))
                    chunk = []
                    try:
                        batch.add_message(to_amqp(copy))
                    except MessageSizeExceededError:
                        outcome.left[message.sequence_number] = "oversize"
                        continue
                chunk.append(message)
            _send_plain(sender, batch, chunk, outcome, options)
    except ServiceBusConnectionError as exc:
        outcome.errors.append(f"connection lost: {exc}")
    finally:
        senders.close()
    return outcome


def _send_plain(sender: ServiceBusSender, batch: ServiceBusMessageBatch, chunk: list[DlqMessage],
                outcome: Outcome, options: ActOptions) -> None:
    if not chunk:
        return
    if options.limiter is not None:
        options.limiter.acquire(len(chunk))
    try:
        sender.send_messages(batch)
    except ServiceBusConnectionError:
        raise
    except ServiceBusError as exc:
        for message in chunk:
            outcome.failed[message.sequence_number] = f"send failed: {type(exc).__name__}"
        return
    outcome.requeued.extend(m.sequence_number for m in chunk)
    if options.on_progress is not None:
        options.on_progress(len(chunk))
