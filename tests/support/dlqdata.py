"""Dead-letter test data and a conservation oracle that does not use the toolkit.

`varied` describes messages of every shape (all three body types, several data sections, binary that is not UTF-8,
sessions, partition keys, TTLs, large, bytes-keyed, typed application properties); each is a `Sent`, the record of
what the test sends, kept before the SDK sees it (the SDK rewrites bytes application-property values in place) and the
only source of the message sent (`Sent.message`). `compare` checks every received message against its `Sent`, field by
field, at one of two levels, and counts each original id once over all places (lost, duplicated, unknown):

- `sdk`: what a consumer gets from the real SDK (`from_sdk`: `ServiceBusReceivedMessage.raw_amqp_message`). The SDK
  decodes AMQP string, symbol and binary all to bytes, and every integer width and timestamps to int: at this level
  they compare equal (`erase`), everything else exactly (Python types included: 1 is not True, not 1.0, not "1").
- `wire`: the AMQP encoding the emulator stores, which is the sender's own bytes (`from_wire`), decoded with its types:
  a string that became binary, an int that became a long, a symbol that became a string differ here.

A copy made through the SDK cannot keep what the SDK's decoding erased; `copied` states exactly what a faithful copy
may change at the wire level, and nothing else may change.
"""

from __future__ import annotations

import base64
import calendar
import copy
import datetime
import json
import random
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from azure.servicebus import (
    ServiceBusClient,
    ServiceBusMessage,
    ServiceBusReceivedMessage,
    ServiceBusSender,
    ServiceBusSubQueue,
)
from azure.servicebus.amqp import AmqpAnnotatedMessage, AmqpMessageBodyType

from digest_sbemulator import amqp, codec
from digest_sbemulator.server import EmulatorServer

REASONS = ["Transient.Exhausted.Http", "Transient.Exhausted.Teams", "MaxDeliveryCountExceeded", "Poison.BadJson",
           "TTLExpiredException"]

BodyType = Literal["data", "sequence", "value"]
Level = Literal["sdk", "wire"]
Tree = tuple[Any, ...]
"""A value with its AMQP type: ("string", b"utf-8"), ("binary", b".."), ("int", 5), ("list", (tree, ...)),
("map", ((key tree, value tree), ...) sorted), ...; `erase` maps it to what the SDK can tell apart."""

PROPERTY_FIELDS = ("message_id", "user_id", "to", "subject", "reply_to", "correlation_id", "content_type",
                   "content_encoding", "group_id", "group_sequence", "reply_to_group_id")
"""The AMQP properties in wire order from index 0 (absolute-expiry-time and creation-time, 8 and 9, are skipped)."""
_WIRE_INDEX = {name: i for i, name in enumerate(PROPERTY_FIELDS[:8])} | \
    {"group_id": 10, "group_sequence": 11, "reply_to_group_id": 12}
_PROPERTY_KIND = {"content_type": "symbol", "content_encoding": "symbol", "user_id": "binary", "group_sequence": "uint"}
"""The AMQP type of a property field (the SDK encodes the others' str as string)."""

BROKER_KEYS = (b"DeadLetterReason", b"DeadLetterErrorDescription")
ORIGINAL_ID = b"x-original-message-id"
REQUEUE_COUNT = b"x-requeue-count"
ORIGINAL_SEQUENCE = b"x-original-sequence-number"
TOOLKIT_OPTIONAL = (b"x-requeued-at", b"x-dead-letter-reason", b"x-dead-letter-description")
"""Keys a copy carries besides the original's (docs/dlq.md, "The copy"); the required ones are checked by value."""
INT32 = range(-2**31, 2**31)


