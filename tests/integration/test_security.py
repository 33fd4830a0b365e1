"""Security properties: no shell for child commands, no secrets or payloads in logs, an
unprivileged systemd unit, a loopback-only Prometheus endpoint by default.

The log test runs the real daemon with recognizable fake credentials in its environment and
recognizable record payloads, through a fault proxy that throttles, fails and resets calls so
that the error paths log too, with the Prometheus endpoint on; then neither the credentials
nor any payload (raw or base64) may appear in its log at the default level, nor in a scrape.
"""

from __future__ import annotations

import ast
import base64
import configparser
import json
import shlex
import sys
import urllib.request
import uuid
from pathlib import Path

import psutil
import pytest

from daemon.local_backend import free_port
from daemon.settings import SETTINGS_BY_ATTR
from tests.faults.proxy import DYNAMODB, KINESIS, FaultProxy, Reset, Rule, server_error, throttle
from tests.support.daemon_runner import DaemonRun, aws_client, create_stream, lease_items

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "deploy" / "systemd" / "kcl-daemon@.service"
NOOP = f"{shlex.quote(sys.executable)} -m processors.samples.noop_processor"
LIFECYCLE_LOGGER = f"{shlex.quote(sys.executable)} -m tests.faults.children.lifecycle_logger"


@pytest.fixture
def names() -> tuple[str, str]:
    suffix = uuid.uuid4().hex[:8]
    return f"stream-{suffix}", f"app-{suffix}"


# -- no shell -------------------------------------------------------------------------------


SHELL_CALLS = {"system", "popen", "getoutput", "getstatusoutput", "create_subprocess_shell",
               "subprocess_shell", "spawnlp", "spawnvp"}  # fmt: skip


def _shell_uses(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Call):
            continue
        name = getattr(node.func, "attr", None) or getattr(node.func, "id", None)
        if name in SHELL_CALLS:
            found.append(f"{path.relative_to(REPO)}:{node.lineno} {name}()")
        for keyword in node.keywords:
            if keyword.arg == "shell" and not (
                isinstance(keyword.value, ast.Constant) and keyword.value.value is False
            ):
                found.append(f"{path.relative_to(REPO)}:{node.lineno} shell=...")
    return found


def test_no_daemon_or_producer_code_starts_a_shell() -> None:
    sources = [p for folder in ("daemon", "producer", "protocol") for p in (REPO / folder).rglob("*.py")]  # fmt: skip
    assert len(sources) > 10
    uses = [use for path in sources for use in _shell_uses(path)]
    assert not uses, uses


def test_shell_syntax_in_executable_name_reaches_the_child_as_plain_arguments(
    moto_server, tmp_path, names
):
    stream, application = names
    create_stream(aws_client("kinesis", moto_server.endpoint), stream, 1)
    marker = tmp_path / "pwned"
    hostile = [";", "touch", str(marker), "&&", f"$(touch {marker})", f"`touch {marker}`", "|",
               "cat", "*", "~", "$HOME", ">", str(marker)]  # fmt: skip
    events = tmp_path / "events.tsv"
    run = DaemonRun(
        tmp_path,
        moto_server.endpoint,
        stream,
        application,
        f"{LIFECYCLE_LOGGER} {shlex.join(hostile)}",
        extra={"metricsLevel": "NONE"},
        env={"KCL_CHILD_EVENTS": str(events)},
    ).start()
    try:
        run.wait_for(
            lambda: events.exists() and "started" in events.read_text(), 30, "the child to start"
        )
    finally:
        assert run.stop() == 0
    started = [line.split("\t") for line in events.read_text().splitlines()]
    argv = json.loads(next(parts[2] for parts in started if parts[0] == "started"))
    assert argv[1:] == hostile, "every word arrives as written: no expansion, no redirection"
    assert not marker.exists(), "nothing ran the shell syntax"


# -- no secrets in logs ---------------------------------------------------------------------


ACCESS_KEY = "AKIACANARY" + uuid.uuid4().hex[:10].upper()
SECRET_KEY = "canarySecret/" + uuid.uuid4().hex + "+Z"
SESSION_TOKEN = "canaryToken" + uuid.uuid4().hex * 3


