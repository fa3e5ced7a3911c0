"""The AMQP 1.0 front end: an asyncio server speaking the Service Bus dialect of the protocol.

One event loop thread owns everything: connections (`connection.py` framing and endpoint state) and the broker
core (`queue.py`, driven with the wall clock). This module maps link traffic onto the broker: transfers to queue
sends, credit to deliveries, dispositions to settlements, and the `$cbs` and `$management` request/response
nodes. Replies and deliveries are buffered per connection and written once per event.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from digest_sbemulator import codec, sas, tls
from digest_sbemulator.amqp import Described, Symbol, Timestamp, described_list, uint_bytes
from digest_sbemulator.broker import Namespace
from digest_sbemulator.config import EmulatorConfig
from digest_sbemulator.connection import Connection, Link
from digest_sbemulator.frames import (
    ACCEPTED,
    ACCEPTED_OUTCOME,
    MODIFIED,
    REJECTED,
    RELEASED,
    encoded_outcome,
    error,
    field,
    outcome,
)
from digest_sbemulator.management import AdminApi, HttpsChannel
from digest_sbemulator.queue import LockLost, NotDeferred, Queue, State, lock_key, lock_tag, lock_token
from digest_sbemulator.queue import Message as Stored

log = logging.getLogger("digest_sbemulator")

LOCK_LOST = "com.microsoft:message-lock-lost"
NOT_IMPLEMENTED = "amqp:not-implemented"
_RELEASED = encoded_outcome(outcome(RELEASED))


class Broker:
    """Link traffic → broker operations. Every method runs on the event loop thread."""

    def __init__(self, namespace: Namespace, loop: asyncio.AbstractEventLoop,
                 clock: Callable[[], float] = time.time) -> None:
        self.namespace = namespace
        self.loop = loop
        self.clock = clock
        self.connections: set[Connection] = set()
        self.senders: dict[Link, None] = {}
        """Links the server sends on (client receivers on queues), in attach order."""
        self.dirty: set[Connection] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_deadline = float("inf")
        self.https: Callable[[], HttpsChannel] | None = None
        """Makes the handler of a connection that opens with TLS (the management endpoint), if enabled."""
        self.failing_sends = 0
        """Fault injection: this many upcoming sends to queues are refused (nothing is stored)."""
        self.pending = True
        """Something may have become deliverable or got a deadline since the last pump (anything but a
        completion): the next `run` pumps and re-arms the timer. Completions, the bulk of the traffic, skip both."""

    # ---- endpoints ----
    def link_attached(self, link: Link) -> None:
        if link.sending and link.address is not None and link.address.queue is not None \
                and not link.address.management:
            self.senders[link] = None

    def release_link(self, link: Link) -> None:
        """The link is gone: locks of what it held and did not settle are released (not counted as attempts)."""
        self.senders.pop(link, None)
        self.pending = True
        if link.address is None or link.address.queue is None or not link.unsettled:
            link.unsettled.clear()
            return
        now = self.clock()
        for token in list(link.unsettled):
            link.address.queue.release(token, now, dead_letter=link.address.dead_letter)
        link.unsettled.clear()

    def flush(self) -> None:
        """Write what each connection buffered, once."""
        while self.dirty:
            self.dirty.pop().flush()

    # ---- incoming transfers ----
    def incoming(self, link: Link, message_format: int, raw: bytes) -> Described | None:
        """A complete message from a client sender; returns the outcome (None: the link was detached instead)."""
        address = link.address
        if address is None:
            return outcome(REJECTED, [error("amqp:not-found", "the link is not attached to an entity")])
        try:
            if address.cbs:
                self._cbs(link, raw)
            elif address.management:
                self._management(link, raw)
            elif self.failing_sends > 0:
                # detach the link with an error and leave the transfer unsettled: the SDK fails the send (and
                # may retry on a new link); nothing is stored
                self.failing_sends -= 1
                link.connection.detach(link, error("amqp:internal-error", "injected send failure"))
                return None
            else:
                self._send_to_queue(address.queue, message_format, raw)
        except codec.CodecError as exc:
            return outcome(REJECTED, [error("amqp:decode-error", str(exc))])
        return outcome(ACCEPTED)

    def _send_to_queue(self, queue: Queue | None, message_format: int, raw: bytes) -> None:
        assert queue is not None
        sections = codec.split(raw, lazy=True)
        parts = [codec.split(blob, lazy=True) for blob in codec.unpack_batch(sections)] \
            if message_format == codec.BATCH_MESSAGE_FORMAT else [sections]
        now = self.clock()
        for part in parts:
            message = _stored(part)
            scheduled = message.annotations.get("x-opt-scheduled-enqueue-time")
            if scheduled is not None:
                queue.schedule(message, _seconds(scheduled), now)
            else:
                queue.send(message, now)

    # ---- outgoing transfers ----
    def pump(self) -> None:
        """Hand available messages to every client receiver with credit."""
        now = self.clock()
        if now >= self.namespace.soonest():
            self.namespace.tick(now)
        for link in list(self.senders):
            address = link.address
            assert address is not None
            assert address.queue is not None
            queue = address.queue
            session = link.session
            wanted = min(link.credit, session.remote_incoming_window)
            if wanted > 0 and not link.detached:
                got = queue.receive(now, wanted, lock=not link.presettled, dead_letter=address.dead_letter)
                if got:  # a pre-settled delivery (receive-and-delete) has no lock: its tag is only an identifier
                    link.connection.transfer(link, [
                        (uuid.uuid4().bytes_le if token is None else lock_tag(token), _encode_stored(queue, message),
                         token) for message, token in got])
            if link.drain:  # answered even with no credit left: the client waits for this flow
                link.connection.drained(link)

    # ---- settlement ----
    def settle(self, link: Link, token: int, code: int | None, fields: list[Any]) -> bytes:
        """Apply a client's outcome (`code` with its `fields`); returns the encoded outcome to echo (an error only
        for a real failure). Anything but a completion may make a message available again."""
        address = link.address
        link.unsettled.discard(token)
        if code == ACCEPTED and address is not None and address.queue is not None:  # most settlements
            try:
                target = address.queue
                (target.dead_letter if address.dead_letter else target.main).complete(token, self.clock())
            except LockLost as exc:
                return encoded_outcome(outcome(REJECTED, [error(LOCK_LOST, str(exc))]))
            return ACCEPTED_OUTCOME
        self.pending = True
        queue = address.queue if address is not None else None
        if queue is None or code is None:
            return _RELEASED if code is None else encoded_outcome(outcome(code, fields))
        assert link.address is not None
        dlq = link.address.dead_letter
        now = self.clock()
        try:
            if code == MODIFIED:
                if field(fields, 1, False):  # undeliverable-here: the SDK's defer
                    queue.defer(token, now, dead_letter=dlq)
                else:
                    queue.abandon(token, now, dead_letter=dlq)
                return encoded_outcome(outcome(MODIFIED, [field(fields, 0, False), field(fields, 1, False)]))
            if code == REJECTED:
                err = field(fields, 0)
                info = _as_dict(field(err.value, 2) if isinstance(err, Described) else None)
                queue.dead_letter_message(token, now, _text(info.get("DeadLetterReason")),
                                          _text(info.get("DeadLetterErrorDescription")), dead_letter=dlq)
                return encoded_outcome(outcome(REJECTED))
            queue.release(token, now, dead_letter=dlq)
            return _RELEASED
        except LockLost as exc:
            return encoded_outcome(outcome(REJECTED, [error(LOCK_LOST, str(exc))]))

    # ---- $cbs ----
    def _cbs(self, link: Link, raw: bytes) -> None:
        request = codec.split(raw)
        props = _as_dict(request.application_properties)
        status, description = 202, "Accepted"
        if props.get("operation") != "put-token":
            status, description = 400, f"unsupported $cbs operation {props.get('operation')!r}"
        elif not self.namespace.config.insecure:
            try:
                sas.validate(str(request.body_value), self.namespace.config.keys, self.clock())
            except sas.TokenRejected as exc:
                status, description = 401, f"InvalidSignature: {exc}"
        reply = _reply_message(request.message_id, {"status-code": status, "status-description": description})
        link.connection.reply(link, "$cbs", reply)

    # ---- $management ----
    def _management(self, link: Link, raw: bytes) -> None:
        request = codec.split(raw)
        operation = str(_as_dict(request.application_properties).get("operation"))
        body = _as_dict(request.body_value)
        assert link.address is not None
        assert link.address.queue is not None
        queue, dlq, now = link.address.queue, link.address.dead_letter, self.clock()
        status: int = 200
        reply_body: dict[str, Any] = {}
        condition: str | None = None
        try:
            if operation == "com.microsoft:peek-message":
                found = queue.peek(int(body.get("from-sequence-number", 1)), int(body.get("message-count", 1)),
                                   dead_letter=dlq, now=now)
                if not found:
                    status = 204
                else:
                    reply_body = {"messages": [{"message": _encode_stored(queue, m)} for m in found]}
            elif operation == "com.microsoft:renew-lock":
                tokens = [_lock_key(t) for t in body.get("lock-tokens", [])]
                reply_body = {"expirations": [_ms(queue.renew_lock(t, now, dead_letter=dlq)) for t in tokens]}
            elif operation == "com.microsoft:receive-by-sequence-number":
                lock = int(body.get("receiver-settle-mode", 1)) != 0  # 0: receive-and-delete
                deferred = queue.receive_deferred([int(n) for n in body.get("sequence-numbers", [])], now,
                                                  lock=lock, dead_letter=dlq)
                reply_body = {"messages": [
                    {"message": _encode_stored(queue, m),
                     **({"lock-token": lock_token(key)} if key is not None else {})}
                    for m, key in deferred]}
            elif operation == "com.microsoft:update-disposition":
                _settle_by_management(queue, body, now, dlq)
            elif operation == "com.microsoft:schedule-message":
                numbers = [self._schedule(queue, bytes(_as_dict(entry).get("message", b"")), now)
                           for entry in body.get("messages", [])]
                reply_body = {"sequence-numbers": numbers}
            elif operation == "com.microsoft:cancel-scheduled-message":
                queue.cancel_scheduled([int(n) for n in body.get("sequence-numbers", [])])
            else:
                status, condition = 501, NOT_IMPLEMENTED
        except LockLost as exc:
            status, condition, reply_body = 410, LOCK_LOST, {}
            log.debug("lock lost: %s", exc)
        except NotDeferred as exc:
            status, condition, reply_body = 404, "com.microsoft:message-not-found", {}
            log.debug("%s", exc)
        properties: dict[str, Any] = {"statusCode": status, "statusDescription": operation}
        if condition:
            properties["errorCondition"] = Symbol(condition)
        reply = _reply_message(request.message_id, properties, reply_body)
        link.connection.reply(link, str(request.reply_to or ""), reply)

    def _schedule(self, queue: Queue, blob: bytes, now: float) -> int:
        message = _stored(codec.split(blob, lazy=True))
        at = message.annotations.get("x-opt-scheduled-enqueue-time")
        return queue.schedule(message, _seconds(at) if at is not None else now, now)

    # ---- time ----
    def _arm_timer(self) -> None:
        """One timer, for the earliest deadline; re-armed only when that deadline moves earlier."""
        deadline = self.namespace.soonest()
        if deadline == float("inf") or (self._timer is not None and self._timer_deadline <= deadline):
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_deadline = deadline
        self._timer = self.loop.call_later(max(0.0, deadline - self.clock()) + 0.001, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_deadline = float("inf")
        self.pending = True
        self.run(lambda: None)

    def run(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on the loop thread, then deliver what became available and write everything out."""
        try:
            return fn()
        finally:
            if self.pending:
                self.pending = False
                try:
                    self.pump()
                except Exception:  # never leave the loop with buffered output unwritten
                    log.exception("emulator pump failed")
                self._arm_timer()
            self.flush()

    # ---- faults ----
    def drop_connections(self) -> int:
        """Cut every client connection without a close handshake (as a network failure)."""
        dropped = list(self.connections)
        for connection in dropped:
            connection.abort()
        return len(dropped)