# ---- what the test sends ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Sent:
    """One message as the test sends it; `message` builds the SDK object from deep copies, so nothing the SDK does
    to it reaches this record."""

    message_id: str
    reason: str
    body_type: BodyType
    body: Any
    """data: list[bytes], one item per data section; sequence: list of sections (lists); value: any AMQP value."""
    properties: dict[str, Any] = field(default_factory=dict)
    """AMQP property fields besides message_id (`PROPERTY_FIELDS`), as sent."""
    application_properties: dict[str | bytes, Any] = field(default_factory=dict)
    time_to_live: datetime.timedelta | None = None
    partition_key: str | None = None
    api: Literal["message", "amqp"] = "amqp"
    """`ServiceBusMessage` (one data section) or `AmqpAnnotatedMessage`."""

    @property
    def description(self) -> str:
        return f"{self.reason}: attempt failed\nstack line"

    def message(self) -> ServiceBusMessage | AmqpAnnotatedMessage:
        app: Any = copy.deepcopy(self.application_properties) or None  # the SDK's hint says str keys; bytes work
        props = copy.deepcopy(self.properties)
        if self.api == "message":
            (payload,) = self.body
            return ServiceBusMessage(
                payload, message_id=self.message_id, application_properties=app,
                content_type=props.pop("content_type", None), subject=props.pop("subject", None),
                correlation_id=props.pop("correlation_id", None), session_id=props.pop("group_id", None),
                reply_to=props.pop("reply_to", None), reply_to_session_id=props.pop("reply_to_group_id", None),
                to=props.pop("to", None), partition_key=self.partition_key, time_to_live=self.time_to_live,
                **_no_leftovers(props))
        body: dict[str, Any] = {f"{self.body_type}_body": copy.deepcopy(self.body)}
        header = {"time_to_live": int(self.time_to_live.total_seconds() * 1000)} if self.time_to_live else None
        annotations = {"x-opt-partition-key": self.partition_key} if self.partition_key else None
        return AmqpAnnotatedMessage(properties={"message_id": self.message_id, **props}, application_properties=app,
                                    header=header, annotations=annotations, **body)


def _no_leftovers(props: dict[str, Any]) -> dict[str, Any]:
    assert not props, f"ServiceBusMessage cannot carry {sorted(props)}: use api='amqp'"
    return {}


SENT_AT = datetime.datetime(2026, 11, 28, 12, 30, 15, 250_000, tzinfo=datetime.UTC)
"""A timestamp with whole milliseconds (the SDK truncates to ms)."""


