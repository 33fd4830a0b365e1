"""Fuzzing the properties file: the parser raises only PropertiesSyntaxError, and reading the
parsed keys into a Config raises only ConfigError, whatever the file holds.

Inputs: bytes of any kind; text of any kind, lone surrogates included; text built from the
format's own tokens (separators, escapes with good and bad hex, continuation backslashes,
comments, every line ending, ``\\x85``); and files that set real keys to hostile values (huge
numbers, NaN, non-ASCII digits, unbalanced quotes, bad URLs). The number of inputs is in each
test's settings (``KCL_FUZZ_SCALE`` multiplies them).
"""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from daemon.config import Config, config_from_properties
from daemon.errors import ConfigError
from daemon.properties import PropertiesSyntaxError, parse_properties, parse_property_entries
from daemon.settings import SETTINGS
from tests.faults.fuzzing import fuzz_settings

TOKENS = ["key", "executableName", "=", ":", " ", "\t", "\f", "\\", "\\\\", "\\u", "\\u0041",
          "\\uD83D", "\\uDE00", "\\uZZZZ", "\\u12", "#", "!", "\n", "\r", "\r\n", "\x85", "é",
          "\u2028", "\x00", "value", "\\n", "\\t", "0", "ffff"]  # fmt: skip


def check_entries(data: bytes | str) -> None:
    try:
        entries = parse_property_entries(data)
    except PropertiesSyntaxError as error:
        assert error.line >= 1
        return
    for entry in entries:
        assert type(entry.key) is str and type(entry.value) is str
        assert entry.line >= 1
        # Whatever was parsed can reach a log line or a child's argv: it must encode.
        (entry.key + entry.value).encode("utf-8")


@fuzz_settings(1000)
@given(st.binary(max_size=2000))
def test_any_bytes_parse_or_raise_a_syntax_error(data: bytes) -> None:
    check_entries(data)


@fuzz_settings(500)
@given(st.text(st.characters(codec=None, exclude_categories=()), max_size=300))
def test_any_text_parses_or_raises_a_syntax_error_even_with_lone_surrogates(text: str) -> None:
    check_entries(text)


def token_text(seed: int, most: int) -> str:
    rng = random.Random(seed)
    return "".join(rng.choice(TOKENS) for _ in range(rng.randint(0, most)))


@fuzz_settings(1000)
@given(st.integers(0, 2**64).map(lambda seed: token_text(seed, 60)))
def test_text_made_of_the_formats_own_tokens_parses_or_raises_a_syntax_error(text: str) -> None:
    check_entries(text)
    check_entries(text.encode("utf-8", "surrogatepass"))


@fuzz_settings(300)
@given(st.integers(0, 2**64).map(lambda seed: token_text(seed, 40)))
def test_parse_properties_keeps_the_last_value_of_each_key(text: str) -> None:
    try:
        parsed = parse_properties(text)
    except PropertiesSyntaxError:
        return
    entries = parse_property_entries(text)
    assert parsed == {entry.key: entry.value for entry in entries}


HOSTILE_VALUES = ["", " ", "0", "-1", "1" * 5000, "9" * 40, "1e999", "nan", "NaN", "inf", "-0",
    "+5", "\u0663", "0x10", "1_000", "\u0661\u0662\u0663", "true", "yes", "maybe", "TRIM_HORIZON",
    "latest", "AT_TIMESTAMP", "http://", "http://[::1", "http://h:99999", "ftp://x",
    "http://localhost:4567", "arn:aws:kinesis:us-east-1:123456789012:stream/s",
    "arn:aws:kinesis::x:stream/", "python3 p.py", "'unbalanced", '"', "a\x00b", "DETAILED", "NONE",
    "ALL,,", "127.0.0.1:0", ":9464", "[::1]:9464", "host:port", "\u2028", "\ud800"]  # fmt: skip
KEYS = [s.key for s in SETTINGS] + ["workerIdentifier", "unknownKey", "awscredentialsprovider"]


def hostile_properties(seed: int) -> dict[str, str]:
    """Up to 8 real keys (and a few unknown ones) set to hostile values or random text."""
    rng = random.Random(seed)
    props = {}
    for _ in range(rng.randint(0, 8)):
        if rng.random() < 0.8:
            value = rng.choice(HOSTILE_VALUES)
        else:
            value = "".join(chr(rng.randrange(0x20, 0x2000)) for _ in range(rng.randrange(12)))
        props[rng.choice(KEYS)] = value
    return props


REQUIRED = {
    "executableName": "python3 processor.py",
    "applicationName": "app",
    "streamName": "stream",
}


@fuzz_settings(800)
@given(st.integers(0, 2**64).map(hostile_properties), st.booleans())
def test_any_values_for_real_keys_give_a_config_or_a_config_error(
    props: dict[str, str], with_required: bool
) -> None:
    settings = {**REQUIRED, **props} if with_required else props
    try:
        config, warnings = config_from_properties(settings, "fuzz.properties")
    except ConfigError as error:
        message = str(error)
        assert message and "\n" not in message, "one line naming the problem"
        return
    assert isinstance(config, Config)
    assert all(type(warning) is str for warning in warnings)