def _settle_by_management(queue: Queue, body: dict[str, Any], now: float, dlq: bool) -> None:
    """Settlement of messages received by sequence number (they have no link): the SDK's fallback too."""
    status = _text(body.get("disposition-status"))
    for token in (_lock_key(t) for t in body.get("lock-tokens", [])):
        if status == "completed":
            queue.complete(token, now, dead_letter=dlq)
        elif status == "abandoned":
            queue.abandon(token, now, dead_letter=dlq)
        elif status == "defered":  # the SDK's spelling
            queue.defer(token, now, dead_letter=dlq)
        elif status == "suspended":
            queue.dead_letter_message(token, now, _text(body.get("deadletter-reason")),
                                      _text(body.get("deadletter-description")), dead_letter=dlq)
        else:
            raise LockLost(f"unknown disposition-status {status!r}")


def _reply_message(correlation_id: Any, properties: dict[str, Any], body: Any = None) -> bytes:
    """A response message: properties (correlation-id), application-properties, and an amqp-value body."""
    encoded = described_list(codec.PROPERTIES, [None, None, None, None, None, correlation_id])
    encoded += codec.encode_section(codec.APPLICATION_PROPERTIES, properties)
    if body is not None:
        encoded += codec.encode_section(codec.VALUE, body)
    return encoded


