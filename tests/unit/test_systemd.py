"""sd_notify without systemd: addresses, the environment, the loops' decisions, the unit file.

Messages are captured by a Notifier subclass; tests/integration/test_systemd_socket.py sends them
through a real unix datagram socket.
"""

from __future__ import annotations

import asyncio
import configparser
from pathlib import Path

import pytest

from daemon.systemd import Notifier, notify_ready_when, run_watchdog, socket_address
from daemon.systemd import watchdog_interval_s as interval

UNIT = Path(__file__).resolve().parents[2] / "deploy" / "systemd" / "kcl-daemon@.service"


class Recording(Notifier):
    def __init__(self, watchdog_s: float | None = None) -> None:
        super().__init__("/run/fake", watchdog_s=watchdog_s)
        self.sent: list[tuple[str, ...]] = []

    def notify(self, *assignments: str) -> bool:
        self.sent.append(assignments)
        return True


def test_abstract_socket_names_start_with_a_nul_byte() -> None:
    assert socket_address("@/org/freedesktop/systemd1/notify") == (
        b"\0/org/freedesktop/systemd1/notify"
    )
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    with pytest.raises(ValueError, match="NOTIFY_SOCKET"):
        socket_address("vsock:2:1234")


def test_watchdog_interval_is_half_the_timeout() -> None:
    assert interval("30000000", None, 7) == 15.0
    assert interval("30000000", "7", 7) == 15.0


def test_watchdog_meant_for_another_process_or_malformed_is_ignored() -> None:
    assert interval("30000000", "8", 7) is None
    assert interval("soon", None, 7) is None
    assert interval("0", None, 7) is None
    assert interval(None, None, 7) is None


def test_from_env_reads_and_removes_the_variables_so_children_cannot_notify() -> None:
    env = {"NOTIFY_SOCKET": "@sock", "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "7", "X": "1"}
    notifier = Notifier.from_env(env, pid=7)
    assert notifier.address == b"\0sock"
    assert notifier.watchdog_s == 1.0
    assert env == {"X": "1"}


def test_from_env_can_leave_the_variables_alone() -> None:
    env = {"NOTIFY_SOCKET": "/run/n"}
    Notifier.from_env(env, unset_environment=False)
    assert env == {"NOTIFY_SOCKET": "/run/n"}


def test_without_notify_socket_every_call_is_a_no_op() -> None:
    notifier = Notifier.from_env({"WATCHDOG_USEC": "1000000"})
    assert not notifier.enabled
    assert notifier.watchdog_s is None
    assert not notifier.ready()
    assert not notifier.status("x")
    assert not notifier.watchdog()
    assert not notifier.stopping()


def test_messages_carry_the_documented_assignments() -> None:
    notifier = Recording()
    notifier.ready("2 leases")
    notifier.status("3 leases,\n 5.0 records/s")
    notifier.watchdog()
    notifier.stopping()
    assert notifier.sent == [
        ("READY=1", "STATUS=2 leases"),
        ("STATUS=3 leases, 5.0 records/s",),
        ("WATCHDOG=1",),
        ("STOPPING=1", "STATUS=stopping: final checkpoints, releasing leases"),
    ]


def test_ready_is_sent_once_started_with_a_status() -> None:
    notifier = Recording()
    answers = iter([False, False, True])

    async def scenario() -> None:
        await asyncio.wait_for(
            notify_ready_when(notifier, lambda: next(answers), status=lambda: "1 leases", poll_s=0),
            5,
        )

    asyncio.run(scenario())
    assert notifier.sent == [("READY=1", "STATUS=1 leases")]


def test_ready_waits_for_the_lease_table_before_polling() -> None:
    notifier = Recording()
    polled: list[bool] = []

    async def scenario() -> None:
        table_ready = asyncio.Event()

        def started() -> bool:
            polled.append(table_ready.is_set())
            return True

        task = asyncio.create_task(notify_ready_when(notifier, started, after=table_ready))
        await asyncio.sleep(0)
        assert notifier.sent == []
        table_ready.set()
        assert await asyncio.wait_for(task, 5)

    asyncio.run(scenario())
    assert polled == [True]
    assert notifier.sent == [("READY=1",)]


def test_no_ready_when_the_daemon_stops_before_starting() -> None:
    notifier = Recording()

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(
            notify_ready_when(notifier, lambda: False, after=asyncio.Event(), stop=stop)
        )
        await asyncio.sleep(0)
        stop.set()
        assert not await asyncio.wait_for(task, 5)

    asyncio.run(scenario())
    assert notifier.sent == []


def test_watchdog_pings_only_while_healthy_and_refreshes_status() -> None:
    notifier = Recording(watchdog_s=0.001)
    health = iter([True, False, True])

    async def scenario() -> None:
        stop = asyncio.Event()

        def healthy() -> bool:
            answer = next(health, True)
            if len(notifier.sent) >= 4:
                stop.set()
            return answer

        await asyncio.wait_for(
            run_watchdog(
                notifier, stop, healthy=healthy, status=lambda: "ok", status_interval_s=3600
            ),
            5,
        )

    asyncio.run(scenario())
    assert notifier.sent[:3] == [("WATCHDOG=1",), ("STATUS=ok",), ("WATCHDOG=1",)]
    assert notifier.sent.count(("STATUS=ok",)) == 1


def test_watchdog_loop_returns_at_once_when_not_under_systemd() -> None:
    async def scenario() -> None:
        await asyncio.wait_for(run_watchdog(Notifier(None), asyncio.Event()), 5)

    asyncio.run(scenario())


# -- the unit file ----------------------------------------------------------------------------


def unit() -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=True, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    return parser


def test_unit_is_a_notify_service_with_a_watchdog_restarted_on_failure() -> None:
    service = unit()["Service"]
    assert service["Type"] == "notify"
    assert int(service["WatchdogSec"]) > 0
    assert service["Restart"] == "on-failure"
    assert "/etc/kcl-daemon/%i.properties" in service["ExecStart"]
    # A bad configuration (exit 2) is not retried forever.
    assert service["RestartPreventExitStatus"] == "2"
    # SIGTERM to the daemon only, so children get shutdownRequested and can checkpoint.
    assert service["KillMode"] == "mixed"


def test_unit_is_hardened_and_runs_as_a_dedicated_user() -> None:
    service = unit()["Service"]
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "DynamicUser": "yes",
    }.items():
        assert service[key] == value, key
    assert int(service["LimitNOFILE"]) >= 4096
