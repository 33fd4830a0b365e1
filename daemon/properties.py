"""Java ``.properties`` parsing, as ``java.util.Properties.load`` reads it.

This module owns the syntax only; what the keys mean lives in
``daemon.settings`` and ``daemon.config``. The rules, in the order they apply:

- Bytes are decoded as ISO-8859-1 (every byte is a character, so decoding never
  fails); text passed as ``str`` is used as is.
- Lines end at ``\\n``, ``\\r`` or ``\\r\\n`` and nowhere else (``str.splitlines``
  would also split at ``\\x85`` and friends, which Java does not).
- Leading whitespace (space, tab, form feed) is skipped. A line that is then
  empty is skipped; one starting with ``#`` or ``!`` is a comment, and a comment
  never continues onto the next line.
- A line ending in an odd number of backslashes continues on the next line,
  whose leading whitespace is dropped; the last backslash is removed.
- The key ends at the first unescaped ``=``, ``:`` or whitespace. Whitespace
  around the separator is skipped, and one ``=`` or ``:`` after whitespace is
  part of the separator. The value keeps its trailing whitespace.
- In keys and values ``\\t \\n \\r \\f`` and ``\\uXXXX`` are escapes; a backslash
  before any other character yields that character (so ``\\=``, ``\\:``,
  ``\\ `` and ``\\\\`` are literal). A malformed ``\\u`` escape is the only
  syntax error.
- The last duplicate of a key wins.

Where we are stricter than Java: a ``\\u`` escape that leaves a lone UTF-16
surrogate is an error (Java would keep it; Python could not encode it later
when the value reaches a log line or a child's argv). Surrogate pairs written
as two escapes become one character, as they do in Java.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from daemon.errors import ConfigError

__all__ = [
    "PropertiesSyntaxError",
    "PropertyEntry",
    "parse_properties",
    "parse_properties_with_lines",
    "parse_property_entries",
]

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_WHITESPACE = " \t\f"
_SEPARATORS = "=:"
_SIMPLE_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


class PropertiesSyntaxError(ConfigError):
    """A malformed properties file; ``line`` is the 1-based line it starts on."""

    def __init__(self, message: str, source: str, line: int) -> None:
        super().__init__(f"{source} line {line}: {message}")
        self.source = source
        self.line = line


class PropertyEntry(NamedTuple):
    """One key/value pair in file order; ``line`` is where its logical line starts."""

    key: str
    value: str
    line: int


def parse_properties(data: bytes | str, source: str = "<properties>") -> dict[str, str]:
    """The file's keys and values; the last duplicate wins."""
    return {entry.key: entry.value for entry in parse_property_entries(data, source)}


def parse_properties_with_lines(
    data: bytes | str, source: str = "<properties>"
) -> dict[str, tuple[str, int]]:
    """Like ``parse_properties`` but each value comes with the line it was set on."""
    return {entry.key: (entry.value, entry.line) for entry in parse_property_entries(data, source)}


def parse_property_entries(data: bytes | str, source: str = "<properties>") -> list[PropertyEntry]:
    """Every key/value pair in file order, duplicates included.

    Raises ``PropertiesSyntaxError`` (naming ``source`` and the line) for a
    malformed ``\\u`` escape or a lone surrogate, and nothing else.
    """
    text = data.decode("iso-8859-1") if isinstance(data, bytes) else data
    entries = []
    for line_number, logical in _logical_lines(text):
        key_raw, value_raw = _split_key_value(logical)
        key = _unescape(key_raw, source, line_number)
        value = _unescape(value_raw, source, line_number)
        entries.append(PropertyEntry(key, value, line_number))
    return entries


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """Join continued lines, drop blanks and comments; pair each with its first line number."""
    physical = _LINE_BREAK.split(text)
    result: list[tuple[int, str]] = []
    index = 0
    while index < len(physical):
        start = index
        line = physical[index].lstrip(_WHITESPACE)
        index += 1
        if not line or line[0] in "#!":
            continue
        parts = []
        while _ends_with_odd_backslashes(line):
            parts.append(line[:-1])
            if index >= len(physical):
                # Java drops a trailing continuation backslash at end of input.
                line = ""
                break
            line = physical[index].lstrip(_WHITESPACE)
            index += 1
        parts.append(line)
        joined = "".join(parts)
        # A line that was only a continuation backslash holds nothing.
        if joined:
            result.append((start + 1, joined))
    return result


def _ends_with_odd_backslashes(line: str) -> bool:
    count = len(line) - len(line.rstrip("\\"))
    return count % 2 == 1


def _split_key_value(line: str) -> tuple[str, str]:
    """Split a logical line into raw (still escaped) key and value text."""
    length = len(line)
    key_end = length
    value_start = length
    has_separator = False
    escaped = False
    for position, char in enumerate(line):
        if not escaped and char in _SEPARATORS:
            key_end, value_start, has_separator = position, position + 1, True
            break
        if not escaped and char in _WHITESPACE:
            key_end, value_start = position, position + 1
            break
        escaped = char == "\\" and not escaped
    while value_start < length:
        char = line[value_start]
        if char not in _WHITESPACE:
            if has_separator or char not in _SEPARATORS:
                break
            has_separator = True
        value_start += 1
    return line[:key_end], line[value_start:]


def _unescape(raw: str, source: str, line: int) -> str:
    if "\\" not in raw:
        return _join_surrogates(raw, source, line)
    out: list[str] = []
    position = 0
    length = len(raw)
    while position < length:
        char = raw[position]
        position += 1
        if char != "\\":
            out.append(char)
            continue
        if position >= length:
            # Cannot happen for text that came through _logical_lines (an odd
            # trailing backslash is a continuation); dropped, as Java would.
            break
        char = raw[position]
        position += 1
        if char == "u":
            digits = raw[position : position + 4]
            if len(digits) != 4 or not _HEX_DIGITS.issuperset(digits):
                shown = digits.encode("unicode_escape").decode("ascii")
                raise PropertiesSyntaxError(
                    f"malformed escape '\\u{shown}': expected \\u and 4 hex digits "
                    "(write a literal backslash as \\\\)",
                    source,
                    line,
                )
            out.append(chr(int(digits, 16)))
            position += 4
        else:
            out.append(_SIMPLE_ESCAPES.get(char, char))
    return _join_surrogates("".join(out), source, line)


def _join_surrogates(text: str, source: str, line: int) -> str:
    """Combine UTF-16 surrogate pairs from ``\\u`` escapes; reject lone halves."""
    if not any("\ud800" <= char <= "\udfff" for char in text):
        return text
    out: list[str] = []
    position = 0
    while position < len(text):
        char = text[position]
        following = text[position + 1] if position + 1 < len(text) else ""
        if "\ud800" <= char <= "\udbff" and "\udc00" <= following <= "\udfff":
            code = 0x10000 + ((ord(char) - 0xD800) << 10) + (ord(following) - 0xDC00)
            out.append(chr(code))
            position += 2
            continue
        if "\ud800" <= char <= "\udfff":
            raise PropertiesSyntaxError(
                f"\\u{ord(char):04X} is half of a UTF-16 surrogate pair with no other half",
                source,
                line,
            )
        out.append(char)
        position += 1
    return "".join(out)
