"""The test helpers other tests lean on: wait_until's polling contract and the AWS environment
that keeps child processes on loopback servers."""

from __future__ import annotations

import itertools

import pytest

from tests import servers
from tests.support.waiting import wait_until


def test_wait_until_returns_the_first_truthy_value() -> None:
    calls = itertools.count()

    result = wait_until(lambda: next(calls) >= 3 and "ready", timeout=5, interval=0.001)

    assert result == "ready"


def test_wait_until_raises_assertion_error_with_the_message_on_timeout() -> None:
    with pytest.raises(AssertionError, match="timed out after 0.05 s: shard never leased"):
        wait_until(lambda: False, timeout=0.05, interval=0.01, message="shard never leased")


def test_wait_until_evaluates_a_callable_message_only_on_timeout() -> None:
    seen: list[str] = []

    def message() -> str:
        seen.append("asked")
        return "state at timeout"

    wait_until(lambda: True, timeout=1, message=message)
    assert seen == []
    with pytest.raises(AssertionError, match="state at timeout"):
        wait_until(lambda: None, timeout=0.02, interval=0.01, message=message)
    assert seen == ["asked"]


def test_wait_until_retries_ignored_errors_and_reports_the_last_one() -> None:
    def flaky() -> bool:
        raise ConnectionError("refused")

    with pytest.raises(AssertionError, match=r"last error: ConnectionError\('refused'\)"):
        wait_until(flaky, timeout=0.02, interval=0.01, ignore=(ConnectionError,))


def test_wait_until_propagates_errors_it_was_not_told_to_ignore() -> None:
    def broken() -> bool:
        raise KeyError("boom")

    with pytest.raises(KeyError):
        wait_until(broken, timeout=5, ignore=(ConnectionError,))


def test_aws_env_sends_services_without_an_endpoint_to_a_closed_loopback_port() -> None:
    env = servers.aws_env(kinesis="http://127.0.0.1:4001", dynamodb="http://127.0.0.1:4002")

    assert env["AWS_ENDPOINT_URL_KINESIS"] == "http://127.0.0.1:4001"
    assert env["AWS_ENDPOINT_URL_DYNAMODB"] == "http://127.0.0.1:4002"
    assert env["AWS_ENDPOINT_URL_CLOUDWATCH"] == servers.UNSERVED_ENDPOINT
    assert env["AWS_ENDPOINT_URL"] == servers.UNSERVED_ENDPOINT
    assert (env["AWS_ACCESS_KEY_ID"], env["AWS_DEFAULT_REGION"]) == ("test", "us-east-1")


def test_child_env_drops_the_callers_aws_settings() -> None:
    base = {"PATH": "/usr/bin", "AWS_PROFILE": "prod", "AWS_SESSION_TOKEN": "secret"}
    scrubbed = servers.scrubbed_environ(base)

    assert "AWS_PROFILE" not in scrubbed
    assert "AWS_SESSION_TOKEN" not in scrubbed
    assert scrubbed["PATH"] == "/usr/bin"
    assert "127.0.0.1" in scrubbed["NO_PROXY"]