def _ms(seconds: float) -> Timestamp:
    return Timestamp(int(seconds * 1000))


def _encode_stored(queue: Queue, message: Stored) -> bytes:
    """A stored message as the SDK receives it: header and annotations written by the broker, the rest as sent.

    What every delivery repeats (the client's annotations, sequence number, enqueued time, the bare message with
    broker-set application properties, the effective TTL) is encoded once and kept on the message."""
    cached = message.encoded
    if cached is None:
        entries = codec.stamp_entries(message.sequence_number, int(message.enqueued_time * 1000))
        if message.annotations:
            entries = codec.annotation_entries(message.annotations) + entries
        tail = codec.with_application_properties(message.body, message.application_properties) \
            if message.application_properties else message.body
        cached = message.encoded = (codec.header_fields(_ttl_ms(queue, message)), entries,
                                    len(message.annotations) + 2, tail)
    fields, entries, count, tail = cached
    if message.locked_until is not None:
        entries += codec.locked_until_entry(int(message.locked_until * 1000))
        count += 1
    if message.state is not State.ACTIVE:
        entries += codec.annotation_entries({"x-opt-message-state": int(message.state)})
        count += 1
    return codec.delivery_sections(fields + uint_bytes(message.delivery_count), entries, count, tail)


_BROKER_ANNOTATIONS = frozenset({"x-opt-sequence-number", "x-opt-enqueued-time", "x-opt-locked-until",
                                 "x-opt-message-state"})
