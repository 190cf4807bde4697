"""JSON text read into typed structs with the errors the Rust assistant's serde_json gives, word
for word and position for position ("missing field `size` at line 1 column 22"), so the
`tool_args` frames, and what the model is told, are the Rust build's.

It follows serde_json's streaming deserializer: the same checks in the same order, the same
positions (byte offsets), the same messages; for the types the assistant reads: structs (with or
without `deny_unknown_fields`, fields with defaults), `String`, `u64`, `u32`, `Vec<T>`, `Option<T>` and
`Value` (any JSON).
"""

import json
from dataclasses import dataclass
from typing import Any, Optional


class Error(Exception):
    """serde_json's error: its message, and its position once known."""

    def __init__(self, message: str, line: int = 0, column: int = 0):
        super().__init__(message)
        self.message, self.line, self.column = message, line, column

    def __str__(self) -> str:
        if self.line == 0:
            return self.message
        return f"{self.message} at line {self.line} column {self.column}"


EOF_LIST = "EOF while parsing a list"
EOF_OBJECT = "EOF while parsing an object"
EOF_STRING = "EOF while parsing a string"
EOF_VALUE = "EOF while parsing a value"
EXPECTED_COLON = "expected `:`"
EXPECTED_LIST_COMMA_OR_END = "expected `,` or `]`"
EXPECTED_OBJECT_COMMA_OR_END = "expected `,` or `}`"
EXPECTED_IDENT = "expected ident"
EXPECTED_VALUE = "expected value"
INVALID_ESCAPE = "invalid escape"
INVALID_NUMBER = "invalid number"
INVALID_UNICODE = "invalid unicode code point"
CONTROL_CHARACTER = "control character (\\u0000-\\u001F) found while parsing a string"
KEY_MUST_BE_A_STRING = "key must be a string"
LONE_SURROGATE = "lone leading surrogate in hex escape"
TRAILING_CHARACTERS = "trailing characters"
TRAILING_COMMA = "trailing comma"
RECURSION_LIMIT = "recursion limit exceeded"


# The types the assistant reads.
class Str:
    expecting = "a string"


class U64:
    expecting = "u64"
    bits = 64


class U32:
    expecting = "u32"
    bits = 32


class Value:
    expecting = "any valid JSON value"


@dataclass
class Seq:
    item: Any
    expecting = "a sequence"


@dataclass
class Opt:
    inner: Any


@dataclass
class Field:
    name: str
    type: Any
    default: Any = None
    has_default: bool = False


@dataclass
class Struct:
    name: str
    fields: list
    deny_unknown: bool = False

    @property
    def expecting(self) -> str:
        return f"struct {self.name}"


def from_str(kind: Any, text: str) -> Any:
    """`serde_json::from_str::<kind>(text)`: a dict for a struct, or raises `Error`."""
    reader = _Reader(text.encode("utf-8"))
    value = reader.deserialize(kind)
    reader.end()
    return value


def _rust_float(value: float) -> str:
    """A float as serde_json's `Unexpected::Float` (zmij) writes it: Python's shortest repr, but
    `1e-6` not `1e-06`, and `0.00001` not `1e-05`."""
    text = repr(value)
    if "e" not in text:
        return text
    mantissa, exponent = text.split("e")
    power = int(exponent)
    if power == -5:
        sign = "-" if mantissa.startswith("-") else ""
        return f"{sign}0.0000{mantissa.lstrip('-').replace('.', '')}"
    return f"{mantissa}e{'+' if power > 0 else '-'}{abs(power)}"


