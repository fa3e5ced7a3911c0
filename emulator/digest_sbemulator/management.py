"""The management endpoint: the Atom/XML REST API that `ServiceBusAdministrationClient` reads queues from.

It shares the AMQP port (a connection that opens with a TLS record instead of an AMQP header is served here), so
the emulator's one connection string works for both clients, as one namespace name does for the service:

    ServiceBusAdministrationClient.from_connection_string(conn_str, connection_verify="<ca.pem>")

Read-only: `get_queue`, `get_queue_runtime_properties`, `list_queues`, `list_queues_runtime_properties`. Anything
else answers 405. Requests are authorised with the same SAS tokens as `$cbs`.
"""

from __future__ import annotations

import datetime
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit
from xml.sax.saxutils import escape

from digest_sbemulator import sas
from digest_sbemulator.broker import Namespace, UnknownEntity
from digest_sbemulator.queue import Queue

ATOM = "http://www.w3.org/2005/Atom"
CONNECT = "http://schemas.microsoft.com/netservices/2010/10/servicebus/connect"
COUNTS = "http://schemas.microsoft.com/netservices/2011/06/servicebus"
MAX_REQUEST = 64 * 1024


@dataclass(frozen=True)
class Response:
    status: int
    body: str
    content_type: str = "application/atom+xml;type=entry;charset=utf-8"


def duration(value: datetime.timedelta) -> str:
    """ISO 8601 duration, as the service writes them (`PT1M`, `P14D`, `PT0.5S`)."""
    total = value.total_seconds()
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    out = f"P{int(days)}D" if days else "P"
    time = "".join(f"{int(n)}{unit}" for n, unit in ((hours, "H"), (minutes, "M")) if n)
    if seconds:
        time += f"{seconds:g}S"
    if time:
        out += "T" + time
    return out if out != "P" else "PT0S"


def _iso(moment: float) -> str:
    return datetime.datetime.fromtimestamp(moment, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _bool(value: bool) -> str:
    return "true" if value else "false"


class AdminApi:
    """Maps REST requests to queue descriptions; pure apart from reading the namespace."""

    def __init__(self, namespace: Namespace, clock: Callable[[], float], started: float) -> None:
        self.namespace = namespace
        self.clock = clock
        self.started = started

    def handle(self, method: str, target: str, headers: dict[str, str], base: str) -> Response:
        if not self.namespace.config.insecure:
            try:
                sas.validate(headers.get("authorization", ""), self.namespace.config.keys, self.clock())
            except sas.TokenRejected as exc:
                return _error(401, f"InvalidSignature: {exc}")
        if method != "GET":
            return _error(405, f"the emulator's management endpoint is read-only ({method} is not supported)")
        url = urlsplit(target)
        path = url.path.strip("/")
        if path.lower() == "$resources/queues":
            query = parse_qs(url.query)
            skip, top = int(query.get("$skip", ["0"])[0]), int(query.get("$top", ["100"])[0])
            queues = sorted(self.namespace.queues.values(), key=lambda q: q.name)[skip:skip + top]
            return self._feed(queues, base)
        if path.lower().startswith("$resources/topics"):
            return self._feed([], base)
        try:
            queue = self.namespace.queue(path)
        except UnknownEntity as exc:
            return _error(404, str(exc))
        return Response(200, '<?xml version="1.0" encoding="utf-8"?>' + self._entry(queue, base))

    def _feed(self, queues: list[Queue], base: str) -> Response:
        entries = "".join(self._entry(queue, base) for queue in queues)
        now = _iso(self.clock())
        body = (f'<?xml version="1.0" encoding="utf-8"?><feed xmlns="{ATOM}"><title type="text">Queues</title>'
                f'<id>{escape(base)}/$Resources/Queues</id><updated>{now}</updated>{entries}</feed>')
        return Response(200, body, "application/atom+xml;type=feed;charset=utf-8")

    def _entry(self, queue: Queue, base: str) -> str:
        props = queue.properties
        counts = queue.counts()
        size = sum(len(m.body) for sub in (queue.main, queue.dead_letter) for m in sub.messages.values())
        total = counts.active + counts.deferred + counts.scheduled + counts.dead_letter
        started, now = _iso(self.started), _iso(self.clock())
        link = f"{base}/{queue.name}?api-version=2021-05"
        return (
            f'<entry xmlns="{ATOM}"><id>{escape(link)}</id><title type="text">{escape(queue.name)}</title>'
            f"<published>{started}</published><updated>{started}</updated>"
            f'<author><name>digest-sbemulator</name></author><link rel="self" href="{escape(link)}"/>'
            f'<content type="application/xml"><QueueDescription xmlns="{CONNECT}" '
            f'xmlns:i="http://www.w3.org/2001/XMLSchema-instance">'
            f"<LockDuration>{duration(props.lock_duration)}</LockDuration>"
            f"<MaxSizeInMegabytes>1024</MaxSizeInMegabytes>"
            f"<RequiresDuplicateDetection>{_bool(props.requires_duplicate_detection)}</RequiresDuplicateDetection>"
            f"<RequiresSession>{_bool(props.requires_session)}</RequiresSession>"
            f"<DefaultMessageTimeToLive>{duration(props.default_message_time_to_live)}</DefaultMessageTimeToLive>"
            f"<DeadLetteringOnMessageExpiration>{_bool(props.dead_lettering_on_message_expiration)}"
            f"</DeadLetteringOnMessageExpiration>"
            f"<DuplicateDetectionHistoryTimeWindow>{duration(props.duplicate_detection_history_time_window)}"
            f"</DuplicateDetectionHistoryTimeWindow>"
            f"<MaxDeliveryCount>{props.max_delivery_count}</MaxDeliveryCount>"
            f"<EnableBatchedOperations>true</EnableBatchedOperations>"
            f"<SizeInBytes>{size}</SizeInBytes><MessageCount>{total}</MessageCount>"
            f"<IsAnonymousAccessible>false</IsAnonymousAccessible><AuthorizationRules/><Status>Active</Status>"
            f"<CreatedAt>{started}</CreatedAt><UpdatedAt>{started}</UpdatedAt><AccessedAt>{now}</AccessedAt>"
            f"<SupportOrdering>true</SupportOrdering>"
            f'<CountDetails xmlns:d2p1="{COUNTS}">'
            f"<d2p1:ActiveMessageCount>{counts.active}</d2p1:ActiveMessageCount>"
            f"<d2p1:DeadLetterMessageCount>{counts.dead_letter}</d2p1:DeadLetterMessageCount>"
            f"<d2p1:ScheduledMessageCount>{counts.scheduled}</d2p1:ScheduledMessageCount>"
            f"<d2p1:TransferMessageCount>0</d2p1:TransferMessageCount>"
            f"<d2p1:TransferDeadLetterMessageCount>0</d2p1:TransferDeadLetterMessageCount></CountDetails>"
            f"<AutoDeleteOnIdle>P10675199DT2H48M5.4775807S</AutoDeleteOnIdle>"
            f"<EnablePartitioning>false</EnablePartitioning>"
            f"<EntityAvailabilityStatus>Available</EntityAvailabilityStatus><EnableExpress>false</EnableExpress>"
            f"</QueueDescription></content></entry>"
        )


def _error(status: int, detail: str) -> Response:
    body = f"<Error><Code>{status}</Code><Detail>{escape(detail)}</Detail></Error>"
    return Response(status, body, "application/xml; charset=utf-8")


_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed",
            413: "Payload Too Large"}