"""Annotations the broker writes on every delivery: a client's own values for them are dropped."""


def _stored(part: codec.Sections) -> Stored:
    annotations = {str(k): v for k, v in part.message_annotations.items()}
    if not _BROKER_ANNOTATIONS.isdisjoint(annotations):
        annotations = {k: v for k, v in annotations.items() if k not in _BROKER_ANNOTATIONS}
    return Stored(body=part.bare, message_id=part.message_id, annotations=annotations,
                  time_to_live=part.ttl_seconds)


def _ttl_ms(queue: Queue, message: Stored) -> int:
    """The effective time to live: the client's, capped by the queue's default (as the service does)."""
    default = queue.properties.default_message_time_to_live.total_seconds()
    ttl = default if message.time_to_live is None else min(message.time_to_live, default)
    return int(ttl * 1000)


def _as_dict(value: Any) -> dict[str, Any]:
    return {_text(k) or "": v for k, v in value.items()} if isinstance(value, dict) else {}


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def _seconds(value: Any) -> float:
    return float(int(value)) / 1000


def _lock_key(value: Any) -> int:
    """A lock token from a management request (an AMQP uuid) as the queue's lock key."""
    return lock_key(value if isinstance(value, uuid.UUID) else uuid.UUID(bytes=bytes(value)))