def debug_str(text: str) -> str:
    """A string as Rust's `{:?}` writes it."""
    escapes = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t", "\0": "\\0"}
    out = []
    for char in text:
        if char in escapes:
            out.append(escapes[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{{{ord(char):x}}}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _backquoted(names: list) -> str:
    if not names:
        return "there are no fields"
    if len(names) == 1:
        return f"expected `{names[0]}`"
    if len(names) == 2:
        return f"expected `{names[0]}` or `{names[1]}`"
    return "expected one of " + ", ".join(f"`{n}`" for n in names)


class _Reader:
    def __init__(self, data: bytes):
        self.data, self.index, self.depth = data, 0, 128

    # Positions, as serde_json's SliceRead computes them.
    def _position(self, i: int) -> tuple:
        start = self.data.rfind(b"\n", 0, i) + 1
        return self.data.count(b"\n", 0, start) + 1, i - start

    def error(self, message: str) -> Error:
        return Error(message, *self._position(self.index))

    def peek_error(self, message: str) -> Error:
        return Error(message, *self._position(min(len(self.data), self.index + 1)))

    def fix(self, error: Error) -> Error:
        if error.line == 0:
            error.line, error.column = self._position(self.index)
        return error

    def peek(self) -> Optional[int]:
        return self.data[self.index] if self.index < len(self.data) else None

    def whitespace(self) -> Optional[int]:
        while self.index < len(self.data) and self.data[self.index] in b" \n\t\r":
            self.index += 1
        return self.peek()

    def end(self) -> None:
        if self.whitespace() is not None:
            raise self.peek_error(TRAILING_CHARACTERS)

    # Scalars.
    def ident(self, rest: bytes) -> None:
        for expected in rest:
            if self.index >= len(self.data):
                raise self.error(EOF_VALUE)
            got = self.data[self.index]
            self.index += 1
            if got != expected:
                raise self.error(EXPECTED_IDENT)

    def string(self, ignored: bool = False) -> str:
        """After the opening quote: the string up to its closing quote (an ignored one is checked
        less, and its control characters are reported where they are, not after)."""
        out = bytearray()
        while True:
            if self.index >= len(self.data):
                raise self.error(EOF_STRING)
            byte = self.data[self.index]
            self.index += 1
            if byte == 0x22:
                return out.decode("utf-8", errors="replace")
            if byte == 0x5C:
                if self.index >= len(self.data):
                    raise self.error(EOF_STRING)
                escape = self.data[self.index]
                self.index += 1
                simple = {0x22: b'"', 0x5C: b"\\", 0x2F: b"/", 0x62: b"\b", 0x66: b"\f", 0x6E: b"\n", 0x72: b"\r", 0x74: b"\t"}
                if escape in simple:
                    out += simple[escape]
                elif escape == 0x75:
                    out += self.unicode_escape(ignored)
                else:
                    raise self.error(INVALID_ESCAPE)
            elif byte < 0x20:
                if ignored:
                    self.index -= 1
                raise self.error(CONTROL_CHARACTER)
            else:
                out.append(byte)

    def hex4(self) -> int:
        digits = self.data[self.index : self.index + 4]
        if len(digits) < 4:
            self.index = len(self.data)
            raise self.error(EOF_STRING)
        self.index += 4
        if any(chr(digit) not in "0123456789abcdefABCDEF" for digit in digits):
            raise self.error(INVALID_ESCAPE)
        return int(digits, 16)

    def unicode_escape(self, ignored: bool = False) -> bytes:
        first = self.hex4()
        if ignored:
            return b"?"
        if 0xDC00 <= first <= 0xDFFF:
            raise self.error(LONE_SURROGATE)
        if 0xD800 <= first <= 0xDBFF:
            if self.data[self.index : self.index + 2] != b"\\u":
                raise self.peek_error("unexpected end of hex escape")
            self.index += 2
            second = self.hex4()
            if not 0xDC00 <= second <= 0xDFFF:
                raise self.error(LONE_SURROGATE)
            return chr(0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)).encode()
        return chr(first).encode("utf-8", errors="surrogatepass")

    def number(self, positive: bool, ignored: bool = False) -> Any:
        """After a '-' (when not `positive`): an int, or a float when it has a fraction, an
        exponent or is past 64 bits."""
        start = self.index
        peek = self.peek()
        if peek is None:
            raise self.peek_error(INVALID_NUMBER) if ignored else self.error(EOF_VALUE)
        if peek == 0x30:
            self.index += 1
            nxt = self.peek()
            if nxt is not None and 0x30 <= nxt <= 0x39:
                raise self.peek_error(INVALID_NUMBER)
        elif 0x31 <= peek <= 0x39:
            while (p := self.peek()) is not None and 0x30 <= p <= 0x39:
                self.index += 1
        else:
            raise self.peek_error(INVALID_NUMBER)
        is_float = False
        if self.peek() == 0x2E:
            is_float = True
            self.index += 1
            if not ((p := self.peek()) is not None and 0x30 <= p <= 0x39):
                if p is None and not ignored:
                    raise self.error(EOF_VALUE)
                raise self.peek_error(INVALID_NUMBER)
            while (p := self.peek()) is not None and 0x30 <= p <= 0x39:
                self.index += 1
        if self.peek() in (0x65, 0x45):
            is_float = True
            self.index += 1
            if self.peek() in (0x2B, 0x2D):
                self.index += 1
            if not ((p := self.peek()) is not None and 0x30 <= p <= 0x39):
                if p is None and not ignored:
                    raise self.error(EOF_VALUE)
                raise self.peek_error(INVALID_NUMBER)
            while (p := self.peek()) is not None and 0x30 <= p <= 0x39:
                self.index += 1
        text = self.data[start : self.index].decode()
        if not is_float:
            value = int(text)
            if positive and value < 2**64:
                return value
            if not positive and value <= 2**63:
                return -value
        number = float(text)
        return number if positive else -number

    def unexpected(self, value: Any) -> str:
        if value is None:
            return "null"
        if isinstance(value, bool):
            return f"boolean `{'true' if value else 'false'}`"
        if isinstance(value, int):
            return f"integer `{value}`"
        if isinstance(value, float):
            return f"floating point `{_rust_float(value)}`"
        if isinstance(value, str):
            return f"string {debug_str(value)}"
        return str(value)

    def peek_invalid_type(self, expecting: str) -> Error:
        peek = self.peek()
        if peek == 0x6E:
            self.index += 1
            self.ident(b"ull")
            found = "null"
        elif peek in (0x74, 0x66):
            self.index += 1
            self.ident(b"rue" if peek == 0x74 else b"alse")
            found = self.unexpected(peek == 0x74)
        elif peek == 0x2D:
            self.index += 1
            found = self.unexpected(self.number(False))
        elif peek is not None and 0x30 <= peek <= 0x39:
            found = self.unexpected(self.number(True))
        elif peek == 0x22:
            self.index += 1
            found = self.unexpected(self.string())
        elif peek == 0x5B:
            found = "sequence"
        elif peek == 0x7B:
            found = "map"
        else:
            raise self.peek_error(EXPECTED_VALUE)
        return self.fix(Error(f"invalid type: {found}, expected {expecting}"))

    # Typed values.
    def deserialize(self, kind: Any) -> Any:
        if isinstance(kind, Opt):
            peek = self.whitespace()
            if peek == 0x6E:
                self.index += 1
                self.ident(b"ull")
                return None
            return self.deserialize(kind.inner)
        if kind is Value:
            return self.any()
        peek = self.whitespace()
        if peek is None:
            raise self.peek_error(EOF_VALUE)
        if kind is Str:
            if peek != 0x22:
                raise self.peek_invalid_type(Str.expecting)
            self.index += 1
            return self.string()
        if kind is U64 or kind is U32:
            if peek == 0x2D:
                self.index += 1
                value = self.number(False)
            elif 0x30 <= peek <= 0x39:
                value = self.number(True)
            else:
                raise self.peek_invalid_type(kind.expecting)
            if isinstance(value, float):
                raise self.fix(Error(f"invalid type: {self.unexpected(value)}, expected {kind.expecting}"))
            if value < 0 or value >= 2**kind.bits:
                raise self.fix(Error(f"invalid value: {self.unexpected(value)}, expected {kind.expecting}"))
            return value
        if isinstance(kind, Seq):
            if peek != 0x5B:
                raise self.peek_invalid_type(kind.expecting)
            return self.nested(lambda: self.seq(lambda: self.deserialize(kind.item)))
        if isinstance(kind, Struct):
            if peek == 0x7B:
                return self.nested(lambda: self.struct_map(kind))
            if peek == 0x5B:
                return self.nested(lambda: self.struct_seq(kind))
            raise self.peek_invalid_type(kind.expecting)
        raise TypeError(f"no deserializer for {kind!r}")

    def nested(self, body: Any) -> Any:
        self.depth -= 1
        if self.depth == 0:
            raise self.error(RECURSION_LIMIT)
        self.index += 1
        try:
            return body()
        finally:
            self.depth += 1

    def seq(self, element: Any, ignored: bool = False) -> list:
        """After '[': the elements and the ']', as serde_json's SeqAccess and end_seq."""
        items: list = []
        access = _SeqAccess(self, ignored)
        error = None
        try:
            while access.has_next():
                items.append(element())
        except Error as failed:
            error = failed
        end = self.end_seq()
        if error is not None:
            raise self.fix(error)
        if end is not None:
            raise self.fix(end)
        return items

    def end_seq(self) -> Optional[Error]:
        peek = self.whitespace()
        if peek == 0x5D:
            self.index += 1
            return None
        if peek == 0x2C:
            self.index += 1
            if self.whitespace() == 0x5D:
                return self.peek_error(TRAILING_COMMA)
            return self.peek_error(TRAILING_CHARACTERS)
        if peek is None:
            return self.peek_error(EOF_LIST)
        return self.peek_error(TRAILING_CHARACTERS)

    def end_map(self) -> Optional[Error]:
        peek = self.whitespace()
        if peek == 0x7D:
            self.index += 1
            return None
        if peek == 0x2C:
            return self.peek_error(TRAILING_COMMA)
        if peek is None:
            return self.peek_error(EOF_OBJECT)
        return self.peek_error(TRAILING_CHARACTERS)

    def map_entries(self, value: Any, ignored: bool = False) -> None:
        """After '{': each key (a str) and `value(key)` for its value, up to (not past) '}'."""
        first = True
        while True:
            peek = self.whitespace()
            if peek == 0x7D:
                return
            if peek == 0x2C and not first:
                self.index += 1
                peek = self.whitespace()
            elif peek is None:
                raise self.peek_error(EOF_OBJECT)
            elif first:
                first = False
            else:
                raise self.peek_error(EXPECTED_OBJECT_COMMA_OR_END)
            if peek == 0x22:
                self.index += 1
                key = self.string()
            elif peek == 0x7D:
                raise self.peek_error(KEY_MUST_BE_A_STRING if ignored else TRAILING_COMMA)
            elif peek is None:
                raise self.peek_error(EOF_VALUE)
            else:
                raise self.peek_error(KEY_MUST_BE_A_STRING)
            value(key)

    def colon(self) -> None:
        peek = self.whitespace()
        if peek == 0x3A:
            self.index += 1
        elif peek is None:
            raise self.peek_error(EOF_OBJECT)
        else:
            raise self.peek_error(EXPECTED_COLON)

    def struct_map(self, kind: Struct) -> dict:
        fields = {f.name: f for f in kind.fields}
        found: dict = {}
        error = None

        def value(key: str) -> None:
            field = fields.get(key)
            if field is None:
                if kind.deny_unknown:
                    raise Error(f"unknown field `{key}`, {_backquoted(list(fields))}")
                self.colon()
                self.any(ignored=True)
                return
            if key in found:
                raise Error(f"duplicate field `{key}`")
            self.colon()
            found[key] = self.deserialize(field.type)

        try:
            self.map_entries(value)
            result = self.complete(kind, found)
        except Error as failed:
            error = failed
        end = self.end_map()
        if error is not None:
            raise self.fix(error)
        if end is not None:
            raise self.fix(end)
        return result

    def complete(self, kind: Struct, found: dict) -> dict:
        for field in kind.fields:
            if field.name in found:
                continue
            if field.has_default:
                found[field.name] = field.default
            elif isinstance(field.type, Opt):
                found[field.name] = None
            else:
                raise Error(f"missing field `{field.name}`")
        return {f.name: found[f.name] for f in kind.fields}

    def struct_seq(self, kind: Struct) -> dict:
        """A struct given as an array of its fields in order, which serde accepts too."""
        access, values, error = _SeqAccess(self), {}, None
        try:
            for n, field in enumerate(kind.fields):
                if access.has_next():
                    values[field.name] = self.deserialize(field.type)
                elif field.has_default:
                    values[field.name] = field.default
                else:
                    count = len(kind.fields)
                    plural = "" if count == 1 else "s"
                    raise Error(f"invalid length {n}, expected struct {kind.name} with {count} element{plural}")
        except Error as failed:
            error = failed
        end = self.end_seq()
        if error is not None:
            raise self.fix(error)
        if end is not None:
            raise self.fix(end)
        return values

    def any(self, ignored: bool = False) -> Any:
        """Any JSON value (`Value`, or an ignored field's: serde_json skips those with other
        words for a trailing comma)."""
        peek = self.whitespace()
        if peek is None:
            raise self.peek_error(EOF_VALUE)
        if peek == 0x6E:
            self.index += 1
            self.ident(b"ull")
            return None
        if peek == 0x74:
            self.index += 1
            self.ident(b"rue")
            return True
        if peek == 0x66:
            self.index += 1
            self.ident(b"alse")
            return False
        if peek == 0x2D:
            self.index += 1
            return self.number(False, ignored)
        if 0x30 <= peek <= 0x39:
            return self.number(True, ignored)
        if peek == 0x22:
            self.index += 1
            return self.string(ignored)
        if peek == 0x5B:
            return self.nested(lambda: self.seq(lambda: self.any(ignored), ignored))
        if peek == 0x7B:
            return self.nested(lambda: self.any_map(ignored))
        raise self.peek_error(EXPECTED_VALUE)

    def any_map(self, ignored: bool = False) -> dict:
        result: dict = {}
        error = None

        def value(key: str) -> None:
            self.colon()
            result[key] = self.any(ignored)

        try:
            self.map_entries(value, ignored)
        except Error as failed:
            error = failed
        end = self.end_map()
        if error is not None:
            raise self.fix(error)
        if end is not None:
            raise self.fix(end)
        return result


class _SeqAccess:
    """serde_json's SeqAccess: whether another element follows, past its comma."""

    def __init__(self, reader: _Reader, ignored: bool = False):
        self.reader, self.first, self.ignored = reader, True, ignored

    def has_next(self) -> bool:
        r = self.reader
        peek = r.whitespace()
        if peek == 0x5D:
            return False
        if peek == 0x2C and not self.first:
            r.index += 1
            peek = r.whitespace()
        elif peek is None:
            raise r.peek_error(EOF_LIST)
        elif self.first:
            self.first = False
        else:
            raise r.peek_error(EXPECTED_LIST_COMMA_OR_END)
        if peek == 0x5D:
            raise r.peek_error(EXPECTED_VALUE if self.ignored else TRAILING_COMMA)
        if peek is None:
            raise r.peek_error(EOF_VALUE)
        return True


def dumps(value: Any) -> str:
    """What `serde_json::to_string` writes for a `Value`: compact, UTF-8 as is."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
