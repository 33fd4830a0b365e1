"""sd_notify over real unix datagram sockets (a path and the abstract namespace), as systemd
receives it, and the unit file as systemd-analyze reads it."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.systemd import Notifier, run_watchdog

pytestmark = pytest.mark.integration

UNIT = Path(__file__).resolve().parents[2] / "deploy" / "systemd" / "kcl-daemon@.service"


class Listener:
    """The systemd side: a bound datagram socket and the messages it got."""

    def __init__(self, sock: socket.socket, env_value: str) -> None:
        self.sock = sock
        self.env_value = env_value

    def receive(self, timeout: float = 5.0) -> list[str]:
        self.sock.settimeout(timeout)
        return self.sock.recv(4096).decode().split("\n")


@pytest.fixture(params=["path", "abstract"])
def listener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Listener]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        path = str(tmp_path / "notify")
        sock.bind(path)
        value = path
    else:
        name = f"kcl-daemon-test-{uuid.uuid4().hex}"
        sock.bind(b"\0" + name.encode())
        value = "@" + name
    try:
        yield Listener(sock, value)
    finally:
        sock.close()


def notifier_for(listener: Listener, **env: str) -> Notifier:
    return Notifier.from_env({"NOTIFY_SOCKET": listener.env_value, **env})


def test_ready_status_watchdog_and_stopping_arrive_as_datagrams(listener: Listener) -> None:
    notifier = notifier_for(listener)
    try:
        assert notifier.ready("1 leases, 0.0 records/s")
        assert listener.receive() == ["READY=1", "STATUS=1 leases, 0.0 records/s"]
        assert notifier.watchdog()
        assert listener.receive() == ["WATCHDOG=1"]
        assert notifier.stopping()
        assert listener.receive()[0] == "STOPPING=1"
    finally:
        notifier.close()


def test_watchdog_loop_pings_at_half_the_watchdog_usec(listener: Listener) -> None:
    notifier = notifier_for(listener, WATCHDOG_USEC="20000", WATCHDOG_PID=str(os.getpid()))
    assert notifier.watchdog_s == 0.01
    received: list[list[str]] = []

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(run_watchdog(notifier, stop, status=lambda: "2 leases"))
        loop = asyncio.get_running_loop()
        while sum(1 for message in received if message == ["WATCHDOG=1"]) < 3:
            received.append(await loop.run_in_executor(None, listener.receive))
        stop.set()
        await asyncio.wait_for(task, 5)

    try:
        asyncio.run(scenario())
    finally:
        notifier.close()
    assert received[:2] == [["WATCHDOG=1"], ["STATUS=2 leases"]]


def test_a_vanished_socket_is_logged_not_raised(tmp_path: Path) -> None:
    notifier = Notifier(str(tmp_path / "gone"))
    try:
        assert not notifier.ready()
        assert not notifier.status("still running")
    finally:
        notifier.close()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not found")
def test_unit_file_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    # An instance of the template, with an executable that exists on this machine.
    text = UNIT.read_text().replace("/opt/kcl-daemon/bin/kcl-daemon", shutil.which("true") or "")
    instance = tmp_path / "kcl-daemon@test.service"
    instance.write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(instance)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Unknown" not in result.stderr, result.stderr