def _new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop where it is installed (it halves the loop's own cost per event), else asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class EmulatorServer:
    """The emulator on a loopback port, served by an event loop in a background thread."""

    connection_class: type[Connection] = Connection
    """The protocol of each client connection (a subclass may specialise it, e.g. for measurements)."""

    def __init__(self, config: EmulatorConfig, host: str = "127.0.0.1", port: int = 5672,
                 tls_dir: Path | None = None) -> None:
        """`tls_dir` keeps the management endpoint's CA and certificate (made when absent); default: a
        temporary directory removed at `stop`."""
        self.config = config
        self.host, self.port = host, port
        self.namespace = Namespace(config)
        self.loop = _new_event_loop()
        self.broker = Broker(self.namespace, self.loop)
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if tls_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="sbemulator-tls-")
            tls_dir = Path(self._tmp.name)
        self.tls = tls.ensure(tls_dir, [host])
        """The management endpoint's CA file (`tls.ca_file`) is what clients pass as `connection_verify`."""
        context = self.tls.server_context()
        api = AdminApi(self.namespace, self.broker.clock, self.broker.clock())
        self.broker.https = lambda: HttpsChannel(context, api, lambda host: f"https://{host or self.host}")
        self._server: asyncio.AbstractServer | None = None
        self._thread = threading.Thread(target=self.loop.run_forever, name="sb-emulator", daemon=True)

    def connection_string(self, key_name: str | None = None) -> str:
        name = key_name or next(iter(self.config.keys))
        return (f"Endpoint=sb://{self.host}:{self.port};SharedAccessKeyName={name};"
                f"SharedAccessKey={self.config.keys[name]};UseDevelopmentEmulator=true")

    def start(self) -> EmulatorServer:
        self._thread.start()
        listening = asyncio.run_coroutine_threadsafe(
            self.loop.create_server(lambda: self.connection_class(self.broker), self.host, self.port), self.loop)
        self._server = listening.result(10)
        return self

    def call(self, fn: Callable[[], Any], timeout: float = 10) -> Any:
        """Run `fn` on the loop thread and return its result (for faults, counts and inspection)."""
        result: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def run() -> None:
            self.broker.pending = True
            try:
                result.set_result(self.broker.run(fn))
            except BaseException as exc:  # delivered to the calling thread
                result.set_exception(exc)

        self.loop.call_soon_threadsafe(run)
        try:
            return result.result(timeout)
        except concurrent.futures.TimeoutError:
            raise TimeoutError("the emulator did not answer") from None

    # ---- fault injection (thread-safe: run on the loop thread) ----
    def fail_next_sends(self, count: int = 1) -> None:
        """Refuse the next `count` sends to any queue; nothing of them is stored."""
        self.call(lambda: setattr(self.broker, "failing_sends", count))

    def drop_connections(self) -> int:
        """Cut every client connection abruptly; locks they held are released."""
        return int(self.call(self.broker.drop_connections))

    def expire_locks(self, queue: str) -> int:
        """Expire every lock held on `queue` now (the messages are redelivered with delivery count + 1)."""
        return int(self.call(lambda: self.namespace.queue(queue).expire_locks(self.broker.clock())))

    def stop(self) -> None:
        if not self._thread.is_alive():
            return

        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for connection in list(self.broker.connections):
                connection.abort()

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()
        if self._tmp is not None:
            self._tmp.cleanup()

