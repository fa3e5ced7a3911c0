"""One client connection: the protocol header and SASL exchange, then sessions and links (spec part 2).

Endpoint state lives here; what traffic means (queues, `$cbs`, `$management`) is the broker's (`server.py`).
Output is buffered and written once per event by `Broker.flush`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, cast

from digest_sbemulator import amqp
from digest_sbemulator.amqp import Array, Described, Symbol, UByte, UInt, UShort
from digest_sbemulator.broker import Address, UnknownEntity, entity_path
from digest_sbemulator.frames import (
    ACCEPTED,
    ACCEPTED_OUTCOME,
    AMQP_FRAME,
    ATTACH,
    BEGIN,
    CLOSE,
    DETACH,
    DISPOSITION,
    EMPTY_FRAME,
    END,
    FLOW,
    OPEN,
    PROTOCOL_AMQP,
    PROTOCOL_SASL,
    SASL_FRAME,
    SASL_INIT,
    SASL_MECHANISMS,
    SASL_OUTCOME,
    SDK_COMPLETE,
    TRANSFER,
    accepted_echo,
    code_of,
    encoded_outcome,
    error,
    field,
    performative,
    plain_disposition,
    settled_disposition_frame,
    transfer_head,
    unpack_header,
)

if TYPE_CHECKING:
    from digest_sbemulator.broker import Namespace
    from digest_sbemulator.management import HttpsChannel

log = logging.getLogger("digest_sbemulator")


class Broker(Protocol):
    """What a connection asks of the broker (`server.Broker`); every call runs on the event loop thread."""

    namespace: Namespace
    loop: asyncio.AbstractEventLoop
    connections: set[Connection]
    dirty: set[Connection]
    https: Callable[[], HttpsChannel] | None
    pending: bool

    def link_attached(self, link: Link) -> None: ...

    def release_link(self, link: Link) -> None: ...

    def incoming(self, link: Link, message_format: int, raw: bytes) -> Described | None: ...

    def settle(self, link: Link, token: int, code: int | None, fields: list[Any]) -> bytes: ...

    def run(self, fn: Callable[[], Any]) -> Any: ...

MAX_FRAME_SIZE = 1024 * 1024
"""What this server accepts; outgoing frames honour the client's own maximum."""
INCOMING_WINDOW = 2**31 - 1
"""Transfer frames a session accepts before the client must wait for a flow: effectively unbounded."""
CREDIT = 500
"""Link credit granted to client senders, topped up when half is used."""
_TRANSFER_OVERHEAD = 64
SESSION_FILTER = "com.microsoft:session-filter"
_TLS_HANDSHAKE = 0x16
"""The first byte of a TLS record: an HTTPS client (the administration client) rather than AMQP."""


class ProtocolError(Exception):
    """The peer broke the protocol: the connection is closed with this error."""

    def __init__(self, condition: str, description: str) -> None:
        super().__init__(description)
        self.condition = condition


class Link:
    __slots__ = (
        "address",
        "connection",
        "credit",
        "delivery_count",
        "detached",
        "drain",
        "handle",
        "name",
        "partial",
        "partial_format",
        "partial_id",
        "partial_settled",
        "path",
        "presettled",
        "sending",
        "session",
        "unsettled",
    )

    def __init__(self, session: Session, name: str, handle: int, sending: bool, address: Address | None) -> None:
        self.connection = session.connection
        self.session = session
        self.name, self.handle, self.sending, self.address = name, handle, sending, address
        self.presettled = False
        self.credit = 0
        self.delivery_count = 0
        """Sending links: deliveries sent so far. Receiving links: the client's delivery count."""
        self.drain = False
        self.unsettled: set[int] = set()
        """Sending links: the lock keys of deliveries the client has not settled."""
        self.detached = False
        """Detached by the server (an error); frames still arriving for it are ignored."""
        self.partial: bytearray | None = None
        self.partial_id = 0
        self.partial_format = 0
        self.partial_settled = False
        self.path = ""
        """The entity path the client named (lower case), e.g. `orders/$management`."""


class Session:
    __slots__ = (
        "channel",
        "connection",
        "links",
        "next_delivery_id",
        "next_incoming_id",
        "next_outgoing_id",
        "outgoing",
        "remote_incoming_window",
    )

    def __init__(self, connection: Connection, channel: int, remote_incoming_window: int) -> None:
        self.connection = connection
        self.channel = channel
        self.links: dict[int, Link] = {}
        self.next_outgoing_id = 0
        self.next_incoming_id = 0
        self.remote_incoming_window = remote_incoming_window
        self.next_delivery_id = 0
        self.outgoing: dict[int, tuple[Link, int]] = {}
        """Delivery id → (link, lock key) of unsettled deliveries the server sent."""


