"""The AMQP 1.0 front end on Qpid Proton: links to queues, `$cbs` and `$management`; everything runs on the
reactor thread, the broker core (`queue.py`) is driven with the reactor's clock.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, cast

import proton
from proton import Condition, Delivery, Endpoint, Handler, Link, Message, symbol
from proton.reactor import ApplicationEvent, Container, EventInjector

from digest_sbemulator import codec, sas
from digest_sbemulator.broker import Address, Namespace, UnknownEntity
from digest_sbemulator.config import EmulatorConfig
from digest_sbemulator.queue import LockLost, NotDeferred, Queue, State
from digest_sbemulator.queue import Message as Stored

log = logging.getLogger("digest_sbemulator")

LOCK_LOST = "com.microsoft:message-lock-lost"
DEAD_LETTER = "com.microsoft:dead-letter"
NOT_FOUND = "amqp:not-found"
NOT_IMPLEMENTED = "amqp:not-implemented"
UNAUTHORIZED = "amqp:unauthorized-access"
CREDIT = 500


def _guarded(method: Callable[..., None]) -> Callable[..., None]:
    """An exception in a handler would end the reactor thread (and hang every client): log it instead."""

    def wrapper(self: Any, event: Any) -> None:
        try:
            method(self, event)
        except Exception:
            log.exception("emulator handler %s failed", method.__name__)

    wrapper.__name__ = method.__name__
    return wrapper


def _ms(seconds: float) -> proton.timestamp:
    return proton.timestamp(int(seconds * 1000))


class _LinkState:
    """Per-link facts kept on the Proton link record."""

    def __init__(self, address: Address) -> None:
        self.address = address
        self.unsettled: dict[uuid.UUID, Delivery] = {}


class EmulatorHandler(Handler):
    """A plain Proton handler (no MessagingHandler children): every event is dispatched once."""

    def __init__(self, namespace: Namespace, clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.namespace = namespace
        self.clock = clock
        self.senders: list[Link] = []  # links the server sends on (client receivers)
        self._timer: Any = None
        self._timer_deadline = float("inf")
        self.container: Container | None = None
        self.connections: list[Any] = []
        self.failing_sends = 0
        """Fault injection: this many upcoming sends to queues are rejected (nothing is stored)."""

    # ---- endpoints ----
    @_guarded
    def on_connection_remote_open(self, event: Any) -> None:
        if event.connection.state & Endpoint.LOCAL_UNINIT:
            self.connections.append(event.connection)
            event.connection.open()

    @_guarded
    def on_session_remote_open(self, event: Any) -> None:
        if event.session.state & Endpoint.LOCAL_UNINIT:
            event.session.open()

    @_guarded
    def on_link_remote_open(self, event: Any) -> None:
        link: Link = event.link
        if not link.state & Endpoint.LOCAL_UNINIT:
            return
        remote = link.remote_target.address if link.is_receiver else link.remote_source.address
        try:
            address = self.namespace.resolve(remote or "")
        except UnknownEntity as exc:
            # as the service does: attach without a terminus, then detach with the error
            link.condition = Condition(NOT_FOUND, str(exc))
            link.open()
            link.close()
            return
        link.source.copy(link.remote_source)
        link.target.copy(link.remote_target)
        link._digest_state = _LinkState(address)
        if link.is_sender:
            link.snd_settle_mode = link.remote_snd_settle_mode
            self.senders.append(link)
        link.open()
        if link.is_receiver:
            link.flow(CREDIT)

    @_guarded
    def on_link_remote_close(self, event: Any) -> None:
        self._release_link(event.link)
        event.link.close()

    @_guarded
    def on_session_remote_close(self, event: Any) -> None:
        event.session.close()

    @_guarded
    def on_connection_remote_close(self, event: Any) -> None:
        self._release_connection(event.connection)
        event.connection.close()

    @_guarded
    def on_transport_closed(self, event: Any) -> None:
        if event.connection is not None:
            self._release_connection(event.connection)

    def drop_connections(self) -> int:
        """Fault injection: cut every client connection without a close handshake (as a network failure)."""
        dropped = 0
        for connection in list(self.connections):
            transport = connection.transport
            if transport is not None:
                self._release_connection(connection)
                transport.close_tail()
                transport.close_head()
                dropped += 1
        self.connections.clear()
        return dropped

    def _release_connection(self, connection: Any) -> None:
        for link in list(self.senders):
            if link.connection == connection:
                self._release_link(link)
        if connection in self.connections:
            self.connections.remove(connection)

    def _release_link(self, link: Link) -> None:
        state: _LinkState | None = getattr(link, "_digest_state", None)
        if state is None:
            return
        if link in self.senders:
            self.senders.remove(link)
        queue = state.address.queue
        now = self.clock()
        for token in list(state.unsettled):
            if queue is not None:
                queue.release(token, now, dead_letter=state.address.dead_letter)
        state.unsettled.clear()
        self._pump()

    # ---- incoming transfers ----
    @_guarded
    def on_delivery(self, event: Any) -> None:
        link: Link = event.link
        delivery: Delivery = event.delivery
        if link.is_receiver:
            if delivery.readable and not delivery.partial:
                raw = link.recv(delivery.pending) or b""
                link.advance()
                self._incoming(link, delivery, raw)
                if link.credit < CREDIT // 2:
                    link.flow(CREDIT - link.credit)
        elif delivery.updated:
            self._disposition(link, delivery)

    def _incoming(self, link: Link, delivery: Delivery, raw: bytes) -> None:
        state: _LinkState | None = getattr(link, "_digest_state", None)
        if state is None:  # a link refused at attach
            delivery.local.condition = Condition(NOT_FOUND, "the link is not attached to an entity")
            delivery.update(Delivery.REJECTED)
            delivery.settle()
            return
        address = state.address
        try:
            if address.cbs:
                self._cbs(link, raw)
            elif address.management:
                self._management(link, raw)
            elif self.failing_sends > 0:
                # detach the link with an error and leave the transfer unsettled: the SDK fails the send (and
                # may retry on a new link); nothing is stored
                self.failing_sends -= 1
                link.condition = Condition("amqp:internal-error", "injected send failure")
                link.close()
                return
            else:
                self._send_to_queue(address, raw)
            delivery.update(Delivery.ACCEPTED)
        except codec.CodecError as exc:
            delivery.local.condition = Condition("amqp:decode-error", str(exc))
            delivery.update(Delivery.REJECTED)
        delivery.settle()
        self._pump()

    def _send_to_queue(self, address: Address, raw: bytes) -> None:
        assert address.queue is not None
        sections = codec.split(raw)
        blobs = codec.unpack_batch(sections) or [raw]
        now = self.clock()
        for blob in blobs:
            message = _stored(sections if blob is raw else codec.split(blob))
            scheduled = message.annotations.get("x-opt-scheduled-enqueue-time")
            if scheduled is not None:
                address.queue.schedule(message, _seconds(scheduled), now)
            else:
                address.queue.send(message, now)

    # ---- outgoing transfers ----
    def _pump(self) -> None:
        """Hand available messages to every client receiver with credit, then re-arm the timer."""
        now = self.clock()
        self.namespace.tick(now)
        for link in list(self.senders):
            state: _LinkState | None = getattr(link, "_digest_state", None)
            if state is None or state.address.queue is None or state.address.management or state.address.cbs:
                continue
            queue = state.address.queue
            settled = link.snd_settle_mode == Link.SND_SETTLED
            while link.credit > 0:
                got = queue.receive(now, 1, lock=not settled, dead_letter=state.address.dead_letter)
                if not got:
                    break
                message, token = got[0]
                self._transfer(link, state, queue, message, token)
            if link.drain_mode and link.credit > 0:
                link.drained()
        self._arm_timer()

    def _transfer(self, link: Link, state: _LinkState, queue: Queue, message: Stored,
                  token: uuid.UUID | None) -> None:
        token = token or uuid.uuid4()
        payload = _encode_stored(queue, message)
        delivery = link.delivery(cast(str, codec.lock_token_tag(token)))  # binary tags work; the stub says str
        link.send(payload)
        link.advance()
        if link.snd_settle_mode == Link.SND_SETTLED:
            delivery.settle()
        else:
            delivery._digest_token = token
            state.unsettled[token] = delivery

    @_guarded
    def on_link_flow(self, event: Any) -> None:
        self._pump()

    # ---- settlement ----
    def _disposition(self, link: Link, delivery: Delivery) -> None:
        state: _LinkState | None = getattr(link, "_digest_state", None)
        token: uuid.UUID | None = getattr(delivery, "_digest_token", None)
        queue = state.address.queue if state is not None else None
        if state is None or token is None or queue is None:
            delivery.settle()
            return
        now = self.clock()
        remote = delivery.remote_state
        dlq = state.address.dead_letter
        outcome = remote
        try:
            if remote == Delivery.ACCEPTED:
                queue.complete(token, now, dead_letter=dlq)
            elif remote == Delivery.MODIFIED:
                if delivery.remote.undeliverable:
                    queue.defer(token, now, dead_letter=dlq)
                else:
                    queue.abandon(token, now, dead_letter=dlq)
            elif remote == Delivery.REJECTED:
                info = _as_dict(delivery.remote.condition.info if delivery.remote.condition else None)
                queue.dead_letter_message(token, now, _text(info.get("DeadLetterReason")),
                                          _text(info.get("DeadLetterErrorDescription")), dead_letter=dlq)
            elif remote == Delivery.RELEASED:
                queue.release(token, now, dead_letter=dlq)
            else:
                return  # not a terminal outcome yet
            delivery.local.condition = None  # type: ignore[assignment]  # an echo carries no error
        except LockLost as exc:
            outcome = Delivery.REJECTED
            delivery.local.condition = Condition(LOCK_LOST, str(exc))
        state.unsettled.pop(token, None)
        delivery.update(outcome)
        delivery.settle()
        self._pump()

    # ---- $cbs ----
    def _cbs(self, link: Link, raw: bytes) -> None:
        request = Message()
        request.decode(raw)
        props = _as_dict(request.properties)
        status, description = 202, "Accepted"
        if props.get("operation") != "put-token":
            status, description = 400, f"unsupported $cbs operation {props.get('operation')!r}"
        elif not self.namespace.config.insecure:
            try:
                sas.validate(str(request.body), self.namespace.config.keys, self.clock())
            except sas.TokenRejected as exc:
                status, description = 401, f"InvalidSignature: {exc}"
        reply = Message(correlation_id=request.id,
                        properties={"status-code": status, "status-description": description})
        self._reply(link, "$cbs", reply)

    # ---- $management ----
    def _management(self, link: Link, raw: bytes) -> None:
        request = Message()
        request.decode(raw)
        props = _as_dict(request.properties)
        operation = str(props.get("operation"))
        body = _as_dict(request.body)
        state: _LinkState = link._digest_state
        queue = state.address.queue
        assert queue is not None
        dlq = state.address.dead_letter
        now = self.clock()
        status: int = 200
        reply_body: dict[str, Any] = {}
        condition: str | None = None
        try:
            if operation == "com.microsoft:peek-message":
                start = int(body.get("from-sequence-number", 1))
                count = int(body.get("message-count", 1))
                found = queue.peek(start, count, dead_letter=dlq, now=now)
                if not found:
                    status = 204
                else:
                    reply_body = {"messages": [{"message": _encode_stored(queue, m)} for m in found]}
            elif operation == "com.microsoft:renew-lock":
                tokens = [_uuid(t) for t in body.get("lock-tokens", [])]
                reply_body = {"expirations": [
                    _ms(queue.renew_lock(t, now, dead_letter=dlq)) for t in tokens]}
            elif operation == "com.microsoft:receive-by-sequence-number":
                lock = int(body.get("receiver-settle-mode", 1)) != 0  # 0: receive-and-delete
                deferred = queue.receive_deferred([int(n) for n in body.get("sequence-numbers", [])], now,
                                                  lock=lock, dead_letter=dlq)
                reply_body = {"messages": [
                    {"message": _encode_stored(queue, m), **({"lock-token": lock_token} if lock_token else {})}
                    for m, lock_token in deferred]}
            elif operation == "com.microsoft:update-disposition":
                self._settle_by_management(queue, body, now, dlq)
            elif operation == "com.microsoft:schedule-message":
                numbers = []
                for entry in body.get("messages", []):
                    blob = bytes(_as_dict(entry).get("message", b""))
                    numbers.append(self._schedule(queue, blob, now))
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
        properties: dict[str, Any] = {"statusCode": status, "statusDescription": str(operation)}
        if condition:
            properties["errorCondition"] = symbol(condition)
        reply = Message(correlation_id=request.id, properties=properties, body=reply_body)
        self._reply(link, str(request.reply_to or ""), reply)
        self._pump()

    def _settle_by_management(self, queue: Queue, body: dict[str, Any], now: float, dlq: bool) -> None:
        """Settlement of messages received by sequence number (they have no link): the SDK's fallback too."""
        status = _text(body.get("disposition-status"))
        for token in (_uuid(t) for t in body.get("lock-tokens", [])):
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

    def _schedule(self, queue: Queue, blob: bytes, now: float) -> int:
        message = _stored(codec.split(blob))
        at = message.annotations.get("x-opt-scheduled-enqueue-time")
        return queue.schedule(message, _seconds(at) if at is not None else now, now)

    def _reply(self, request_link: Link, reply_to: str, reply: Message) -> None:
        """Send on the client's receiver link of the same session whose source is the reply address."""
        wanted = reply_to.lower()
        for link in self.senders:
            if link.session == request_link.session and (link.remote_source.address or "").lower().endswith(
                    wanted.rsplit("/", 2)[-2] + "/$management" if wanted.endswith("$management") else wanted):
                delivery = link.delivery(cast(str, uuid.uuid4().bytes))
                link.send(reply.encode())
                link.advance()
                delivery.settle()
                return
        log.warning("no reply link for %s", reply_to)

    # ---- time ----
    def _arm_timer(self) -> None:
        """One timer, for the earliest deadline; re-armed only when that deadline moves earlier."""
        deadline = self.namespace.next_deadline()
        if deadline is None or self.container is None:
            return
        if self._timer is not None and self._timer_deadline <= deadline:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_deadline = deadline
        self._timer = self.container.schedule(max(0.0, deadline - self.clock()) + 0.001, self)

    @_guarded
    def on_timer_task(self, event: Any) -> None:
        self._timer = None
        self._timer_deadline = float("inf")
        self._pump()

    def on_reactor_init(self, event: Any) -> None:
        self.container = event.container

    def on_call(self, event: Any) -> None:
        """Run a function on the reactor thread (see `EmulatorServer.call`)."""
        fn, done = event.subject
        try:
            done.append((True, fn()))
        except BaseException as exc:  # delivered to the calling thread
            done.append((False, exc))
        self._pump()