def test_credentials_and_payloads_never_reach_the_log_or_the_metrics(moto_server, tmp_path, names):
    stream, application = names
    kinesis = aws_client("kinesis", moto_server.endpoint)
    create_stream(kinesis, stream, 2)
    payload = f"PAYLOAD-CANARY-{uuid.uuid4().hex}"
    datas = [f"{payload}-{i}".encode() for i in range(200)]
    last: dict[str, str] = {}
    for start in (0, 100):
        result = kinesis.put_records(
            StreamName=stream,
            Records=[
                {"PartitionKey": f"key-{i}", "Data": datas[i]} for i in range(start, start + 100)
            ],
        )
        for entry in result["Records"]:
            last[entry["ShardId"]] = entry["SequenceNumber"]
    dynamodb = aws_client("dynamodb", moto_server.endpoint)

    def checkpointed_everything() -> bool:
        items = lease_items(dynamodb, application)
        return {key: item.get("checkpoint", {}).get("S") for key, item in items.items()} == last

    port = free_port()
    with FaultProxy(moto_server.endpoint, seed=3) as proxy:
        run = DaemonRun(
            tmp_path,
            proxy.endpoint,
            stream,
            application,
            NOOP,
            extra={
                "cloudWatchEndpoint": moto_server.endpoint,
                "metricsBufferTimeMillis": 1000,
                "metricsPrometheusAddress": f":{port}",
                "timeoutInSeconds": 30,
            },
            env={
                "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                "AWS_SESSION_TOKEN": SESSION_TOKEN,
                "KCL_SAMPLE_CHECKPOINT_EVERY": "1",
            },
        ).start()
        try:
            run.wait_for(lambda: bool(run.find_events("worker started")), 30, "the worker")
            for rule in (
                Rule(throttle(KINESIS), service=KINESIS, operations={"GetRecords"}, limit=3),
                Rule(server_error(500), service=KINESIS, operations={"GetRecords"}, limit=3),
                Rule(Reset(), service=KINESIS, limit=2),
                Rule(throttle(DYNAMODB), service=DYNAMODB, limit=3),
                Rule(server_error(503), service=DYNAMODB, limit=3),
            ):
                proxy.add(rule)
            run.wait_for(
                lambda: bool(run.find_events("lease taken")) and proxy.injected() >= 14,
                60,
                "leases taken and every fault injected",
            )
            run.wait_for(checkpointed_everything, 60, "every record checkpointed")
            scrape = _scrape(port)
            listening = _listening_addresses(run, port)
        finally:
            assert run.stop() == 0
    log = run.log_path.read_text(errors="replace")
    assert run.find_events("call failed; will retry") or run.find_events("throttled")
    secrets = [ACCESS_KEY, SECRET_KEY, SESSION_TOKEN, "Credential=", "Signature="]
    payloads = [payload] + [base64.b64encode(data).decode() for data in datas]
    payloads.append(base64.b64encode(payload.encode()).decode()[:40])
    for text, where in ((log, "the daemon log"), (scrape, "the Prometheus scrape")):
        assert not [s for s in secrets if s in text], f"a credential in {where}"
        assert not [p for p in payloads if p in text], f"a record payload in {where}"
    assert listening == {"127.0.0.1"}, "an empty host in metricsPrometheusAddress is loopback"


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return str(response.read().decode())


def _listening_addresses(run: DaemonRun, port: int) -> set[str]:
    assert run.process is not None
    connections = psutil.Process(run.process.pid).net_connections(kind="inet")
    return {c.laddr.ip for c in connections if c.status == psutil.CONN_LISTEN and c.laddr.port == port}  # fmt: skip


# -- deployment -----------------------------------------------------------------------------


def _unit_service() -> configparser.SectionProxy:
    if not UNIT.exists():
        pytest.skip(f"{UNIT.relative_to(REPO)} is not written yet")
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    return parser["Service"]


def test_the_systemd_unit_runs_unprivileged_without_a_way_to_gain_privileges() -> None:
    service = _unit_service()
    dynamic = service.get("DynamicUser", "no").lower() in ("yes", "true", "1", "on")
    user = service.get("User", "").strip()
    assert dynamic or (user and user not in ("root", "0")), "a dedicated unprivileged user"
    assert service.get("Group", "").strip() not in ("root", "0")
    assert service.get("NoNewPrivileges", "").lower() in ("yes", "true", "1", "on")
    assert service.get("CapabilityBoundingSet", None) == "", "no capabilities at all"
    assert service.get("AmbientCapabilities", "") == ""
    assert service.get("ProtectSystem", "") in ("strict", "full", "yes")
    assert service.get("RestrictSUIDSGID", "").lower() in ("yes", "true", "1", "on")


def test_the_systemd_unit_starts_the_daemon_without_a_shell() -> None:
    service = _unit_service()
    argv = shlex.split(service["ExecStart"].lstrip("-@:+!"))
    assert Path(argv[0]).name not in ("sh", "bash", "dash", "zsh", "env"), argv
    assert "-c" not in argv
    assert Path(argv[0]).name == "kcl-daemon"


# -- the Prometheus endpoint --------------------------------------------------------------


def test_the_prometheus_endpoint_is_off_by_default_and_loopback_when_no_host_is_given() -> None:
    from daemon.metrics_prometheus import parse_address

    setting = SETTINGS_BY_ATTR["metrics_prometheus_address"]
    assert setting.default in ("", None), "no endpoint unless asked for"
    assert parse_address("") is None
    assert parse_address(f":{9464}") == ("127.0.0.1", 9464)
    assert parse_address("0.0.0.0:9464") == ("0.0.0.0", 9464), "every interface only when told"
