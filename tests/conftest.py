"""Session-wide fixtures: the local servers (started on first use, stopped at the end of the run)
and the test assets that bin/_env.sh installs (npm servers, the official amazon_kclpy).

Outside CI a missing asset skips the tests that need it, with the command that fixes it; under CI
(env CI set) it fails them, since bin/test always installs everything there.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from tests import servers
from tests.support import kclpy


def running_in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def missing_asset(reason: str) -> NoReturn:
    """Skips the test (fails it under CI) because something it needs is not installed."""
    if running_in_ci():
        pytest.fail(f"{reason} (bin/test installs it; under CI this is an error)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def node_modules() -> Path:
    """tests/node/node_modules (kinesis-local, dynalite, aws-kcl: use it as NODE_PATH), and a node."""
    if shutil.which("node") is None:
        missing_asset("Node.js is not installed: kinesis-local and dynalite need node >= 20")
    path = servers.node_modules_dir()
    for package, entry in (
        ("kinesis-local", "main.js"),
        ("dynalite", "cli.js"),
        ("aws-kcl", "package.json"),
    ):
        if not (path / package / entry).is_file():
            missing_asset(
                f"{path / package} is missing: run bin/test (or npm install in tests/node)"
            )
    return path


@pytest.fixture(scope="session")
def kclpy_path() -> Path:
    """The folder to put on PYTHONPATH to import the official amazon_kclpy."""
    path = kclpy.kclpy_path()
    if path is None:
        missing_asset("the official amazon_kclpy is not in vendor/: run bin/fetch-kclpy")
    return path


@pytest.fixture(scope="session")
def moto_server() -> Iterator[servers.LocalServer]:
    """moto in server mode: Kinesis, DynamoDB and CloudWatch on one loopback endpoint."""
    with servers.start_moto() as server:
        yield server


@pytest.fixture(scope="session")
def kinesis_local(node_modules: Path) -> Iterator[servers.LocalServer]:
    """kinesis-local (kinesis-mock): Kinesis that reshards like AWS."""
    with servers.start_kinesis_local(node_modules) as server:
        yield server


@pytest.fixture(scope="session")
def dynalite(node_modules: Path) -> Iterator[servers.LocalServer]:
    """dynalite: DynamoDB in memory."""
    with servers.start_dynalite(node_modules) as server:
        yield server