def _encode_stored(queue: Queue, message: Stored) -> bytes:
    """A stored message as the SDK receives it: header and annotations written by the broker, the rest as sent."""
    annotations: dict[str, Any] = {
        **message.annotations,
        "x-opt-sequence-number": message.sequence_number,
        "x-opt-enqueued-time": _ms(message.enqueued_time),
    }
    if message.locked_until is not None:
        annotations["x-opt-locked-until"] = _ms(message.locked_until)
    if message.state is not State.ACTIVE:
        annotations["x-opt-message-state"] = int(message.state)
    return codec.encode_for_delivery(
        message.body, delivery_count=message.delivery_count, ttl_ms=_ttl_ms(queue, message),
        annotations=annotations, application_properties=message.application_properties or None,
    )


def _stored(part: codec.Sections) -> Stored:
    return Stored(body=part.bare, message_id=part.message_id,
                  annotations={str(k): v for k, v in part.message_annotations.items()},
                  time_to_live=part.ttl_seconds)


def _ttl_ms(queue: Queue, message: Stored) -> int:
    """The effective time to live: the client's, capped by the queue's default (as the service does)."""
    default = queue.properties.default_message_time_to_live.total_seconds()
    ttl = default if message.time_to_live is None else min(message.time_to_live, default)
    return int(ttl * 1000)


