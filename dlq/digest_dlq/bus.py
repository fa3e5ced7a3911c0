"""Service Bus I/O of the toolkit on the sync SDK: conversion, peek, counts, plain sends (import).

The lock-scan-and-act data path (requeue, park, purge) is `scan`, on the aio SDK; the decisions it takes per
message (`Act`, `ActOptions`) are defined here.
"""

from __future__ import annotations

import datetime
import json
import logging
from collections.abc import Callable, Iterator
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
from azure.servicebus._pyamqp.types import TYPE, VALUE, AMQPTypes  # the SDK's typed values (as for its longs)
from azure.servicebus.amqp import AmqpAnnotatedMessage, AmqpMessageBodyType
from azure.servicebus.exceptions import (
    MessageSizeExceededError,
    ServiceBusConnectionError,
    ServiceBusError,
)

from digest_dlq.batching import pack
from digest_dlq.copy import Copy
from digest_dlq.message import PROPERTY_FIELDS, BodyType, DlqMessage, normalise_properties, text
from digest_dlq.policy import RateLimiter
from digest_dlq.report import Outcome
from digest_dlq.walk import walk

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


_INT32 = range(-(2**31), 2**31)


def _wide_ints(value: Any) -> Any:
    """`value` with every int outside int32 marked as an AMQP long. The SDK decodes long and timestamp to int and
    encodes an int as int32 only: unmarked, a message with a timestamp or long property or body value fails to encode
    and takes its whole batch (and lane) with it."""
    if isinstance(value, int) and not isinstance(value, bool) and value not in _INT32:
        return {TYPE: AMQPTypes.long, VALUE: value}
    if isinstance(value, list):
        return [_wide_ints(v) for v in value]
    if isinstance(value, dict):
        return {k: _wide_ints(v) for k, v in value.items()}
    return value


def to_amqp(copy: Copy) -> AmqpAnnotatedMessage:
    """The outgoing message for a `Copy`."""
    body_kw: dict[str, Any]
    if copy.body_type == "data":
        body_kw = {"data_body": list(copy.body) or [b""]}
    elif copy.body_type == "sequence":
        body_kw = {"sequence_body": _wide_ints(list(copy.body))}
    else:
        body_kw = {"value_body": _wide_ints(copy.body)}
    annotations: dict[str, Any] = dict(copy.annotations)
    if copy.scheduled_enqueue_time is not None:
        annotations["x-opt-scheduled-enqueue-time"] = copy.scheduled_enqueue_time
    header: dict[str, Any] = {"durable": True}
    if copy.time_to_live is not None:
        header["time_to_live"] = int(copy.time_to_live * 1000)
    return AmqpAnnotatedMessage(
        header=header, properties=dict(copy.properties),
        application_properties=_wide_ints(dict(copy.application_properties)),
        annotations=annotations or None, **body_kw,
    )


# ---- reading -------------------------------------------------------------------------------------------------

def dead_letter_receiver(client: ServiceBusClient, queue: str, **kwargs: Any) -> ServiceBusReceiver:
    return client.get_queue_receiver(queue, sub_queue=ServiceBusSubQueue.DEAD_LETTER, prefetch_count=0, **kwargs)


def peek_all(client: ServiceBusClient, queue: str, *, dead_letter: bool = True, from_sequence: int = 1,
             to_sequence: int | None = None, on_page: Callable[[int], None] | None = None) -> Iterator[DlqMessage]:
    """Every message once, past the 250-per-peek cap (`walk`); no lock, delivery counts untouched."""
    receiver = dead_letter_receiver(client, queue) if dead_letter else client.get_queue_receiver(queue)
    with receiver:
        def peek(start: int) -> list[Any]:
            return list(receiver.peek_messages(max_message_count=PEEK_PAGE, sequence_number=start))

        for message in walk(peek, lambda m: int(m.sequence_number or 0), from_sequence, to_sequence, on_page):
            yield from_received(message)


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
    """Concurrent scans, each on its own connection."""
    targets: tuple[str, ...] = ()
    """Queues copies will likely go to: their senders open together with the receiver."""
    settle_concurrency: int = 128
    """Completes (and renewals, releases) in flight per scan; the lock-scan itself is `scan.act` (aio SDK)."""


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