class HttpsChannel:
    """HTTP/1.1 over TLS on an already accepted connection, driven by the bytes the connection receives.

    TLS runs through memory BIOs, so the same asyncio protocol that sniffed the first byte keeps the socket.
    """

    def __init__(self, context: ssl.SSLContext, api: AdminApi, base: Callable[[str], str]) -> None:
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._api = api
        self._base = base
        self._handshaken = False
        self._request = bytearray()
        self.closed = False

    def feed(self, data: bytes) -> bytes:
        """Bytes received from the client → bytes to send back."""
        self._incoming.write(data)
        try:
            if not self._handshaken:
                self._tls.do_handshake()
                self._handshaken = True
            while True:
                chunk = self._tls.read(65536)
                if not chunk:
                    self.closed = True
                    break
                self._request += chunk
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLError:
            self.closed = True
        if self._handshaken and not self.closed:
            self._serve()
        return self._outgoing.read()

    def _serve(self) -> None:
        while True:
            head_end = self._request.find(b"\r\n\r\n")
            if head_end < 0:
                if len(self._request) > MAX_REQUEST:
                    self._respond(_error(413, "request too large"), keep_alive=False)
                return
            lines = self._request[:head_end].decode("latin-1").split("\r\n")
            parts = lines[0].split(" ")
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0") or 0)
            if len(self._request) < head_end + 4 + length:
                return
            del self._request[:head_end + 4 + length]
            if len(parts) != 3:
                self._respond(_error(400, "malformed request line"), keep_alive=False)
                return
            method, target, _version = parts
            response = self._api.handle(method, target, headers, self._base(headers.get("host", "")))
            self._respond(response, keep_alive=headers.get("connection", "").lower() != "close")

    def _respond(self, response: Response, keep_alive: bool) -> None:
        body = response.body.encode()
        head = (f"HTTP/1.1 {response.status} {_REASONS.get(response.status, 'Error')}\r\n"
                f"Content-Type: {response.content_type}\r\nContent-Length: {len(body)}\r\n"
                f"Server: digest-sbemulator\r\n" + ("" if keep_alive else "Connection: close\r\n") + "\r\n")
        self._tls.write(head.encode() + body)
        if not keep_alive:
            self.closed = True
