"""The embedded local backend: a moto server on loopback for Kinesis and DynamoDB.

Lets the demo (and anyone without an AWS account) run the real daemon on one
machine. moto runs as its own process, as a real AWS endpoint would, so the
daemon under test and the tools around it talk to one independent server.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import IO, Any

LOCAL_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "local",
    "AWS_SECRET_ACCESS_KEY": "local",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel's pick for port 0)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_process(process: subprocess.Popen[Any], timeout_s: float = 5.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout_s``; reaped either way."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass
class LocalBackend:
    """A running moto server; stop it with ``stop()`` or use it as a context manager."""

    endpoint: str
    process: subprocess.Popen[bytes]
    _log: IO[bytes] = field(repr=False)

    def client(self, service: str) -> Any:
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=LOCAL_CREDENTIALS["AWS_DEFAULT_REGION"],
            aws_access_key_id=LOCAL_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=LOCAL_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )

    def output(self) -> str:
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")[-4000:]

    def stop(self) -> None:
        stop_process(self.process)
        self._log.close()

    def __enter__(self) -> LocalBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_moto(port: int | None = None, timeout_s: float = 30.0) -> LocalBackend:
    """Start ``moto.server`` on 127.0.0.1 and wait until it answers."""
    port = port or free_port()
    log = tempfile.TemporaryFile()  # noqa: SIM115 - LocalBackend owns and closes it
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, **LOCAL_CREDENTIALS},
    )
    backend = LocalBackend(f"http://127.0.0.1:{port}", process, log)
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            output = backend.output()
            backend.stop()
            raise RuntimeError(f"moto server exited at start: {output}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError as error:
            if time.monotonic() > deadline:
                backend.stop()
                raise RuntimeError(
                    f"moto server did not listen on port {port} within {timeout_s} s"
                ) from error
            time.sleep(0.05)
    return backend