def _as_dict(value: Any) -> dict[str, Any]:
    return {str(k): v for k, v in value.items()} if isinstance(value, dict) else {}


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def _seconds(value: Any) -> float:
    return float(int(value)) / 1000


def _uuid(value: Any) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(bytes=bytes(value))


class EmulatorServer:
    """The emulator on a loopback port, in a background thread."""

    def __init__(self, config: EmulatorConfig, host: str = "127.0.0.1", port: int = 5672) -> None:
        self.config = config
        self.host, self.port = host, port
        self.namespace = Namespace(config)
        self.handler = EmulatorHandler(self.namespace)
        self._injector = EventInjector()
        self._container = Container(self.handler)
        self._container.selectable(self._injector)
        self._thread = threading.Thread(target=self._container.run, name="sb-emulator", daemon=True)

    def connection_string(self, key_name: str | None = None) -> str:
        name = key_name or next(iter(self.config.keys))
        return (f"Endpoint=sb://{self.host}:{self.port};SharedAccessKeyName={name};"
                f"SharedAccessKey={self.config.keys[name]};UseDevelopmentEmulator=true")

    def start(self) -> EmulatorServer:
        self._container.sasl_enabled = True
        self._container.allowed_mechs = "ANONYMOUS"  # type: ignore[assignment]  # typed None upstream
        acceptor = self._container.listen(f"{self.host}:{self.port}")
        del acceptor
        self._thread.start()
        return self

    def call(self, fn: Callable[[], Any], timeout: float = 10) -> Any:
        """Run `fn` on the reactor thread and return its result (for faults, counts and inspection)."""
        done: list[tuple[bool, Any]] = []
        self._injector.trigger(ApplicationEvent("call", subject=(fn, done)))
        deadline = time.monotonic() + timeout
        while not done:
            if time.monotonic() > deadline:
                raise TimeoutError("the emulator did not answer")
            time.sleep(0.001)
        ok, value = done[0]
        if not ok:
            raise value
        return value

    # ---- fault injection (thread-safe: run on the reactor thread) ----
    def fail_next_sends(self, count: int = 1) -> None:
        """Reject the next `count` sends to any queue; nothing of them is stored."""
        self.call(lambda: setattr(self.handler, "failing_sends", count))

    def drop_connections(self) -> int:
        """Cut every client connection abruptly; locks they held are released."""
        return int(self.call(self.handler.drop_connections))

    def expire_locks(self, queue: str) -> int:
        """Expire every lock held on `queue` now (the messages are redelivered with delivery count + 1)."""
        return int(self.call(lambda: self.namespace.queue(queue).expire_locks(self.handler.clock())))

    def stop(self) -> None:
        self._container.stop()
        self._injector.close()
        self._thread.join(10)
