"""kcl-produce: options, input formats, summary and exit status (against FakeKinesis)."""

from __future__ import annotations

import io

import pytest

from producer.cli import Tally, build_config, main, parse_args, records, summary
from producer.testing import FakeKinesis, FaultInjector
from protocol.aggregation import deaggregate


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def fake() -> FakeKinesis:
    kinesis = FakeKinesis()
    kinesis.create_stream("s", 2)
    return kinesis


def written(kinesis: FakeKinesis) -> list[tuple[str, bytes]]:
    out = []
    for stored in kinesis.records("s"):
        subs = deaggregate(stored.data)
        if subs is None:
            out.append((stored.partition_key, stored.data))
        else:
            out.extend((sub.partition_key, sub.data) for sub in subs)
    return out


def test_lines_from_stdin_are_written_and_summarised():
    kinesis = fake()
    err = io.StringIO()
    status = main(
        ["--stream", "s", "--partition-key", "p"],
        client=kinesis,
        stdin=io.BytesIO(b"one\ntwo\r\n\nthree"),
        stderr=err,
    )
    assert status == 0
    assert written(kinesis) == [("p", b"one"), ("p", b"two"), ("p", b"three")]
    assert "3 records, 3 written, 0 failed" in err.getvalue()
    assert "records/s" in err.getvalue()


def test_json_records_take_their_partition_key_from_a_field():
    kinesis = fake()
    err = io.StringIO()
    lines = b'{"user": "ann", "n": 1}\n{"user": 7}\nnot json\n{"other": 1}\n'
    status = main(
        ["--stream", "s", "--format", "json", "--partition-key-field", "user"],
        client=kinesis,
        stdin=io.BytesIO(lines),
        stderr=err,
    )
    assert status == 1
    assert sorted(written(kinesis)) == [("7", b'{"user": 7}'), ("ann", b'{"user": "ann", "n": 1}')]
    assert "failures by error code: InvalidInput: 2" in err.getvalue()


def test_failed_records_are_counted_by_code_and_exit_status_is_one():
    client = FaultInjector(fake(), lambda call, item: "AccessDeniedException")
    err = io.StringIO()
    status = main(["--stream", "s"], client=client, stdin=io.BytesIO(b"a\nb\n"), stderr=err)
    assert status == 1
    assert "AccessDeniedException: 2" in err.getvalue()


def test_missing_stream_is_one_line_and_exit_status_two():
    err = io.StringIO()
    status = main(["--stream", "nope"], client=fake(), stdin=io.BytesIO(b"a\n"), stderr=err)
    assert status == 2
    assert err.getvalue().count("\n") == 1
    assert "stream 'nope' not found" in err.getvalue()


def test_unreadable_input_file_is_a_usage_error(tmp_path):
    err = io.StringIO()
    status = main(
        ["--stream", "s", "--input", str(tmp_path / "missing")], client=fake(), stderr=err
    )
    assert status == 2 and "cannot read --input" in err.getvalue()


def test_input_file_is_read(tmp_path):
    path = tmp_path / "in.txt"
    path.write_bytes(b"x\ny\n")
    kinesis = fake()
    assert main(["--stream", "s", "--input", str(path)], client=kinesis, stderr=io.StringIO()) == 0
    assert sorted(data for _, data in written(kinesis)) == [b"x", b"y"]


def test_progress_is_a_log_line_when_stderr_is_not_a_terminal():
    kinesis = fake()
    err = io.StringIO()

    def slow_lines():
        yield b"first\n"
        # Wait for a progress line before ending the input.
        from tests.support.waiting import wait_until

        wait_until(lambda: "progress:" in err.getvalue(), 10, message="no progress line")
        yield b"second\n"

    status = main(
        ["--stream", "s", "--progress-interval", "0.1"],
        client=kinesis,
        stdin=slow_lines(),  # type: ignore[arg-type]
        stderr=err,
    )
    assert status == 0
    assert "kcl-produce progress: " in err.getvalue() and "\r" not in err.getvalue()


def test_progress_on_a_terminal_rewrites_one_line():
    kinesis = fake()
    err = FakeTerminal()

    def slow_lines():
        yield b"first\n"
        from tests.support.waiting import wait_until

        wait_until(lambda: "\r" in err.getvalue(), 10, message="no progress")
        yield b"second\n"

    assert main(["--stream", "s"], client=kinesis, stdin=slow_lines(), stderr=err) == 0  # type: ignore[arg-type]
    assert "records/s" in err.getvalue().split("\r")[1]


def test_config_file_and_flags_combine(tmp_path):
    path = tmp_path / "kpl.properties"
    path.write_text("RecordMaxBufferedTime = 3000\nMaxConnections = 1\nRegion = us-west-1\n")
    args = parse_args(
        ["--stream", "s", "--config", str(path), "--record-ttl", "9000", "--no-aggregation"]
    )
    config = build_config(args)
    assert (config.record_max_buffered_time, config.max_connections) == (3000, 1)
    assert (config.record_ttl, config.aggregation_enabled) == (9000, False)
    assert config.metrics_level == "none" and config.region == "us-west-1"


def test_bad_config_value_is_exit_status_two():
    err = io.StringIO()
    assert main(["--stream", "s", "--record-ttl", "5"], client=fake(), stderr=err) == 2
    assert "record_ttl must be between" in err.getvalue()


def test_records_without_a_key_option_get_random_keys():
    out = [item for item in records(iter([b"a\n", b"b\n"]), "lines", None, None)]
    pairs = [item for item in out if isinstance(item, tuple)]
    assert [data for _, data in pairs] == [b"a", b"b"]
    assert pairs[0][0] != pairs[1][0] and len(pairs[0][0]) == 16


@pytest.mark.parametrize("codes", [{}, {"Expired": 2}])
def test_summary_names_failures_by_code(codes):
    tally = Tally()
    tally.succeeded = 8
    tally.failures.update(codes)
    text = summary(tally, 2.0)
    assert f"{8 + sum(codes.values())} records" in text
    assert ("Expired: 2" in text) == bool(codes)


def test_missing_region_is_one_line_and_exit_status_two(monkeypatch):
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    err = io.StringIO()
    assert main(["--stream", "s"], stdin=io.BytesIO(b""), stderr=err) == 2
    assert err.getvalue().startswith("kcl-produce: no AWS region configured")
    assert err.getvalue().count("\n") == 1
