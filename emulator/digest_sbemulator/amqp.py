"""The AMQP 1.0 type system (spec part 1): decode any encoded value, encode Python values back.

Decoded values keep their AMQP type where Python would lose it (`Symbol`, `UInt`, `Timestamp`, `Array`, ...), so a
value decoded and re-encoded is the same AMQP value. Plain Python values encode as: bool → boolean, int → long,
float → double, str → string, bytes → binary, uuid.UUID → uuid, list → list, dict → map, None → null.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Callable
from typing import Any


class DecodeError(ValueError):
    """Bytes that are not a well-formed AMQP value."""


class Symbol(str):
    __slots__ = ()


class Char(str):
    __slots__ = ()


class UByte(int):
    __slots__ = ()


class UShort(int):
    __slots__ = ()


class UInt(int):
    __slots__ = ()


class ULong(int):
    __slots__ = ()


class Byte(int):
    __slots__ = ()


class Short(int):
    __slots__ = ()


class Int(int):
    __slots__ = ()


class Timestamp(int):
    """Milliseconds since the Unix epoch."""

    __slots__ = ()


class Float(float):
    __slots__ = ()


class Decimal:
    """decimal32/64/128, kept as their raw bytes (nothing here computes with them)."""

    __slots__ = ("code", "raw")

    def __init__(self, code: int, raw: bytes) -> None:
        self.code, self.raw = code, raw

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Decimal) and (self.code, self.raw) == (other.code, other.raw)

    def __hash__(self) -> int:
        return hash((self.code, self.raw))


class Raw(bytes):
    """An already encoded value, written as is."""

    __slots__ = ()


class Described:
    __slots__ = ("descriptor", "value")

    def __init__(self, descriptor: Any, value: Any) -> None:
        self.descriptor, self.value = descriptor, value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Described) and (self.descriptor, self.value) == (other.descriptor, other.value)

    def __hash__(self) -> int:
        return hash(self.descriptor)

    def __repr__(self) -> str:
        return f"Described({self.descriptor!r}, {self.value!r})"


class Array(list[Any]):
    """A homogeneous AMQP array; `code` is the element constructor (and `descriptor` for described elements)."""

    def __init__(self, code: int, items: Any = (), descriptor: Any = None) -> None:
        super().__init__(items)
        self.code = code
        self.descriptor = descriptor


# ---- constructor codes ----
NULL, TRUE, FALSE, BOOLEAN = 0x40, 0x41, 0x42, 0x56
UBYTE, USHORT, UINT, SMALLUINT, UINT0 = 0x50, 0x60, 0x70, 0x52, 0x43
ULONG, SMALLULONG, ULONG0 = 0x80, 0x53, 0x44
BYTE, SHORT, INT, SMALLINT, LONG, SMALLLONG = 0x51, 0x61, 0x71, 0x54, 0x81, 0x55
FLOAT, DOUBLE, CHAR, TIMESTAMP, UUID = 0x72, 0x82, 0x73, 0x83, 0x98
VBIN8, VBIN32, STR8, STR32, SYM8, SYM32 = 0xA0, 0xB0, 0xA1, 0xB1, 0xA3, 0xB3
LIST0, LIST8, LIST32, MAP8, MAP32, ARRAY8, ARRAY32 = 0x45, 0xC0, 0xD0, 0xC1, 0xD1, 0xE0, 0xF0
_DECIMALS = {0x74: 4, 0x84: 8, 0x94: 16}

_u8 = struct.Struct(">B").unpack_from
_u16 = struct.Struct(">H").unpack_from
_u32 = struct.Struct(">I").unpack_from
_u64 = struct.Struct(">Q").unpack_from
_i8 = struct.Struct(">b").unpack_from
_i16 = struct.Struct(">h").unpack_from
_i32 = struct.Struct(">i").unpack_from
_i64 = struct.Struct(">q").unpack_from
_f32 = struct.Struct(">f").unpack_from
_f64 = struct.Struct(">d").unpack_from
_u32x2 = struct.Struct(">II").unpack_from


# ---- decoding ----
Decoder = Callable[[bytes, int], tuple[Any, int]]


def _fixed(size: int, convert: Callable[[bytes, int], Any]) -> Decoder:
    def decode(buf: bytes, pos: int) -> tuple[Any, int]:
        if pos + size > len(buf):
            raise DecodeError("truncated value")
        return convert(buf, pos), pos + size
    return decode


def _variable(width: int, convert: Callable[[bytes], Any]) -> Decoder:
    def decode(buf: bytes, pos: int) -> tuple[Any, int]:
        size = buf[pos] if width == 1 else _u32(buf, pos)[0]
        start = pos + width
        end = start + size
        if end > len(buf):
            raise DecodeError("truncated value")
        return convert(buf[start:end]), end
    return decode


def _compound(width: int, is_map: bool) -> Decoder:
    def decode(buf: bytes, pos: int) -> tuple[Any, int]:
        if width == 1:
            size, count = buf[pos], buf[pos + 1]
        else:
            size, count = _u32x2(buf, pos)
        start = pos + width
        end = start + size
        if end > len(buf):
            raise DecodeError("truncated compound value")
        items = []
        p = start + width
        for _ in range(count):
            item, p = decode_value(buf, p)
            items.append(item)
        if p != end:
            raise DecodeError("compound value size does not match its content")
        if is_map:
            if count % 2:
                raise DecodeError("a map needs an even number of elements")
            return dict(zip(items[::2], items[1::2], strict=True)), end
        return items, end
    return decode


def _array(width: int) -> Decoder:
    def decode(buf: bytes, pos: int) -> tuple[Any, int]:
        if width == 1:
            size, count = buf[pos], buf[pos + 1]
        else:
            size, count = _u32x2(buf, pos)
        end = pos + width + size
        p = pos + 2 * width
        descriptor = None
        code = buf[p]
        p += 1
        if code == 0x00:
            descriptor, p = decode_value(buf, p)
            code = buf[p]
            p += 1
        element = _DECODERS[code]
        if element is None:
            raise DecodeError(f"unknown array element constructor {code:#x}")
        items = Array(code, descriptor=descriptor)
        for _ in range(count):
            item, p = element(buf, p)
            items.append(item if descriptor is None else Described(descriptor, item))
        if p != end:
            raise DecodeError("array size does not match its content")
        return items, end
    return decode


def _described(buf: bytes, pos: int) -> tuple[Any, int]:
    descriptor, pos = decode_value(buf, pos)
    value, pos = decode_value(buf, pos)
    return Described(descriptor, value), pos


def _const(value: Any) -> Decoder:
    return lambda buf, pos: (value, pos)


def _utf8(raw: bytes) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError as exc:
        raise DecodeError(f"invalid UTF-8 in a string: {exc}") from None


def _sym(raw: bytes) -> Symbol:
    return Symbol(raw.decode("ascii", "replace"))


_DECODERS: list[Decoder | None] = [None] * 256
_DECODERS[0x00] = _described
_DECODERS[NULL] = _const(None)
_DECODERS[TRUE] = _const(True)
_DECODERS[FALSE] = _const(False)
_DECODERS[BOOLEAN] = _fixed(1, lambda b, p: b[p] != 0)
_DECODERS[UBYTE] = _fixed(1, lambda b, p: UByte(b[p]))
_DECODERS[USHORT] = _fixed(2, lambda b, p: UShort(_u16(b, p)[0]))
_DECODERS[UINT] = _fixed(4, lambda b, p: UInt(_u32(b, p)[0]))
_DECODERS[SMALLUINT] = _fixed(1, lambda b, p: UInt(b[p]))
_DECODERS[UINT0] = _const(UInt(0))
_DECODERS[ULONG] = _fixed(8, lambda b, p: ULong(_u64(b, p)[0]))
_DECODERS[SMALLULONG] = _fixed(1, lambda b, p: ULong(b[p]))
_DECODERS[ULONG0] = _const(ULong(0))
_DECODERS[BYTE] = _fixed(1, lambda b, p: Byte(_i8(b, p)[0]))
_DECODERS[SHORT] = _fixed(2, lambda b, p: Short(_i16(b, p)[0]))
_DECODERS[INT] = _fixed(4, lambda b, p: Int(_i32(b, p)[0]))
_DECODERS[SMALLINT] = _fixed(1, lambda b, p: Int(_i8(b, p)[0]))
_DECODERS[LONG] = _fixed(8, lambda b, p: _i64(b, p)[0])
_DECODERS[SMALLLONG] = _fixed(1, lambda b, p: _i8(b, p)[0])
_DECODERS[FLOAT] = _fixed(4, lambda b, p: Float(_f32(b, p)[0]))
_DECODERS[DOUBLE] = _fixed(8, lambda b, p: _f64(b, p)[0])
_DECODERS[CHAR] = _fixed(4, lambda b, p: Char(chr(_u32(b, p)[0])))
_DECODERS[TIMESTAMP] = _fixed(8, lambda b, p: Timestamp(_i64(b, p)[0]))
_DECODERS[UUID] = _fixed(16, lambda b, p: uuid.UUID(bytes=bytes(b[p:p + 16])))
_DECODERS[VBIN8] = _variable(1, bytes)
_DECODERS[VBIN32] = _variable(4, bytes)
_DECODERS[STR8] = _variable(1, _utf8)
_DECODERS[STR32] = _variable(4, _utf8)
_DECODERS[SYM8] = _variable(1, _sym)
_DECODERS[SYM32] = _variable(4, _sym)
_DECODERS[LIST0] = lambda buf, pos: ([], pos)
_DECODERS[LIST8] = _compound(1, False)
_DECODERS[LIST32] = _compound(4, False)
_DECODERS[MAP8] = _compound(1, True)
_DECODERS[MAP32] = _compound(4, True)
_DECODERS[ARRAY8] = _array(1)
_DECODERS[ARRAY32] = _array(4)


def _decimal(code: int, size: int) -> Decoder:
    return _fixed(size, lambda b, p: Decimal(code, bytes(b[p:p + size])))


for _code, _size in _DECIMALS.items():
    _DECODERS[_code] = _decimal(_code, _size)


_FIXED_WIDTH = {0x4: 0, 0x5: 1, 0x6: 2, 0x7: 4, 0x8: 8, 0x9: 16}
"""Constructor subcategory (high nibble) → width of a fixed-width value; 0xA-0xF have a size field of 1 or 4 bytes."""


def value_end(buf: bytes, pos: int = 0) -> int:
    """Where the value starting at `pos` ends, found from its constructor and size fields without decoding it (how a
    broker steps over bodies it only stores)."""
    try:
        code = buf[pos]
        if code == 0x00:
            return value_end(buf, value_end(buf, pos + 1))
        if _DECODERS[code] is None:
            raise DecodeError(f"unknown constructor {code:#x} at byte {pos}")
        category = code >> 4
        width = _FIXED_WIDTH.get(category)
        if width is not None:
            end = pos + 1 + width
        elif category in (0xA, 0xC, 0xE):
            end = pos + 2 + buf[pos + 1]
        else:
            end = pos + 5 + _u32(buf, pos + 1)[0]
    except (IndexError, struct.error):
        raise DecodeError(f"truncated value at byte {pos}") from None
    if end > len(buf):
        raise DecodeError(f"truncated value at byte {pos}")
    return end


def decode_value(buf: bytes, pos: int = 0) -> tuple[Any, int]:
    """One value starting at `pos`; returns it and the position after it."""
    try:
        decoder = _DECODERS[buf[pos]]
    except IndexError:
        raise DecodeError("truncated value") from None
    if decoder is None:
        raise DecodeError(f"unknown constructor {buf[pos]:#x} at byte {pos}")
    try:
        return decoder(buf, pos + 1)
    except (IndexError, struct.error):
        raise DecodeError(f"truncated value at byte {pos}") from None


# ---- encoding ----
_p8, _p16, _p32, _p64 = (struct.Struct(f">{c}").pack for c in "BHIQ")
_ps8, _ps16, _ps32, _ps64 = (struct.Struct(f">{c}").pack for c in "bhiq")
_pf32, _pf64 = struct.Struct(">f").pack, struct.Struct(">d").pack
_pcompound8 = struct.Struct(">BBB").pack
_pcompound32 = struct.Struct(">BII").pack


def _enc_null(value: Any, out: bytearray) -> None:
    out.append(NULL)


def _enc_bool(value: bool, out: bytearray) -> None:
    out.append(TRUE if value else FALSE)


def _enc_long(value: int, out: bytearray) -> None:
    if -128 <= value <= 127:
        out += bytes((SMALLLONG, value & 0xFF))
    else:
        out.append(LONG)
        out += _ps64(value)


def _enc_ulong(value: int, out: bytearray) -> None:
    if value == 0:
        out.append(ULONG0)
    elif value < 256:
        out += bytes((SMALLULONG, value))
    else:
        out.append(ULONG)
        out += _p64(value)


def uint_bytes(value: int) -> bytes:
    """The smallest encoding of a uint (what the hand-encoded frames and sections use)."""
    if value == 0:
        return b"\x43"
    if value < 256:
        return b"\x52%c" % value
    return b"\x70" + _p32(value)


def _enc_uint(value: int, out: bytearray) -> None:
    out += uint_bytes(value)


def _enc_int(value: int, out: bytearray) -> None:
    if -128 <= value <= 127:
        out += bytes((SMALLINT, value & 0xFF))
    else:
        out.append(INT)
        out += _ps32(value)


def _simple(code: int, pack: Callable[[Any], bytes]) -> Callable[[Any, bytearray], None]:
    def encode(value: Any, out: bytearray) -> None:
        out.append(code)
        out += pack(value)
    return encode


def _vbin(code8: int, code32: int) -> Callable[[bytes, bytearray], None]:
    def encode(raw: bytes, out: bytearray) -> None:
        if len(raw) < 256:
            out += bytes((code8, len(raw)))
        else:
            out.append(code32)
            out += _p32(len(raw))
        out += raw
    return encode


_enc_binary = _vbin(VBIN8, VBIN32)
_enc_str_raw = _vbin(STR8, STR32)
_enc_sym_raw = _vbin(SYM8, SYM32)


def _enc_str(value: str, out: bytearray) -> None:
    _enc_str_raw(value.encode(), out)


def _enc_symbol(value: str, out: bytearray) -> None:
    _enc_sym_raw(value.encode("ascii"), out)


def _compound_header(code8: int, code32: int, body: bytearray, count: int, out: bytearray) -> None:
    if len(body) + 1 < 256 and count < 256:
        out += _pcompound8(code8, len(body) + 1, count)
    else:
        out += _pcompound32(code32, len(body) + 4, count)
    out += body


def map_header(body: bytearray, count: int, out: bytearray) -> None:
    """Append a map of `count` already encoded keys and values."""
    _compound_header(MAP8, MAP32, body, count, out)


def _enc_list(value: list[Any], out: bytearray) -> None:
    if not value:
        out.append(LIST0)
        return
    body = bytearray()
    for item in value:
        encode_value(item, body)
    _compound_header(LIST8, LIST32, body, len(value), out)


def _enc_map(value: dict[Any, Any], out: bytearray) -> None:
    body = bytearray()
    for key, item in value.items():
        encode_value(key, body)
        encode_value(item, body)
    _compound_header(MAP8, MAP32, body, 2 * len(value), out)


def _enc_described(value: Described, out: bytearray) -> None:
    out.append(0x00)
    encode_value(value.descriptor, out)
    encode_value(value.value, out)


def _enc_decimal(value: Decimal, out: bytearray) -> None:
    out.append(value.code)
    out += value.raw


# Array elements are written without their constructor, in the fixed-width form of their code.
_ARRAY_ELEMENT: dict[int, Callable[[Any], bytes]] = {
    BOOLEAN: lambda v: b"\x01" if v else b"\x00", UBYTE: _p8, USHORT: _p16, UINT: _p32, ULONG: _p64,
    BYTE: _ps8, SHORT: _ps16, INT: _ps32, LONG: _ps64, FLOAT: _pf32, DOUBLE: _pf64, TIMESTAMP: _ps64,
    CHAR: lambda v: _p32(ord(v)), UUID: lambda v: v.bytes,
    VBIN32: lambda v: _p32(len(v)) + v, STR32: lambda v: _p32(len(v.encode())) + v.encode(),
    SYM32: lambda v: _p32(len(v)) + v.encode("ascii"),
}
_WIDE = {TRUE: BOOLEAN, FALSE: BOOLEAN, SMALLUINT: UINT, UINT0: UINT, SMALLULONG: ULONG, ULONG0: ULONG,
         SMALLINT: INT, SMALLLONG: LONG, VBIN8: VBIN32, STR8: STR32, SYM8: SYM32, LIST0: LIST32, LIST8: LIST32,
         MAP8: MAP32}


def _enc_array(value: Array, out: bytearray) -> None:
    code = _WIDE.get(value.code, value.code)
    body = bytearray()
    if value.descriptor is not None:
        body.append(0x00)
        encode_value(value.descriptor, body)
    body.append(code)
    element = _ARRAY_ELEMENT.get(code)
    for item in value:
        item = item.value if isinstance(item, Described) else item
        if element is not None:
            body += element(item)
        else:  # compound elements: the 32-bit form, without the constructor written once above
            inner = bytearray()
            pairs = list(item.items()) if isinstance(item, dict) else [(v,) for v in item]
            for pair in pairs:
                for part in pair:
                    encode_value(part, inner)
            body += _p32(len(inner) + 4) + _p32(len(item) * (2 if isinstance(item, dict) else 1)) + inner
    out.append(ARRAY32)
    out += _p32(len(body) + 4) + _p32(len(value))
    out += body


_ENCODERS: dict[type, Callable[[Any, bytearray], None]] = {
    type(None): _enc_null, bool: _enc_bool, int: _enc_long, float: _simple(DOUBLE, _pf64),
    str: _enc_str, bytes: _enc_binary, bytearray: lambda v, o: _enc_binary(bytes(v), o),
    memoryview: lambda v, o: _enc_binary(bytes(v), o),
    uuid.UUID: _simple(UUID, lambda v: v.bytes), list: _enc_list, tuple: _enc_list, dict: _enc_map,
    Symbol: _enc_symbol, Char: _simple(CHAR, lambda v: _p32(ord(v))),
    UByte: _simple(UBYTE, _p8), UShort: _simple(USHORT, _p16), UInt: _enc_uint, ULong: _enc_ulong,
    Byte: _simple(BYTE, _ps8), Short: _simple(SHORT, _ps16), Int: _enc_int,
    Timestamp: _simple(TIMESTAMP, _ps64), Float: _simple(FLOAT, _pf32), Decimal: _enc_decimal,
    Described: _enc_described, Array: _enc_array, Raw: lambda v, o: o.extend(v),
}


def encode_value(value: Any, out: bytearray) -> None:
    """Append the encoding of `value` to `out`."""
    encoder = _ENCODERS.get(type(value))
    if encoder is None:
        raise TypeError(f"cannot encode {type(value).__name__} as an AMQP value")
    encoder(value, out)


def encode(value: Any) -> bytes:
    out = bytearray()
    encode_value(value, out)
    return bytes(out)


def described_list(code: int, fields: list[Any]) -> bytes:
    """A described list (performatives, sections, outcomes) with trailing nulls trimmed, as the spec allows."""
    end = len(fields)
    while end and fields[end - 1] is None:
        end -= 1
    out = bytearray(b"\x00")
    _enc_ulong(code, out)
    _enc_list(fields[:end], out)
    return bytes(out)
