"""Fixtures for tests that run real processes against real local servers.

Every test collected under tests/integration/ gets the `integration` marker (so
`pytest -m "not integration"` leaves them out even where a test forgot its marker). The servers
are shared by the whole session: give each test its own streams and tables with `unique_name`.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from tests import servers

_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """Makes names valid for both a Kinesis stream and a DynamoDB table, unique in the session:
    `unique_name("stream")` -> "stream-test-split-closes-parent-3f9a1c2b"."""

    def make(prefix: str) -> str:
        test = re.sub(r"[^A-Za-z0-9]+", "-", request.node.name).strip("-")[:60]
        return f"{prefix}-{test}-{uuid.uuid4().hex[:8]}"

    return make


@pytest.fixture
def moto_env(moto_server: servers.LocalServer) -> dict[str, str]:
    """Environment for a child process whose AWS calls all go to the moto server."""
    return servers.child_env(moto_server.endpoint)


@pytest.fixture
def local_aws_env(
    kinesis_local: servers.LocalServer, dynalite: servers.LocalServer
) -> dict[str, str]:
    """Environment for a child process using kinesis-local for Kinesis and dynalite for DynamoDB.

    CloudWatch goes to a closed loopback port: turn metrics off or expect them to fail.
    """
    return servers.child_env(kinesis=kinesis_local.endpoint, dynamodb=dynalite.endpoint)
