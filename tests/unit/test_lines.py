from hypothesis import given
from hypothesis import strategies as st

from daemon.lines import LineSplitter, OversizedLine


def split(chunks, max_bytes=100, head=10):
    splitter = LineSplitter(max_bytes, head)
    out = []
    for chunk in chunks:
        out.extend(splitter.feed(chunk))
    return out + splitter.finish()


def test_lines_split_on_newline_across_chunks():
    assert split([b'{"a":', b'1}\n{"b"', b":2}\n"]) == [b'{"a":1}', b'{"b":2}']


def test_blank_and_whitespace_lines_are_dropped():
    assert split([b"\n\n  \n{}\n\n"]) == [b"{}"]


def test_unterminated_last_line_comes_out_at_finish():
    assert split([b"one\ntwo"]) == [b"one", b"two"]


def test_oversized_line_keeps_only_its_head_and_later_lines_still_arrive():
    out = split([b"x" * 60, b"y" * 60, b"\nnext\n"], max_bytes=100, head=10)
    assert out == [OversizedLine(120, b"x" * 10), b"next"]


def test_line_exactly_at_the_limit_is_kept_whole():
    assert split([b"z" * 100 + b"\n"]) == [b"z" * 100]


@given(st.lists(st.binary(max_size=50), max_size=20), st.integers(1, 30))
def test_any_chunking_gives_the_same_lines_as_one_chunk(chunks, limit):
    whole = split([b"".join(chunks)], max_bytes=limit, head=5)
    assert split(chunks, max_bytes=limit, head=5) == whole
