"""Java .properties syntax, rule by rule, plus a fuzz test of the parser."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.errors import ConfigError
from daemon.properties import (
    PropertiesSyntaxError,
    parse_properties,
    parse_properties_with_lines,
    parse_property_entries,
)


@pytest.mark.parametrize(
    ("line", "key", "value"),
    [
        ("key=value", "key", "value"),
        ("key:value", "key", "value"),
        ("key value", "key", "value"),
        ("key\tvalue", "key", "value"),
        ("key\fvalue", "key", "value"),
        ("key   =   value", "key", "value"),
        ("key \t : \t value", "key", "value"),
        ("   key=value", "key", "value"),
        ("key = = value", "key", "= value"),
        ("key == value", "key", "= value"),
        ("key value = other", "key", "value = other"),
        ("key=value:with=separators", "key", "value:with=separators"),
        ("key", "key", ""),
        ("key=", "key", ""),
        ("key   ", "key", ""),
        ("=value", "", "value"),
        ("key=value   ", "key", "value   "),
        ("key=a # not a comment", "key", "a # not a comment"),
    ],
)
def test_separators_and_surrounding_whitespace(line: str, key: str, value: str) -> None:
    assert parse_properties(line) == {key: value}


@pytest.mark.parametrize("comment", ["# a comment", "! a comment", "   # indented", "\t! tab"])
def test_comment_lines_are_skipped(comment: str) -> None:
    assert parse_properties(f"{comment}\nkey=value\n") == {"key": "value"}


def test_blank_and_whitespace_only_lines_are_skipped() -> None:
    assert parse_properties("\n   \n\t\f\nkey=value\n\n") == {"key": "value"}


def test_empty_input_gives_no_keys() -> None:
    assert parse_properties(b"") == {}


def test_comment_ending_in_backslash_does_not_continue() -> None:
    assert parse_properties("# comment \\\nkey=value") == {"key": "value"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("key=first \\\n   second", {"key": "first second"}),
        ("key=a\\\n\tb\\\n  c", {"key": "abc"}),
        ("key=a\\\\\nother=b", {"key": "a\\", "other": "b"}),
        ("key=a\\\\\\\n b", {"key": "a\\b"}),
        ("ke\\\n  y=v", {"key": "v"}),
        ("key=a\\\n# not a comment", {"key": "a# not a comment"}),
        ("key=a\\\n\nother=b", {"key": "a", "other": "b"}),
        ("key=a\\", {"key": "a"}),
        ("\\\nkey=v", {"key": "v"}),
    ],
)
def test_line_continuation_with_odd_trailing_backslashes(
    text: str, expected: dict[str, str]
) -> None:
    assert parse_properties(text) == expected


@pytest.mark.parametrize("newline", ["\n", "\r", "\r\n"])
def test_all_three_line_endings_split_lines(newline: str) -> None:
    text = f"a=1{newline}b=2\\{newline}  3{newline}c=4"
    assert parse_properties(text) == {"a": "1", "b": "23", "c": "4"}


def test_only_cr_and_lf_end_lines_not_other_unicode_breaks() -> None:
    # str.splitlines would split at these; Java does not.
    assert parse_properties(b"key=a\x85b\x0bc\x0cd\x1ce") == {"key": "a\x85b\x0bc\x0cd\x1ce"}


def test_bytes_are_decoded_as_iso_8859_1() -> None:
    assert parse_properties(b"caf\xe9=\xff\xa0x") == {"caf\xe9": "\xff\xa0x"}


def test_utf8_bytes_are_read_as_latin1_like_java() -> None:
    assert parse_properties("key=é".encode()) == {"key": "Ã©"}


def test_str_input_is_used_as_is() -> None:
    assert parse_properties("clé=naïve ☃") == {"clé": "naïve ☃"}


@pytest.mark.parametrize(
    ("escaped", "plain"),
    [
        ("\\t", "\t"),
        ("\\n", "\n"),
        ("\\r", "\r"),
        ("\\f", "\f"),
        ("\\\\", "\\"),
        ("\\b", "b"),
        ("\\z", "z"),
        ("\\=", "="),
        ("\\:", ":"),
        ("\\#", "#"),
        ("\\ ", " "),
        ("\\u0041", "A"),
        ("\\u00e9\\u00E9", "éé"),
        ("\\u2603", "☃"),
        ("\\uD83D\\uDE00", "\U0001f600"),
    ],
)
def test_value_escapes(escaped: str, plain: str) -> None:
    assert parse_properties(f"key=x{escaped}y") == {"key": f"x{plain}y"}


@pytest.mark.parametrize(
    ("line", "key", "value"),
    [
        ("a\\=b=c", "a=b", "c"),
        ("a\\:b:c", "a:b", "c"),
        ("a\\ b c", "a b", "c"),
        ("a\\\\=b", "a\\", "b"),
        ("\\#notcomment=v", "#notcomment", "v"),
        ("k\\u0041y=v", "kAy", "v"),
        ("tab\\tkey=v", "tab\tkey", "v"),
    ],
)
def test_escaped_separators_and_spaces_stay_in_keys(line: str, key: str, value: str) -> None:
    assert parse_properties(line) == {key: value}


def test_leading_spaces_of_a_value_can_be_kept_by_escaping() -> None:
    assert parse_properties("key=\\  padded") == {"key": "  padded"}


@pytest.mark.parametrize("bad", ["\\u12", "\\u12G4", "\\u", "\\uXYZW", "\\u 123"])
def test_malformed_unicode_escape_names_the_line(bad: str) -> None:
    text = f"# comment\nok=1\nkey=before{bad}zz"
    with pytest.raises(PropertiesSyntaxError) as caught:
        parse_properties(text, source="app.properties")
    assert caught.value.line == 3
    assert str(caught.value).startswith("app.properties line 3: malformed escape")
    assert "\n" not in str(caught.value)
    assert isinstance(caught.value, ConfigError)


def test_malformed_escape_in_a_key_is_an_error_too() -> None:
    with pytest.raises(PropertiesSyntaxError, match="line 1"):
        parse_properties("k\\u00=v")


def test_lone_surrogate_escape_is_an_error() -> None:
    with pytest.raises(PropertiesSyntaxError, match=r"line 2: \\uD800 is half"):
        parse_properties("a=1\nkey=\\uD800x")


def test_escape_of_a_real_character_is_not_mistaken_for_a_bad_one() -> None:
    assert parse_properties("key=\\\\u12") == {"key": "\\u12"}


def test_last_duplicate_wins() -> None:
    assert parse_properties("key=1\nother=x\nkey=2") == {"key": "2", "other": "x"}


def test_lines_are_those_of_the_winning_duplicate_and_first_physical_line() -> None:
    text = "# header\nkey=1\n\nkey=2\nlong=a\\\n  b\\\n  c\nlast=z"
    assert parse_properties_with_lines(text) == {
        "key": ("2", 4),
        "long": ("abc", 5),
        "last": ("z", 8),
    }


def test_entries_keep_duplicates_in_file_order() -> None:
    entries = parse_property_entries("a=1\nb=2\na=3")
    assert [(e.key, e.value, e.line) for e in entries] == [
        ("a", "1", 1),
        ("b", "2", 2),
        ("a", "3", 3),
    ]


def _escape(text: str, is_key: bool) -> str:
    """A writer in the spirit of Properties.store: escapes so that parsing gives ``text`` back."""
    out = []
    for char in text:
        code = ord(char)
        if char in "\\=:#! " or (is_key and char == "\f"):
            out.append("\\" + char)
        elif char in "\t\n\r\f":
            out.append({"\t": "\\t", "\n": "\\n", "\r": "\\r", "\f": "\\f"}[char])
        elif code > 0xFFFF:
            high, low = divmod(code - 0x10000, 0x400)
            out.append(f"\\u{0xD800 + high:04X}\\u{0xDC00 + low:04X}")
        elif code > 0xFF or code < 0x20:
            out.append(f"\\u{code:04X}")
        else:
            out.append(char)
    return "".join(out)


@settings(max_examples=200, deadline=None, database=None)
@given(st.dictionaries(st.text(max_size=12), st.text(max_size=20), max_size=6))
def test_escaped_keys_and_values_round_trip(props: dict[str, str]) -> None:
    text = "".join(f"{_escape(k, True)}={_escape(v, False)}\n" for k, v in props.items())
    assert parse_properties(text.encode("iso-8859-1")) == props


_SYNTAX = "\\u=: \t\f\r\n#!aAfF09D8xé\x85"


@settings(max_examples=300, deadline=None, database=None)
@given(st.one_of(st.binary(max_size=200), st.text(alphabet=_SYNTAX, max_size=120)))
def test_parser_raises_only_syntax_errors(data: bytes | str) -> None:
    try:
        result = parse_properties_with_lines(data)
    except PropertiesSyntaxError as exc:
        assert exc.line >= 1
        return
    for key, (value, line) in result.items():
        assert isinstance(key, str) and isinstance(value, str)
        assert line >= 1
