"""Launchers for the real local AWS look-alikes the tests talk to, each on a free loopback port.

Owns: starting a server as a child process (moto in server mode for Kinesis + DynamoDB + CloudWatch;
kinesis-local, which is kinesis-mock, for Kinesis; dynalite for DynamoDB), waiting until it answers
a real API call, stopping it, and the AWS settings (dummy credentials, endpoints) that clients and
child processes use to reach them. A server is a separate process, never a thread in the test
process, so the daemon under test and the test see the same independent server.

    with start_moto() as moto:
        kinesis = client("kinesis", moto.endpoint)
        env = child_env(moto.endpoint)  # for a daemon started with subprocess

A server that exits or does not answer within the timeout raises ServerStartError carrying its
captured output.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import boto3
from botocore.config import Config

from daemon.local_backend import free_port, stop_process

REGION = "us-east-1"
ACCESS_KEY_ID = "test"
SECRET_ACCESS_KEY = "test"
# A loopback port nothing listens on: calls to a service that has no local server fail at once
# instead of reaching for real AWS.
UNSERVED_ENDPOINT = "http://127.0.0.1:9"

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_NODE_MODULES = ROOT / "tests" / "node" / "node_modules"
DEFAULT_START_TIMEOUT = 30.0

_ADDRESS_IN_USE_HINTS = ("EADDRINUSE", "Address already in use", "address already in use")
_START_ATTEMPTS = 3


class ServerStartError(RuntimeError):
    """A local server exited, or did not answer an API call, before its start timeout."""


ReadyCheck = Callable[[str], None]
"""Makes one real API call against the endpoint; raises while the server is not ready."""

CommandBuilder = Callable[[int], tuple[list[str], dict[str, str]]]
"""Given the chosen port, the argv and the environment of the server process."""


@dataclass(eq=False)
class LocalServer:
    """A running server process; `stop()` (or leaving the `with` block) ends it."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        """Everything the server printed so far (stdout and stderr interleaved)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def is_running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """Terminates the server (SIGTERM, then SIGKILL after `timeout`) and removes its log."""
        _live.discard(self)
        stop_process(self.process, timeout)
        self.log_path.unlink(missing_ok=True)

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# Servers not yet stopped; stopped at interpreter exit so that a crashed test run leaves no
# orphans holding ports (a SIGKILLed run still can: the servers share its process group, so a
# Ctrl-C in a terminal reaches them too).
_live: set[LocalServer] = set()


@atexit.register
def _stop_leftovers() -> None:
    for server in list(_live):
        server.stop(timeout=3.0)


def port_is_open(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on host:port right now."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def aws_env(
    endpoint: str | None = None,
    *,
    kinesis: str | None = None,
    dynamodb: str | None = None,
    cloudwatch: str | None = None,
) -> dict[str, str]:
    """AWS environment variables pointing an SDK at local servers with dummy credentials.

    `endpoint` serves every service (moto); the per-service arguments override it (kinesis-local +
    dynalite). A service given no endpoint at all goes to UNSERVED_ENDPOINT, never to real AWS.
    """
    default = endpoint or UNSERVED_ENDPOINT
    return {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_ENDPOINT_URL": default,
        "AWS_ENDPOINT_URL_KINESIS": kinesis or default,
        "AWS_ENDPOINT_URL_DYNAMODB": dynamodb or default,
        "AWS_ENDPOINT_URL_CLOUDWATCH": cloudwatch or default,
        # Never probe the instance metadata service, and ignore the user's ~/.aws files.
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }


def scrubbed_environ(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of `base` (default os.environ) without AWS_* settings and with loopback unproxied."""
    env = {k: v for k, v in (os.environ if base is None else base).items()}
    for key in list(env):
        if key.startswith("AWS_"):
            del env[key]
    no_proxy = "127.0.0.1,localhost"
    env["NO_PROXY"] = env["no_proxy"] = ",".join(
        p for p in (env.get("NO_PROXY") or env.get("no_proxy"), no_proxy) if p
    )
    return env


def child_env(
    endpoint: str | None = None,
    *,
    kinesis: str | None = None,
    dynamodb: str | None = None,
    cloudwatch: str | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """A full environment for a child process (the daemon, a producer) that talks to local servers."""
    env = scrubbed_environ()
    env.update(aws_env(endpoint, kinesis=kinesis, dynamodb=dynamodb, cloudwatch=cloudwatch))
    env.update(extra or {})
    return env


def client(service: str, endpoint: str, **config: Any) -> Any:
    """A boto3 client for `service` at a local endpoint, with dummy credentials.

    Keyword arguments override the botocore Config (defaults: 2 s connect, 30 s read timeouts,
    standard retry mode with 3 attempts).
    """
    settings: dict[str, Any] = {
        "connect_timeout": 2,
        "read_timeout": 30,
        "retries": {"mode": "standard", "total_max_attempts": 3},
    }
    settings.update(config)
    # Any: boto3-stubs types each service's client separately; tests pass the name as a string.
    session: Any = boto3.session.Session()
    return session.client(
        service,
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
        config=Config(**settings),
    )


def _probe_client(service: str, endpoint: str) -> Any:
    return client(
        service,
        endpoint,
        connect_timeout=1,
        read_timeout=5,
        retries={"mode": "standard", "total_max_attempts": 1},
    )


def start_server(
    name: str,
    command: CommandBuilder,
    ready: ReadyCheck,
    *,
    cwd: Path | None = None,
    timeout: float = DEFAULT_START_TIMEOUT,
    extra: Callable[[int], dict[str, str]] | None = None,
) -> LocalServer:
    """Starts `command(port)` on a free port and waits until `ready(endpoint)` passes.

    Retries with another port when the server reports that its port was taken in between.
    """
    for attempt in range(1, _START_ATTEMPTS + 1):
        port = free_port()
        argv, env = command(port)
        server = _spawn(name, port, argv, env, cwd, extra(port) if extra else {})
        try:
            _wait_ready(server, ready, timeout)
        except ServerStartError:
            taken = any(hint in server.output() for hint in _ADDRESS_IN_USE_HINTS)
            if taken and attempt < _START_ATTEMPTS:
                server.stop()
                continue
            server.stop()
            raise
        return server
    raise AssertionError("unreachable: the last attempt returns or raises")


def _spawn(
    name: str,
    port: int,
    argv: Sequence[str],
    env: Mapping[str, str],
    cwd: Path | None,
    extra: dict[str, str],
) -> LocalServer:
    fd, log_name = tempfile.mkstemp(prefix=f"kcl-test-{name}-", suffix=".log")
    log_path = Path(log_name)
    try:
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=fd,
            stderr=subprocess.STDOUT,
            env=dict(env),
            cwd=cwd,
        )
    except OSError as exc:
        log_path.unlink(missing_ok=True)
        raise ServerStartError(f"{name}: cannot run {argv[0]}: {exc}") from exc
    finally:
        os.close(fd)
    server = LocalServer(name=name, port=port, process=process, log_path=log_path, extra=extra)
    _live.add(server)
    return server


def _wait_ready(server: LocalServer, ready: ReadyCheck, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        code = server.process.poll()
        if code is not None:
            raise ServerStartError(
                f"{server.name} exited with code {code} while starting on port {server.port}; "
                f"its output:\n{server.output()}"
            )
        if port_is_open(server.port):
            try:
                ready(server.endpoint)
                return
            except Exception as exc:  # any failure of the probe means "not ready yet"
                last_error = exc
        if time.monotonic() >= deadline:
            raise ServerStartError(
                f"{server.name} did not answer on {server.endpoint} within {timeout:.0f} s "
                f"(last probe error: {last_error!r}); its output:\n{server.output()}"
            )
        time.sleep(0.05)


def _moto_ready(endpoint: str) -> None:
    # Each moto backend loads on first use: touch the services the tests use.
    _probe_client("kinesis", endpoint).list_streams()
    _probe_client("dynamodb", endpoint).list_tables()


def start_moto(timeout: float = DEFAULT_START_TIMEOUT) -> LocalServer:
    """moto in server mode (Kinesis, DynamoDB, CloudWatch ... on one endpoint)."""

    def command(port: int) -> tuple[list[str], dict[str, str]]:
        argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
        return argv, scrubbed_environ()

    return start_server("moto", command, _moto_ready, timeout=timeout)


def node_modules_dir() -> Path:
    """Where the npm test servers are installed (KCL_TEST_NODE_MODULES, set by bin/_env.sh)."""
    configured = os.environ.get("KCL_TEST_NODE_MODULES")
    return Path(configured) if configured else DEFAULT_NODE_MODULES


def node_executable() -> str:
    """The `node` binary; ServerStartError if there is none."""
    node = shutil.which("node")
    if node is None:
        raise ServerStartError(
            "Node.js is not installed: kinesis-local and dynalite need node >= 20 "
            "(Debian: apt-get install nodejs npm; then bin/test installs the packages)"
        )
    return node


def _npm_entry(node_modules: Path, package: str, script: str) -> Path:
    entry = node_modules / package / script
    if not entry.is_file():
        raise ServerStartError(
            f"{entry} is missing: run bin/test (or `npm install` in tests/node) to install {package}"
        )
    return entry


def _kinesis_ready(endpoint: str) -> None:
    _probe_client("kinesis", endpoint).list_streams()


# kinesis-mock keeps a stream in CREATING/UPDATING/... for these durations; zero makes a
# stream usable as soon as the next DescribeStream (about 0.1-0.2 s later in practice).
KINESIS_LOCAL_DURATIONS = (
    "CREATE_STREAM_DURATION",
    "DELETE_STREAM_DURATION",
    "REGISTER_STREAM_CONSUMER_DURATION",
    "DEREGISTER_STREAM_CONSUMER_DURATION",
    "START_STREAM_ENCRYPTION_DURATION",
    "STOP_STREAM_ENCRYPTION_DURATION",
    "MERGE_SHARDS_DURATION",
    "SPLIT_SHARD_DURATION",
    "UPDATE_SHARD_COUNT_DURATION",
    "UPDATE_STREAM_MODE_DURATION",
)


def start_kinesis_local(
    node_modules: Path | None = None, timeout: float = DEFAULT_START_TIMEOUT
) -> LocalServer:
    """kinesis-local (kinesis-mock) on a plain-HTTP port; its TLS port is in extra["tls_endpoint"].

    It listens on all interfaces (it has no host setting); clients use 127.0.0.1.
    """
    modules = node_modules or node_modules_dir()
    node = node_executable()
    main = _npm_entry(modules, "kinesis-local", "main.js")
    tls_ports: dict[int, int] = {}

    def command(port: int) -> tuple[list[str], dict[str, str]]:
        tls_ports[port] = free_port()
        env = scrubbed_environ()
        env.update({name: "0ms" for name in KINESIS_LOCAL_DURATIONS})
        env.update(
            {
                "KINESIS_MOCK_PLAIN_PORT": str(port),
                "KINESIS_MOCK_TLS_PORT": str(tls_ports[port]),
                # Without this it looks for server.json in its working directory.
                "KINESIS_MOCK_CERT_PATH": str(main.parent / "server.json"),
                "AWS_REGION": REGION,
                "LOG_LEVEL": "WARN",
            }
        )
        return [node, str(main)], env

    def extra(port: int) -> dict[str, str]:
        return {"tls_endpoint": f"https://127.0.0.1:{tls_ports[port]}"}

    return start_server("kinesis-local", command, _kinesis_ready, timeout=timeout, extra=extra)


def _dynamodb_ready(endpoint: str) -> None:
    _probe_client("dynamodb", endpoint).list_tables()


def start_dynalite(
    node_modules: Path | None = None, timeout: float = DEFAULT_START_TIMEOUT
) -> LocalServer:
    """dynalite (DynamoDB, in memory) with tables ACTIVE at once instead of after 500 ms."""
    modules = node_modules or node_modules_dir()
    node = node_executable()
    cli = _npm_entry(modules, "dynalite", "cli.js")

    def command(port: int) -> tuple[list[str], dict[str, str]]:
        argv = [node, str(cli), "--host", "127.0.0.1", "--port", str(port)]
        argv += ["--createTableMs", "0", "--deleteTableMs", "0", "--updateTableMs", "0"]
        return argv, scrubbed_environ()

    return start_server("dynalite", command, _dynamodb_ready, timeout=timeout)