class Connection(asyncio.Protocol):
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.out = bytearray()
        self.phase = "header"  # header → sasl → header → open → closed
        self.sessions: dict[int, Session] = {}
        self.remote_max_frame = MAX_FRAME_SIZE
        self._heartbeat: asyncio.TimerHandle | None = None
        self.https: HttpsChannel | None = None
        """Set when the client opened with TLS: the management endpoint serves this connection."""
        self._handlers = {OPEN: self._open, BEGIN: self._begin, ATTACH: self._attach, FLOW: self._flow,
                          TRANSFER: self._transfer, DISPOSITION: self._disposition, DETACH: self._detach,
                          END: self._end, CLOSE: self._close}

    # ---- asyncio.Protocol ----
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        sock = transport.get_extra_info("socket")
        if sock is not None:  # small frames (dispositions, flows) must not wait for Nagle's algorithm
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.broker.connections.add(self)

    def data_received(self, data: bytes) -> None:
        if self.https is not None:
            self._https(data)
            return
        try:
            match = None if self.buffer else SDK_COMPLETE(data)
            if match is None or data[3] != len(data) or not self._complete_alone(match):
                self.buffer += data
                self.broker.run(self._consume)
        except ProtocolError as exc:
            log.warning("closing a connection: %s", exc)
            self.send(performative(CLOSE, [error(exc.condition, str(exc))]))
            self.flush()
            self.abort()
        except Exception:
            log.exception("closing a connection after an internal error")
            self.abort()

    def _complete_alone(self, match: re.Match[bytes]) -> bool:
        """The bulk of the traffic: a read that is exactly the SDK's completion of one delivery (`match` of
        `frames.SDK_COMPLETE`), handled without the frame loop and the broker's pump (a completion makes nothing
        deliverable). False: not a delivery of this connection; the read takes the general path."""
        channel, encoded_id = match.groups()
        session = self.sessions.get(int.from_bytes(channel, "big"))
        if session is None:
            return False
        delivery_id = 0 if len(encoded_id) == 1 else int.from_bytes(encoded_id[1:], "big")
        entry = session.outgoing.pop(delivery_id, None)
        if entry is None:
            return False
        echo = self.broker.settle(entry[0], entry[1], ACCEPTED, [])
        reply = accepted_echo(channel, encoded_id) if echo is ACCEPTED_OUTCOME \
            else settled_disposition_frame(session.channel, False, delivery_id, echo)
        if self.out or self.transport is None or self.transport.is_closing():
            self.out += reply
            self.flush()
        else:
            self.transport.write(reply)
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.broker.run(self._release)

    def _https(self, data: bytes) -> None:
        assert self.https is not None
        reply = self.https.feed(data)
        if self.transport is None:
            return
        if reply:
            self.transport.write(reply)
        if self.https.closed:
            self.transport.close()

    # ---- output ----
    def send(self, data: bytes) -> None:
        self.out += data
        self.broker.dirty.add(self)

    def flush(self) -> None:
        if self.out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(bytes(self.out))
        self.out.clear()

    def abort(self) -> None:
        self._release()
        if self.transport is not None:
            self.transport.abort()

    def _release(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            self._heartbeat = None
        for session in self.sessions.values():
            for link in session.links.values():
                self.broker.release_link(link)
        self.sessions.clear()
        self.broker.connections.discard(self)
        self.phase = "closed"

    # ---- input ----
    def _consume(self) -> None:
        buf = self.buffer
        pos = 0
        try:
            while self.phase != "closed":
                if self.phase == "header":
                    if pos == 0 and buf and buf[0] == _TLS_HANDSHAKE and not self.sessions \
                            and self.broker.https is not None:
                        self.https = self.broker.https()
                        self.broker.loop.call_soon(self._https, bytes(buf))
                        pos = len(buf)
                        break
                    if len(buf) - pos < 8:
                        break
                    self._protocol_header(bytes(buf[pos:pos + 8]))
                    pos += 8
                    continue
                if len(buf) - pos < 8:
                    break
                size, doff, kind, channel = unpack_header(buf, pos)
                if size > MAX_FRAME_SIZE or doff < 2:
                    raise ProtocolError("amqp:connection:framing-error", f"bad frame header (size {size})")
                if len(buf) - pos < size:
                    break
                body = bytes(buf[pos + doff * 4:pos + size])
                pos += size
                if body:
                    self._frame(kind, channel, body)
        finally:
            del buf[:pos]

    def _protocol_header(self, header: bytes) -> None:
        if header == PROTOCOL_SASL and self.phase == "header" and not self.sessions:
            mechanisms = Array(amqp.SYM8, [Symbol("ANONYMOUS"), Symbol("PLAIN"), Symbol("MSSBCBS")])
            self.send(PROTOCOL_SASL + performative(SASL_MECHANISMS, [mechanisms], kind=SASL_FRAME))
            self.phase = "sasl"
        elif header == PROTOCOL_AMQP:
            self.send(PROTOCOL_AMQP)
            self.phase = "open"
        else:
            self.send(PROTOCOL_AMQP)
            raise ProtocolError("amqp:connection:framing-error", f"unsupported protocol header {header!r}")

    def _frame(self, kind: int, channel: int, body: bytes) -> None:
        if kind == AMQP_FRAME and body[2] == DISPOSITION:  # every settlement: read without the generic decoder
            plain = plain_disposition(body)
            if plain is not None:
                role, first, last, settled, code = plain
                if role:
                    self._settle(channel, first, last, settled, code, [])
                return
        self.broker.pending = True
        try:
            value, end = amqp.decode_value(body, 0)
        except amqp.DecodeError as exc:
            raise ProtocolError("amqp:decode-error", str(exc)) from None
        if not isinstance(value, Described) or not isinstance(value.value, list):
            raise ProtocolError("amqp:decode-error", "a frame body must be a described list")
        code = int(value.descriptor)
        if kind == SASL_FRAME:
            if code == SASL_INIT and self.phase == "sasl":
                # ANONYMOUS / PLAIN / MSSBCBS: the credential is the CBS token sent later, validated there
                self.send(performative(SASL_OUTCOME, [UByte(0)], kind=SASL_FRAME))
                self.phase = "header"
                return
            raise ProtocolError("amqp:not-implemented", f"unexpected SASL frame {code:#x}")
        handler = self._handlers.get(code)
        if handler is None:
            raise ProtocolError("amqp:not-implemented", f"unknown performative {code:#x}")
        handler(channel, value.value, body[end:] if code == TRANSFER else b"")

    # ---- connection and sessions ----
    def _open(self, channel: int, fields: list[Any], payload: bytes) -> None:
        self.remote_max_frame = min(int(field(fields, 2, MAX_FRAME_SIZE)), MAX_FRAME_SIZE)
        self.send(performative(OPEN, ["digest-sbemulator", None, UInt(MAX_FRAME_SIZE), UShort(65535)]))
        idle_ms = field(fields, 4)
        if idle_ms:
            self._beat(int(idle_ms) / 2000)

    def _beat(self, interval: float) -> None:
        """The client expects a frame at least every idle-time-out: send an empty frame at half of it."""
        if self.phase == "closed" or self.transport is None or self.transport.is_closing():
            return
        self.send(EMPTY_FRAME)
        self.flush()
        self._heartbeat = self.broker.loop.call_later(interval, self._beat, interval)

    def _begin(self, channel: int, fields: list[Any], payload: bytes) -> None:
        self.sessions[channel] = Session(self, channel, int(field(fields, 2, 0)))
        self.send(performative(BEGIN, [UShort(channel), UInt(0), UInt(INCOMING_WINDOW), UInt(INCOMING_WINDOW),
                                       UInt(2**32 - 1)], channel))

    def _end(self, channel: int, fields: list[Any], payload: bytes) -> None:
        session = self.sessions.pop(channel, None)
        if session is not None:
            for link in session.links.values():
                self.broker.release_link(link)
        self.send(performative(END, [], channel))

    def _close(self, channel: int, fields: list[Any], payload: bytes) -> None:
        self._release()
        self.send(performative(CLOSE, []))
        self.flush()
        if self.transport is not None:
            self.transport.close()

    def _session(self, channel: int) -> Session:
        session = self.sessions.get(channel)
        if session is None:
            raise ProtocolError("amqp:not-found", f"no session on channel {channel}")
        return session

    # ---- links ----
    def _attach(self, channel: int, fields: list[Any], payload: bytes) -> None:
        session = self._session(channel)
        name, handle, client_receives = field(fields, 0, ""), int(field(fields, 1, 0)), bool(field(fields, 2))
        source, target = field(fields, 5), field(fields, 6)
        terminus = source if client_receives else target
        address_text = field(terminus.value, 0, "") if isinstance(terminus, Described) else ""
        try:
            address: Address | None = self.broker.namespace.resolve(str(address_text))
            problem, condition = None, "amqp:not-found"
        except UnknownEntity as exc:
            address, problem, condition = None, str(exc), "amqp:not-found"
        filters = field(source.value, 7) if client_receives and isinstance(source, Described) else None
        if isinstance(filters, dict) and any(str(key) == SESSION_FILTER for key in filters):
            address, problem, condition = None, "sessions are not supported by this emulator", "amqp:not-implemented"
        link = Link(session, name, handle, client_receives, address)
        link.path = entity_path(str(address_text)).lower()
        session.links[handle] = link
        snd_settle, rcv_settle = field(fields, 3), field(fields, 4)
        link.presettled = client_receives and snd_settle == 1
        reply: list[Any] = [name, UInt(handle), not client_receives,
                            UByte(snd_settle) if snd_settle is not None else None,
                            UByte(rcv_settle) if rcv_settle is not None else None]
        if problem is not None:
            # as the service does: attach without a terminus, then detach with the error
            reply += [None, None] if client_receives else [source, None]
            self.send(performative(ATTACH, reply, channel))
            self.detach(link, error(condition, problem))
            return
        reply += [source, target, None, None, UInt(0) if client_receives else None]
        self.send(performative(ATTACH, reply, channel))
        if client_receives:
            self.broker.link_attached(link)
        else:
            link.delivery_count = int(field(fields, 9, 0))
            link.credit = CREDIT
            self._link_flow(link)

    def detach(self, link: Link, err: Described | None = None) -> None:
        """Detach a link from the server side (with an error); the client answers with its own detach."""
        if link.detached:
            return
        link.detached = True
        self.broker.release_link(link)
        self.send(performative(DETACH, [UInt(link.handle), True, err], link.session.channel))

    def _detach(self, channel: int, fields: list[Any], payload: bytes) -> None:
        session = self._session(channel)
        link = session.links.pop(int(field(fields, 0, 0)), None)
        if link is None:
            return
        self.broker.release_link(link)
        if not link.detached:
            link.detached = True
            self.send(performative(DETACH, [UInt(link.handle), True], channel))

    def _link_flow(self, link: Link, drain: bool = False) -> None:
        session = link.session
        self.send(performative(FLOW, [
            UInt(session.next_incoming_id), UInt(INCOMING_WINDOW), UInt(session.next_outgoing_id),
            UInt(INCOMING_WINDOW), UInt(link.handle), UInt(link.delivery_count), UInt(link.credit), None, drain,
        ], session.channel))

    def _flow(self, channel: int, fields: list[Any], payload: bytes) -> None:
        session = self._session(channel)
        next_incoming = field(fields, 0, 0)
        session.remote_incoming_window = int(next_incoming) + int(field(fields, 1, 0)) - session.next_outgoing_id
        handle = field(fields, 4)
        if handle is None:
            return
        link = session.links.get(int(handle))
        if link is None or link.detached:
            return
        if link.sending:
            link.credit = int(field(fields, 5, link.delivery_count)) + int(field(fields, 6, 0)) - link.delivery_count
            link.drain = bool(field(fields, 8, False))
            # the broker hands out messages at the end of this event (Broker.run → pump), then answers a drain
        if field(fields, 9, False):  # echo
            self._link_flow(link)

    def drained(self, link: Link) -> None:
        """Drain: nothing more to send now, so the remaining credit is used up and reported."""
        link.delivery_count += link.credit
        link.credit = 0
        link.drain = False
        self._link_flow(link, drain=True)

    # ---- transfers ----
    def transfer(self, link: Link, deliveries: list[tuple[bytes, bytes, int | None]]) -> None:
        """Send deliveries (delivery tag, encoded message, lock key or None for pre-settled) on `link`. One that
        fits a frame the client accepts is written by hand (the hot path of every receive), a larger one is split;
        the link and session counters move once for all."""
        session = link.session
        out, outgoing, unsettled, channel = self.out, session.outgoing, link.unsettled, session.channel
        delivery_id = session.next_delivery_id
        frame_count = 0
        for tag, payload, token in deliveries:
            if token is not None:
                outgoing[delivery_id] = (link, token)
                unsettled.add(token)
            room = self.remote_max_frame - _TRANSFER_OVERHEAD - len(tag)
            if len(payload) <= room and len(tag) < 256:
                out += transfer_head(channel, link.handle, delivery_id, tag, token is None, len(payload))
                out += payload
                frame_count += 1
            else:
                frame_count += self._transfer_frames(link, delivery_id, tag, payload, token is None, room)
            delivery_id = (delivery_id + 1) & 0xFFFFFFFF
        session.next_delivery_id = delivery_id
        link.delivery_count += len(deliveries)
        link.credit -= len(deliveries)
        session.next_outgoing_id += frame_count
        session.remote_incoming_window -= frame_count
        self.broker.dirty.add(self)

    def _transfer_frames(self, link: Link, delivery_id: int, tag: bytes, payload: bytes, settled: bool,
                         room: int) -> int:
        """One delivery split into frames of at most `room` payload bytes; returns how many."""
        first = [UInt(link.handle), UInt(delivery_id), tag, UInt(0), settled]
        starts = range(0, len(payload), room)
        for start in starts:
            more = start + room < len(payload)
            fields = [*first, more] if start == 0 else [UInt(link.handle), None, None, None, None, more]
            self.send(performative(TRANSFER, fields, link.session.channel, payload[start:start + room]))
        return len(starts)

    def _transfer(self, channel: int, fields: list[Any], payload: bytes) -> None:
        session = self._session(channel)
        session.next_incoming_id += 1
        link = session.links.get(int(field(fields, 0, 0)))
        if link is None or link.sending:
            raise ProtocolError("amqp:session:unattached-handle", f"transfer on unknown handle {field(fields, 0)}")
        more = bool(field(fields, 5, False))
        if link.partial is None:
            link.partial_id = int(field(fields, 1, 0))
            link.partial_format = int(field(fields, 3, 0))
            link.partial_settled = bool(field(fields, 4, False))
            if not more:  # the common case: one frame, no copy
                self._delivery(link, link.partial_id, link.partial_format, link.partial_settled, payload)
                return
            link.partial = bytearray()
        link.partial += payload
        if more:
            return
        raw, link.partial = bytes(link.partial), None
        if field(fields, 9, False):  # aborted
            return
        self._delivery(link, link.partial_id, link.partial_format, link.partial_settled, raw)

    def _delivery(self, link: Link, delivery_id: int, message_format: int, settled: bool, raw: bytes) -> None:
        link.delivery_count += 1
        link.credit -= 1
        if link.detached:
            return
        state = self.broker.incoming(link, message_format, raw)
        if state is None:
            return
        if not settled:
            self.send(settled_disposition_frame(link.session.channel, True, delivery_id, encoded_outcome(state)))
        if not link.detached and link.credit < CREDIT // 2:
            link.credit = CREDIT
            self._link_flow(link)

    def _disposition(self, channel: int, fields: list[Any], payload: bytes) -> None:
        if not field(fields, 0, False):
            return  # the client settling its own transfers: the server settled them already
        state = field(fields, 4)
        code = code_of(state)
        self._settle(channel, int(field(fields, 1, 0)), int(field(fields, 2, field(fields, 1, 0))),
                     bool(field(fields, 3, False)), code,
                     state.value if code is not None and isinstance(state.value, list) else [])

    def _settle(self, channel: int, first: int, last: int, settled: bool, code: int | None,
                fields: list[Any]) -> None:
        """The client's outcome (`code` with `fields`) for its deliveries `first`..`last`; echoed when the client
        left them unsettled."""
        session = self._session(channel)
        outgoing = session.outgoing
        for delivery_id in range(first, last + 1):
            entry = outgoing.pop(delivery_id, None)
            if entry is None:
                continue
            link, token = entry
            echo = self.broker.settle(link, token, code, fields)
            if not settled:
                self.send(settled_disposition_frame(channel, False, delivery_id, echo))

    # ---- request/response nodes ----
    def reply(self, request_link: Link, reply_to: str, message: bytes) -> None:
        """Send a response on the client's receiver link (same session) whose source is the reply address, or
        failing that on its receiver link for the same node."""
        wanted = entity_path(reply_to).lower()
        candidates = [link for link in request_link.session.links.values()
                      if link.sending and not link.detached and link.address is not None
                      and (link.address.cbs or link.address.management)]
        chosen = next((link for link in candidates if link.path == wanted), None) or next(
            (link for link in candidates if link.address == request_link.address), None)
        if chosen is None:
            log.warning("no reply link for %s", reply_to)
            return
        self.transfer(chosen, [(uuid.uuid4().bytes, message, None)])