def varied(count: int, seed: int = 5, *, big_every: int = 0, prefix: str = "m") -> list[Sent]:
    """`count` messages cycling through body types (i % 3: data, sequence, value), sessions, property shapes and
    reasons (i % 5). Data bodies of odd i are several sections, one of them binary that is not UTF-8, one empty."""
    rng = random.Random(seed)
    out: list[Sent] = []
    for i in range(count):
        mid = f"{prefix}-{i:05d}"
        app: dict[str | bytes, Any] = {"tenant": f"t{i % 7}", "n": i, "flag": i % 2 == 0}
        if i % 4 == 1:
            app["ratio"] = i / 7
        if i % 6 == 0:
            app["ref"] = uuid.UUID(int=i + 1)
        if i % 17 == 0:
            app["sent-at"] = SENT_AT + datetime.timedelta(seconds=i)
        if i % 11 == 0:
            app["big"] = "x" * 8000  # large property
        if i % 13 == 0:
            app[b"bytes-key"] = b"bytes-value"  # bytes keys and values, as a naive producer might send
        if i % 23 == 0:
            app[b"big-bytes"] = b"y" * 6000  # large and bytes
        if i % 19 == 0:
            app["empty"] = ""
        kind = i % 3
        size = 200 + rng.randrange(2000)
        if big_every and i % big_every == 0:
            size = 40_000
        ttl = datetime.timedelta(minutes=30) if i % 4 == 0 else None
        if kind == 0 and i % 2 == 0:
            payload = json.dumps({"i": i, "pad": "p" * size}).encode()
            props: dict[str, Any] = {"content_type": "application/json", "subject": f"digest.{i % 4}",
                                     "correlation_id": f"c-{i}"}
            if i % 5 == 0:
                props["group_id"] = f"s{i % 3}"
            if i % 8 == 2:
                props |= {"reply_to": "replies", "reply_to_group_id": f"r{i}", "to": "orders"}
            out.append(Sent(mid, REASONS[i % 5], "data", [payload], props, app, ttl,
                            partition_key=f"p{i % 4}" if i % 7 == 3 and "group_id" not in props else None,
                            api="message"))
        elif kind == 0:
            sections = [json.dumps({"i": i, "head": "h" * (size // 2)}).encode(),
                        b"\xff\xfe\x00" + rng.randbytes(size // 2), b"", b"tail"]
            props = {"content_type": "application/octet-stream", "content_encoding": "identity",
                     "subject": f"blob.{i % 4}"}
            if i % 9 == 1:
                props |= {"user_id": b"producer", "group_sequence": i}
            out.append(Sent(mid, REASONS[i % 5], "data", sections, props, app, ttl,
                            partition_key=f"p{i % 4}" if i % 7 == 3 else None))
        elif kind == 1:
            sequence = [[i, f"s{i}", "q" * (size // 4)], [True, 1.5, None, b"\x00\xff", b"utf8-binary", [i, "x"]]]
            out.append(Sent(mid, REASONS[i % 5], "sequence", sequence, {"subject": "seq", "group_id": f"g{i % 2}"},
                            app, ttl))
        else:
            value: dict[Any, Any] = {"i": i, "text": "v" * (size // 2), "nested": [1, 2, {"k": "v"}],
                                     "bin": b"\x80\x81", 7: "int key", b"\xfe": "binary key"}
            if i % 4 == 2:
                value["when"] = SENT_AT
            out.append(Sent(mid, REASONS[i % 5], "value", value, {}, app, ttl))
    return out


# ---- typed trees -----------------------------------------------------------------------------------------------

def _ms(value: datetime.datetime) -> int:
    """Milliseconds since the epoch as the SDK encodes a datetime (pyamqp `encode_timestamp`)."""
    return int(calendar.timegm(value.utctimetuple()) * 1000 + value.microsecond / 1000)


def _map(pairs: Iterable[tuple[Tree, Tree]]) -> Tree:
    return ("map", tuple(sorted(pairs, key=repr)))


def sent_tree(value: Any, *, app_property: bool = False) -> Tree:
    """A value the test hands to the SDK, typed as the SDK encodes it (pyamqp `encode_unknown`)."""
    if value is None:
        return ("null",)
    if isinstance(value, bool):
        return ("boolean", value)
    if isinstance(value, int):
        return ("int", value)  # the SDK encodes every Python int as an AMQP int (and refuses wider ones)
    if isinstance(value, float):
        return ("double", value)
    if isinstance(value, str):
        return ("string", value.encode())
    if isinstance(value, bytes):
        # the SDK decodes bytes application-property values to str before it sends them (parity with uamqp)
        return ("string" if app_property else "binary", value)
    if isinstance(value, datetime.datetime):
        return ("timestamp", _ms(value))
    if isinstance(value, uuid.UUID):
        return ("uuid", value)
    if isinstance(value, list):
        return ("list", tuple(sent_tree(v) for v in value))
    if isinstance(value, dict):
        return _map((sent_tree(k), sent_tree(v)) for k, v in value.items())
    raise TypeError(f"no AMQP type for {type(value).__name__}")


_WIRE_INTS = {amqp.Int: "int", amqp.Short: "short", amqp.Byte: "byte", amqp.UByte: "ubyte", amqp.UShort: "ushort",
              amqp.UInt: "uint", amqp.ULong: "ulong", amqp.Timestamp: "timestamp", int: "long"}


def wire_tree(value: Any) -> Tree:
    """A value decoded by the emulator's codec, which keeps every AMQP type (plain int is a long)."""
    kind = type(value)
    if value is None:
        return ("null",)
    if kind is bool:
        return ("boolean", value)
    if kind in _WIRE_INTS:
        return (_WIRE_INTS[kind], int(value))
    if kind is amqp.Float:
        return ("float", float(value))
    if kind is float:
        return ("double", value)
    if kind is amqp.Symbol:
        return ("symbol", str(value).encode())
    if kind is amqp.Char:
        return ("char", str(value).encode())
    if kind is str:
        return ("string", value.encode())
    if kind is bytes:
        return ("binary", value)
    if kind is uuid.UUID:
        return ("uuid", value)
    if kind is amqp.Array:
        return ("array", tuple(wire_tree(v) for v in value))
    if isinstance(value, list):
        return ("list", tuple(wire_tree(v) for v in value))
    if isinstance(value, dict):
        return _map((wire_tree(k), wire_tree(v)) for k, v in value.items())
    return ("other", repr(value))


def sdk_tree(value: Any) -> Tree:
    """A value as the SDK decoded it (or as an export record holds it): already erased."""
    if value is None:
        return ("null",)
    if isinstance(value, bool):
        return ("boolean", value)
    if isinstance(value, int):
        return ("integer", int(value))
    if isinstance(value, float):
        return ("float", value)
    if isinstance(value, str):
        return ("octets", value.encode())
    if isinstance(value, bytes | bytearray | memoryview):
        return ("octets", bytes(value))
    if isinstance(value, datetime.datetime):
        return ("integer", _ms(value))
    if isinstance(value, uuid.UUID):
        return ("uuid", value)
    if isinstance(value, list | tuple):
        return ("list", tuple(sdk_tree(v) for v in value))
    if isinstance(value, dict):
        return _map((sdk_tree(k), sdk_tree(v)) for k, v in value.items())
    return ("other", repr(value))


_ERASED = {"string": "octets", "binary": "octets", "symbol": "octets", "char": "octets", "double": "float",
           "float": "float", "array": "list"} | {kind: "integer" for kind in _WIRE_INTS.values()}


def erase(tree: Tree) -> Tree:
    """What the SDK's decoding keeps of a typed value."""
    kind = _ERASED.get(tree[0], tree[0])
    if kind == "list":
        return ("list", tuple(erase(v) for v in tree[1]))
    if kind == "map":
        return _map((erase(k), erase(v)) for k, v in tree[1])
    return (kind, *tree[1:])


def copied(tree: Tree, *, body: bool) -> Tree:
    """The wire form a copy made through the SDK has (docs/dlq.md, "The copy"): timestamps come back as ints (an AMQP
    long when outside int32) and, in SEQUENCE and VALUE bodies, binary that is UTF-8 comes back as string. The SDK
    decodes both pairs to one Python type, so no copy through it can tell them apart; nothing else may change."""
    kind = tree[0]
    if kind == "timestamp":
        return ("int" if tree[1] in INT32 else "long", tree[1])
    if kind == "binary" and body and _utf8(tree[1]):
        return ("string", tree[1])
    if kind == "list":
        return ("list", tuple(copied(v, body=body) for v in tree[1]))
    if kind == "map":
        return _map((copied(k, body=body), copied(v, body=body)) for k, v in tree[1])
    return tree


def _utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _key(key: Any) -> bytes:
    return key.encode() if isinstance(key, str) else bytes(key)


# ---- what the test receives ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Received:
    """One message found somewhere, at one level (see the module docstring)."""

    level: Level
    sequence_number: int
    body_type: str
    body: tuple[Any, ...]
    """data: the sections (bytes); sequence: one tree per section; value: (tree,)."""
    properties: dict[str, Tree]
    """`PROPERTY_FIELDS` that are set."""
    application_properties: dict[bytes, Tree]
    time_to_live_ms: int | None
    partition_key: Tree | None = None

    def text(self, key: bytes) -> str | None:
        tree = self.application_properties.get(key)
        return None if tree is None or not isinstance(tree[-1], bytes) else tree[-1].decode()

    def number(self, key: bytes) -> int | None:
        tree = self.application_properties.get(key)
        return tree[1] if tree is not None and isinstance(tree[-1], int) and tree[0] != "boolean" else None

    @property
    def message_id(self) -> str | None:
        tree = self.properties.get("message_id")
        return None if tree is None else tree[1].decode() if isinstance(tree[1], bytes) else str(tree[1])

    @property
    def original_id(self) -> str | None:
        return self.text(ORIGINAL_ID) or self.message_id

    @property
    def is_copy(self) -> bool:
        return ORIGINAL_ID in self.application_properties


_BODY_TYPES = {AmqpMessageBodyType.DATA: "data", AmqpMessageBodyType.SEQUENCE: "sequence",
               AmqpMessageBodyType.VALUE: "value"}


def from_sdk(message: ServiceBusReceivedMessage) -> Received:
    """A received or peeked message as the real SDK hands it over (its body generator is consumed here)."""
    raw = message.raw_amqp_message
    body_type = _BODY_TYPES[raw.body_type]
    body: tuple[Any, ...]
    if body_type == "data":
        body = tuple(bytes(part) for part in raw.body)
    elif body_type == "sequence":
        body = tuple(sdk_tree(list(section)) for section in raw.body)
    else:
        body = (sdk_tree(raw.body),)
    props: dict[str, Tree] = {}
    if raw.properties is not None:
        for name in PROPERTY_FIELDS:
            value = getattr(raw.properties, name, None)
            if value is not None:
                props[name] = sdk_tree(value)
    annotations = {_key(k): v for k, v in (raw.annotations or {}).items()}
    partition = annotations.get(b"x-opt-partition-key")
    return Received(
        "sdk", int(message.sequence_number or 0), body_type, body, props,
        {_key(k): sdk_tree(v) for k, v in (raw.application_properties or {}).items()},
        None if raw.header is None else raw.header.time_to_live,
        None if partition is None else sdk_tree(partition))


def from_wire(sequence_number: int, bare: bytes, *, annotations: Mapping[str, Any], time_to_live_ms: int | None,
              broker_properties: Mapping[str, Any] | None = None) -> Received:
    """A message from its encoding: `bare` is the properties section on (what a broker stores of the sender's bytes),
    `broker_properties` what the broker merges into the application properties (the dead-letter reason)."""
    if broker_properties:
        bare = codec.with_application_properties(bare, dict(broker_properties))
    props: dict[str, Tree] = {}
    app: dict[bytes, Tree] = {}
    codes: list[int] = []
    body: list[Any] = []
    for code, value, _, _ in codec.raw_sections(bare):
        if code == codec.PROPERTIES:
            fields = list(value or [])
            for name, index in _WIRE_INDEX.items():
                if index < len(fields) and fields[index] is not None:
                    props[name] = wire_tree(fields[index])
        elif code == codec.APPLICATION_PROPERTIES:
            app = {_key(k): wire_tree(v) for k, v in (value or {}).items()}
        elif code in (codec.DATA, codec.SEQUENCE, codec.VALUE):
            codes.append(code)
            body.append(bytes(value) if code == codec.DATA else wire_tree(value))
    kinds = {codec.DATA: "data", codec.SEQUENCE: "sequence", codec.VALUE: "value"}
    body_type = "+".join(sorted({kinds[c] for c in codes})) or "none"
    partition = annotations.get("x-opt-partition-key")
    return Received("wire", sequence_number, body_type, tuple(body), props, app, time_to_live_ms,
                    None if partition is None else wire_tree(partition))


def from_encoded(sequence_number: int, encoded: bytes) -> Received:
    """`from_wire` of a whole encoded message (header and annotations split off as a broker does)."""
    sections = codec.split(encoded)
    ttl = sections.header[2] if len(sections.header) > 2 else None
    annotations = {str(k): v for k, v in sections.message_annotations.items()}
    return from_wire(sequence_number, sections.bare, annotations=annotations,
                     time_to_live_ms=None if ttl is None else int(ttl))


def _typed_json(value: Any) -> Any:
    """The export file's typed JSON (docs/dlq.md, `export`), read without the toolkit."""
    if isinstance(value, list):
        return [_typed_json(v) for v in value]
    if isinstance(value, dict):
        if len(value) == 1:
            ((key, inner),) = value.items()
            if key == "$bytes":
                return base64.b64decode(inner)
            if key == "$datetime":
                return datetime.datetime.fromisoformat(inner)
            if key == "$uuid":
                return uuid.UUID(inner)
            if key == "$map":
                return {_hashable(_typed_json(k)): _typed_json(v) for k, v in inner}
        return {k: _typed_json(v) for k, v in value.items()}
    return value


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def from_export(record: dict[str, Any]) -> Received:
    """One line of an export file, at the `sdk` level (the toolkit exports what the SDK decoded)."""
    body_type = record["bodyType"]
    raw = _typed_json(record["body"])
    body = tuple(raw) if body_type == "data" else tuple(sdk_tree(s) for s in raw) if body_type == "sequence" \
        else (sdk_tree(raw),)
    props = {k: sdk_tree(v) for k, v in _typed_json(record.get("properties") or {}).items()
             if k in PROPERTY_FIELDS and v is not None}
    app = {_key(k): sdk_tree(v) for k, v in _typed_json(record.get("applicationProperties") or {}).items()}
    partition = (_typed_json(record.get("annotations") or {})).get("x-opt-partition-key")
    return Received("sdk", int(record["sequenceNumber"]), body_type, body, props, app,
                    (_typed_json(record.get("header") or {})).get("time_to_live"),
                    None if partition is None else sdk_tree(partition))


# ---- the comparison --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Difference:
    message_id: str
    place: str
    field: str
    expected: Any = None
    got: Any = None

    def __str__(self) -> str:
        return f"{self.message_id} in {self.place}: {self.field}: expected {_short(self.expected)}, " \
               f"got {_short(self.got)}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 160 else f"{text[:150]}...({len(text)} chars)"


@dataclass(frozen=True)
class _Expected:
    body: tuple[Any, ...]
    properties: dict[str, Tree]
    application_properties: dict[bytes, Tree]
    partition_key: Tree | None


def expected(sent: Sent, level: Level, *, copy_: bool) -> _Expected:
    """What `sent` must look like at `level`; `copy_`: as a copy the toolkit sent (wire level: `copied`)."""
    wire: Callable[[Tree], Tree] = (lambda t: copied(t, body=False)) if copy_ else (lambda t: t)
    in_body: Callable[[Tree], Tree] = (lambda t: copied(t, body=True)) if copy_ else (lambda t: t)
    view: Callable[[Tree], Tree] = erase if level == "sdk" else (lambda t: t)
    body: tuple[Any, ...]
    if sent.body_type == "data":
        body = tuple(sent.body)
    elif sent.body_type == "sequence":
        body = tuple(view(in_body(sent_tree(section))) for section in sent.body)
    else:
        body = (view(in_body(sent_tree(sent.body))),)
    props = {}
    for name, value in sent.properties.items():
        tree = sent_tree(value)
        if name in _PROPERTY_KIND:
            tree = (_PROPERTY_KIND[name], *tree[1:])
        props[name] = view(tree)
    app = {_key(k): view(wire(sent_tree(v, app_property=True))) for k, v in sent.application_properties.items()}
    partition = None if sent.partition_key is None else view(sent_tree(sent.partition_key))
    return _Expected(body, props, app, partition)


def _effective_ttl(ttl_ms: int | None, default_ms: int) -> int:
    return default_ms if ttl_ms is None else min(ttl_ms, default_ms)


def diff_message(sent: Sent, got: Received, *, place: str, default_ttl_ms: int, dead_lettered: bool,
                 reason: tuple[str, str] | None = None) -> list[Difference]:
    """Every field of `got` that is not what `sent` must look like there; `reason`: the dead-letter reason and
    description expected when `dead_lettered` (default: the ones `dead_letter_all` gives an original)."""
    out: list[Difference] = []

    def check(name: str, want: Any, have: Any) -> None:
        if want != have:
            out.append(Difference(sent.message_id, place, name, want, have))

    level = got.level
    want = expected(sent, level, copy_=got.is_copy)
    check("body_type", sent.body_type, got.body_type)
    if sent.body_type == got.body_type:
        if len(want.body) != len(got.body):
            check("body: sections", [len(s) if isinstance(s, bytes) else s for s in want.body],
                  [len(s) if isinstance(s, bytes) else s for s in got.body])
        else:
            for i, (a, b) in enumerate(zip(want.body, got.body, strict=True)):
                check(f"body: section {i}" if sent.body_type != "value" else "body", a, b)
    count = got.number(REQUEUE_COUNT)
    ids = {sent.message_id} | ({f"{sent.message_id}:rq{count}"} if got.is_copy and count else set())
    if got.message_id not in ids:
        check("properties.message_id", sorted(ids), got.message_id)
    if level == "wire" and "message_id" in got.properties and got.properties["message_id"][0] != "string":
        check("properties.message_id: type", "string", got.properties["message_id"][0])
    for name in PROPERTY_FIELDS[1:]:
        check(f"properties.{name}", want.properties.get(name), got.properties.get(name))
    sent_ttl = None if sent.time_to_live is None else int(sent.time_to_live.total_seconds() * 1000)
    check("time_to_live", _effective_ttl(sent_ttl, default_ttl_ms), _effective_ttl(got.time_to_live_ms, default_ttl_ms))
    check("partition_key", want.partition_key, got.partition_key)
    app = got.application_properties
    for key, value in want.application_properties.items():
        check(f"application_properties[{key!r}]", value, app.get(key, "<missing>"))
    string = "octets" if level == "sdk" else "string"
    for key in BROKER_KEYS:
        if not dead_lettered:
            check(f"application_properties[{key!r}]", "<absent>", app.get(key, "<absent>"))
        elif not got.is_copy or reason is not None:
            given = reason or (sent.reason, sent.description)
            check(f"application_properties[{key!r}]", (string, given[BROKER_KEYS.index(key)].encode()),
                  app.get(key, "<missing>"))
        elif app.get(key, ("<missing>",))[0] != string:
            check(f"application_properties[{key!r}]", f"a {string}", app.get(key, "<missing>"))
    if got.is_copy:
        check(f"application_properties[{ORIGINAL_ID!r}]", (string, sent.message_id.encode()), app[ORIGINAL_ID])
        integer = "integer" if level == "sdk" else "int"
        for key in (REQUEUE_COUNT, ORIGINAL_SEQUENCE):
            tree = app.get(key, ("<missing>",))
            if tree[0] != integer or tree[1] < 0:
                check(f"application_properties[{key!r}]", f"an {integer} >= 0", tree)
        for key in TOOLKIT_OPTIONAL:
            if key in app and app[key][0] != string:
                check(f"application_properties[{key!r}]", f"a {string}", app[key])
    allowed = set(want.application_properties) | set(BROKER_KEYS)
    if got.is_copy:
        allowed |= {ORIGINAL_ID, REQUEUE_COUNT, ORIGINAL_SEQUENCE, *TOOLKIT_OPTIONAL}
    for key in sorted(set(app) - allowed):
        check(f"application_properties[{key!r}]", "<absent>", app[key])
    return out


def compare(sent: Iterable[Sent], places: Mapping[str, Iterable[Received]], *, default_ttl_ms: int,
            dead_letter_places: Iterable[str] = ("dlq", "export"),
            reasons: Mapping[str, tuple[str, str]] | None = None) -> list[Difference]:
    """Every difference between what was sent and what the places hold: each field of each message, and each
    original id exactly once over all places (`lost`, `duplicated`, `unknown message`). `reasons`: the dead-letter
    reason and description of a message id when not the ones `dead_letter_all` gave it."""
    by_id = {s.message_id: s for s in sent}
    dead = set(dead_letter_places)
    seen: dict[str, list[str]] = defaultdict(list)
    out: list[Difference] = []
    for place, items in places.items():
        for got in items:
            original = got.original_id
            if original is None or original not in by_id:
                out.append(Difference(str(original), place, "unknown message", None, got.sequence_number))
                continue
            seen[original].append(place)
            out.extend(diff_message(by_id[original], got, place=place, default_ttl_ms=default_ttl_ms,
                                    dead_lettered=place in dead, reason=(reasons or {}).get(original)))
    out.extend(Difference(mid, "nowhere", "lost", 1, 0) for mid in by_id if mid not in seen)
    out.extend(Difference(mid, ", ".join(ps), "duplicated", 1, len(ps)) for mid, ps in seen.items() if len(ps) > 1)
    return out


def explain(differences: list[Difference], limit: int = 25) -> str:
    fields = Counter(d.field.split("[")[0] if d.field.startswith("application") else d.field for d in differences)
    lines = [f"{len(differences)} differences ({dict(fields.most_common(8))}):"]
    lines += [f"  {d}" for d in differences[:limit]]
    return "\n".join(lines)


# ---- I/O against the emulator ----------------------------------------------------------------------------------

def default_ttl_ms(sb: EmulatorServer, queue: str) -> int:
    """The queue's default time to live (the emulator's configuration)."""
    return int(sb.namespace.queue(queue).properties.default_message_time_to_live.total_seconds() * 1000)


def dead_letter_all(sb: EmulatorServer, queue: str, items: list[Sent], *,
                    order: Literal["received", "reversed", "interleaved"] = "received") -> list[Sent]:
    """Send `items`, receive each (checking it arrived exactly as sent) and dead-letter it with its reason; returns
    `items`.

    `reversed` and `interleaved` receive everything first (holding the locks), then dead-letter out of sequence
    order, as messages that fail at different times do: the dead-letter queue then fills out of order."""
    by_id = {sent.message_id: sent for sent in items}
    arrived: list[Received] = []
    with ServiceBusClient.from_connection_string(sb.connection_string()) as client:
        with client.get_queue_sender(queue) as sender:
            send_in_batches(sender, (sent.message() for sent in items))
        with client.get_queue_receiver(queue, prefetch_count=0) as receiver:
            held: list[Any] = []

            def dead_letter(received: Any) -> None:
                sent = by_id[str(received.message_id)]
                receiver.dead_letter_message(received, reason=sent.reason, error_description=sent.description)

            while len(arrived) < len(items):
                got = receiver.receive_messages(max_message_count=100, max_wait_time=5)
                assert got, f"only {len(arrived)} of {len(items)} messages arrived"
                for received in got:
                    arrived.append(from_sdk(received))
                    if order == "received":
                        dead_letter(received)
                    else:
                        held.append(received)
            if order == "reversed":
                held.reverse()
            elif order == "interleaved":
                held = held[::3] + [m for i, m in enumerate(held) if i % 3][::-1]
            for received in held:
                dead_letter(received)
    differences = compare(items, {queue: arrived}, default_ttl_ms=default_ttl_ms(sb, queue), dead_letter_places=())
    assert not differences, "sent messages did not arrive as sent: " + explain(differences)
    return items


def peek_sdk(client: ServiceBusClient, queue: str, *, dead_letter: bool) -> list[Received]:
    """Everything in the queue or its DLQ, peeked with the real SDK past the 250-per-peek cap."""
    out: list[Received] = []
    kwargs: dict[str, Any] = {"sub_queue": ServiceBusSubQueue.DEAD_LETTER} if dead_letter else {}
    with client.get_queue_receiver(queue, **kwargs) as receiver:
        seq = 1
        while True:
            page = receiver.peek_messages(max_message_count=250, sequence_number=seq)
            if not page:
                break
            out.extend(from_sdk(m) for m in page)
            seq = int(page[-1].sequence_number or 0) + 1
    return out


def stored(sb: EmulatorServer, queue: str, *, dead_letter: bool) -> list[Received]:
    """Everything the emulator holds in the queue or its DLQ, from the encoding it stores (the sender's bytes)."""
    entity = sb.namespace.queue(queue)

    def snapshot() -> list[tuple[int, bytes, dict[str, Any], float | None, dict[str, Any]]]:
        return [(m.sequence_number, m.body, dict(m.annotations), m.time_to_live, dict(m.application_properties))
                for m in entity.peek(1, 1 << 30, dead_letter=dead_letter)]

    return [from_wire(seq, bare, annotations=annotations, broker_properties=broker,
                      time_to_live_ms=None if ttl is None else round(ttl * 1000))
            for seq, bare, annotations, ttl, broker in sb.call(snapshot)]


@dataclass(frozen=True)
class Observed:
    """A queue, its DLQ (`queue`, `dlq`) and other queues (by name), seen through the SDK and in the store."""

    sdk: dict[str, list[Received]]
    wire: dict[str, list[Received]]
    default_ttl_ms: int

    def ids(self, place: str) -> list[str]:
        """Original message ids in `place`, sorted."""
        return sorted(str(r.original_id) for r in self.sdk[place])

    def count(self, place: str) -> int:
        return len(self.sdk[place])


def observe(sb: EmulatorServer, queue: str, *others: str) -> Observed:
    with ServiceBusClient.from_connection_string(sb.connection_string()) as client:
        sdk = {"queue": peek_sdk(client, queue, dead_letter=False), "dlq": peek_sdk(client, queue, dead_letter=True)}
        sdk |= {name: peek_sdk(client, name, dead_letter=False) for name in others}
    wire = {"queue": stored(sb, queue, dead_letter=False), "dlq": stored(sb, queue, dead_letter=True)}
    wire |= {name: stored(sb, name, dead_letter=False) for name in others}
    return Observed(sdk, wire, default_ttl_ms(sb, queue))


def assert_exact(sent: list[Sent], places: Mapping[str, Iterable[Received]], *, default_ttl_ms: int,
                 reasons: Mapping[str, tuple[str, str]] | None = None) -> None:
    """`compare` finds no difference."""
    differences = compare(sent, places, default_ttl_ms=default_ttl_ms, reasons=reasons)
    assert not differences, explain(differences)


def assert_conserved(sent: list[Sent], observed: Observed, *, extra: Mapping[str, list[Received]] | None = None,
                     reasons: Mapping[str, tuple[str, str]] | None = None) -> None:
    """Every sent message exactly once over all places, every field as sent, at both levels; `extra`: further
    `sdk`-level places (an export file, a dead-letter place), counted with the others."""
    extra = extra or {}
    differences = compare(sent, {**observed.sdk, **extra}, default_ttl_ms=observed.default_ttl_ms, reasons=reasons)
    wire = compare(sent, {**observed.wire, **extra}, default_ttl_ms=observed.default_ttl_ms, reasons=reasons)
    differences += [Difference(d.message_id, d.place, f"wire: {d.field}", d.expected, d.got)
                    for d in wire if d.place not in extra]  # the extra places' own fields: reported once above
    assert not differences, explain(differences)


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def send_in_batches(sender: ServiceBusSender, messages: Iterable[ServiceBusMessage | AmqpAnnotatedMessage]) -> None:
    """Send `messages` in as few `ServiceBusMessageBatch`es as their sizes allow."""
    batch = sender.create_message_batch()
    for message in messages:
        try:
            batch.add_message(message)
        except ValueError:  # the batch is full
            sender.send_messages(batch)
            batch = sender.create_message_batch()
            batch.add_message(message)
    sender.send_messages(batch)
