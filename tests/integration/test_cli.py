"""kcl-daemon's command line on bad input: one line naming the problem, the right exit code."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.support.daemon_runner import AWS_ENV, REPO, write_properties

pytestmark = pytest.mark.integration


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "daemon.cli", *args],
        cwd=REPO,
        env={**os.environ, **AWS_ENV},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one error line, got:\n{result.stderr}"
    assert "Traceback" not in result.stderr
    assert lines[0].startswith("kcl-daemon: error: ")
    return lines[0]


def valid_settings(**overrides: object) -> dict[str, object]:
    settings: dict[str, object] = {
        "executableName": f"{sys.executable} -m processors.samples.record_logger",
        "applicationName": "cli-test",
        "streamName": "cli-stream",
        "regionName": "us-east-1",
    }
    settings.update(overrides)
    return {key: value for key, value in settings.items() if value is not None}


def test_no_properties_file_given_exits_2():
    result = run_cli()
    assert result.returncode == 2
    assert "--properties" in error_line(result)


def test_missing_properties_file_exits_2_naming_the_path(tmp_path):
    missing = tmp_path / "nope.properties"
    result = run_cli("--properties", str(missing))
    assert result.returncode == 2
    assert str(missing) in error_line(result)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"maxRecords": "abc"}, "maxRecords"),
        ({"maxRecords": "20000"}, "maxRecords"),
        ({"executableName": None}, "executableName"),
        ({"executableName": "./no-such-processor.py"}, "no-such-processor.py"),
        ({"streamName": None}, "streamName"),
        ({"initialPositionInStream": "YESTERDAY"}, "initialPositionInStream"),
        ({"AWSCredentialsProvider": "com.example.MyProvider"}, "AWSCredentialsProvider"),
        ({"failoverTimeMillis": "-5"}, "failoverTimeMillis"),
    ],
)
def test_bad_configuration_exits_2_with_one_line(tmp_path, overrides, expected):
    properties = write_properties(tmp_path / "app.properties", valid_settings(**overrides))
    result = run_cli("-p", str(properties))
    assert result.returncode == 2
    assert expected in error_line(result)


def test_non_executable_processor_exits_2_with_the_fix(tmp_path):
    script = tmp_path / "processor.py"
    script.write_text("print('hi')\n")
    script.chmod(0o644)
    properties = write_properties(
        tmp_path / "app.properties", valid_settings(executableName=str(script))
    )
    result = run_cli(str(properties))
    assert result.returncode == 2
    assert "chmod" in error_line(result)


def test_unknown_key_is_warned_with_a_did_you_mean(tmp_path, moto_server):
    properties = write_properties(
        tmp_path / "app.properties",
        valid_settings(
            maxRecord=100,
            streamName=f"missing-{uuid.uuid4().hex[:6]}",
            kinesisEndpoint=moto_server.endpoint,
            dynamoDBEndpoint=moto_server.endpoint,
        ),
    )
    result = run_cli("--properties-file", str(properties), "--log-format", "json")
    assert "maxRecords" in result.stderr and "maxRecord" in result.stderr


def test_missing_stream_exits_1_with_one_line(tmp_path, moto_server):
    stream = f"missing-{uuid.uuid4().hex[:6]}"
    properties = write_properties(
        tmp_path / "app.properties",
        valid_settings(
            streamName=stream,
            applicationName=f"app-{uuid.uuid4().hex[:6]}",
            kinesisEndpoint=moto_server.endpoint,
            dynamoDBEndpoint=moto_server.endpoint,
        ),
    )
    result = run_cli("-p", str(properties), "--log-level", "error")
    assert result.returncode == 1
    assert stream in error_line(result)


def test_unreachable_endpoint_exits_1_with_one_line(tmp_path):
    closed = "http://127.0.0.1:9"  # the discard port: nothing listens there
    properties = write_properties(
        tmp_path / "app.properties",
        valid_settings(kinesisEndpoint=closed, dynamoDBEndpoint=closed),
    )
    result = run_cli("-p", str(properties), "--log-level", "error")
    assert result.returncode == 1
    assert "127.0.0.1:9" in error_line(result)


def test_help_needs_no_aws_and_exits_0():
    result = run_cli("--help")
    assert result.returncode == 0
    assert "--properties" in result.stdout


def test_bad_properties_syntax_exits_2(tmp_path):
    path = Path(tmp_path / "app.properties")
    path.write_bytes(b"executableName = x\\u12G4\n")
    result = run_cli("-p", str(path))
    assert result.returncode == 2
    assert "line 1" in error_line(result)
