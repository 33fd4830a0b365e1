"""A fault-injecting HTTP proxy for the AWS JSON protocols (Kinesis, DynamoDB), on loopback.

    with FaultProxy(moto.endpoint) as proxy:   # kinesisEndpoint = dynamoDBEndpoint = proxy.endpoint
        proxy.add(Rule(throttle("kinesis"), service="kinesis", operations={"GetRecords"},
                       probability=0.2))
        proxy.outage("dynamodb", seconds=10)   # every DynamoDB call reset for 10 s
        assert proxy.injected("throttle") > 0

Requests are routed by their X-Amz-Target header (``Kinesis_20131202.GetRecords``). For each,
the schedule -- a thread-safe list of rules that a test changes while the daemon runs -- picks
the first live rule that matches and fires; with none the request is forwarded as it is with
http.client (SigV4 signs the Host header, which names the proxy; moto, kinesis-local and
dynalite ignore signatures). A rule's fault is one of: an AWS JSON error answered by the proxy
(:func:`throttle`, :func:`server_error`, :func:`expired_iterator`); ``Delay`` (forwarded after
a pause); ``Reset`` (the connection reset before anything is forwarded); ``LoseResponse``
(forwarded, so the backend applies it, then reset: the caller cannot know whether its write
happened); ``Blackhole`` (no answer while the rule is live, then a reset: a hanging backend).
An outage (:meth:`FaultProxy.outage`) is a rule placed first that fails every request to one
service for N seconds.

The rule logic is pure (injectable clock and random seed); the server is a ThreadingHTTPServer
(a thread per client connection, HTTP/1.1 keep-alive, one upstream connection per client one).
"""

from __future__ import annotations

import collections
import contextlib
import http.client
import io
import json
import random
import socket
import struct
import sys
import threading
import time
import uuid
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

KINESIS = "kinesis"
DYNAMODB = "dynamodb"
OTHER = "other"
_TARGET_PREFIXES = {"Kinesis_": KINESIS, "DynamoDB_": DYNAMODB}
_CONTENT_TYPES = {KINESIS: "application/x-amz-json-1.1", DYNAMODB: "application/x-amz-json-1.0"}
_HOP_BY_HOP = frozenset(
    ("connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
     "transfer-encoding", "upgrade", "content-length")
)  # fmt: skip
_UPSTREAM_TIMEOUT_S = 60.0
_HOLD_POLL_S = 0.05


# -- faults ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """The proxy answers itself with ``status`` and an AWS JSON error body."""

    status: int
    error_type: str
    message: str = ""
    name: str = "answer"


@dataclass(frozen=True)
class Delay:
    """Forward after ``seconds``."""

    seconds: float
    name: str = "delay"


@dataclass(frozen=True)
class Reset:
    """Reset the connection (RST) without forwarding."""

    name: str = "reset"


@dataclass(frozen=True)
class LoseResponse:
    """Forward (the backend applies the call), then reset instead of answering."""

    name: str = "lose_response"


@dataclass(frozen=True)
class Blackhole:
    """Hold the request unanswered while its rule is live, then reset."""

    name: str = "blackhole"


Fault = Answer | Delay | Reset | LoseResponse | Blackhole


def throttle(service: str) -> Answer:
    """What a throttled call gets: Kinesis ProvisionedThroughputExceededException, DynamoDB
    ThrottlingException (both HTTP 400)."""
    if service == DYNAMODB:
        return Answer(400, "ThrottlingException", "Rate of requests exceeds the allowed throughput.",
                      "throttle")  # fmt: skip
    return Answer(400, "ProvisionedThroughputExceededException",
                  "Rate exceeded for shard in stream.", "throttle")  # fmt: skip


def dynamodb_capacity_exceeded() -> Answer:
    """DynamoDB's other throttling answer: the table's provisioned throughput is used up."""
    return Answer(400, "ProvisionedThroughputExceededException",
                  "The level of configured provisioned throughput for the table was exceeded.",
                  "throttle")  # fmt: skip


def server_error(status: int = 500) -> Answer:
    """500 InternalFailure or 503 ServiceUnavailable."""
    error_type = "ServiceUnavailable" if status == 503 else "InternalFailure"
    return Answer(status, error_type, "injected server error", "server_error")


def expired_iterator() -> Answer:
    """What GetRecords answers for an iterator older than 5 minutes."""
    return Answer(400, "ExpiredIteratorException", "Iterator expired.", "expired_iterator")


# -- rules and the schedule -------------------------------------------------------------------


@dataclass(eq=False)
class Rule:
    """When to inject ``fault``.

    A rule matches requests to ``service`` (None: any) whose operation is in ``operations``
    (empty: any). Of the matching requests it fires on every ``every``-th one, each time with
    ``probability``; it retires after firing ``limit`` times or ``duration_s`` seconds after it
    was added (None: never).
    """

    fault: Fault
    service: str | None = None
    operations: Collection[str] = ()
    probability: float = 1.0
    every: int = 1
    limit: int | None = None
    duration_s: float | None = None
    matched: int = field(default=0, init=False)
    fired: int = field(default=0, init=False)
    expires_at: float | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.operations = frozenset(self.operations)
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"probability must be within [0, 1], got {self.probability}")
        if self.every < 1:
            raise ValueError(f"every must be at least 1, got {self.every}")

    def matches(self, service: str, operation: str) -> bool:
        if self.service is not None and self.service != service:
            return False
        return not self.operations or operation in self.operations

    def retired(self, now: float) -> bool:
        if self.limit is not None and self.fired >= self.limit:
            return True
        return self.expires_at is not None and now >= self.expires_at


class FaultSchedule:
    """The live rules, in order; :meth:`decide` picks the one (if any) for a request."""

    def __init__(self, seed: int = 0, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._rules: list[Rule] = []
        self._rng = random.Random(seed)
        self._clock = clock

    def add(self, rule: Rule, *, first: bool = False) -> Rule:
        with self._lock:
            if rule.duration_s is not None:
                rule.expires_at = self._clock() + rule.duration_s
            if first:
                self._rules.insert(0, rule)
            else:
                self._rules.append(rule)
        return rule

    def remove(self, rule: Rule) -> None:
        with self._lock:
            if rule in self._rules:
                self._rules.remove(rule)

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def rules(self) -> list[Rule]:
        """The rules not yet retired, in order."""
        with self._lock:
            self._prune(self._clock())
            return list(self._rules)

    def is_live(self, rule: Rule) -> bool:
        with self._lock:
            return rule in self._rules and not rule.retired(self._clock())

    def decide(self, service: str, operation: str) -> Rule | None:
        """The rule whose fault this request gets, or None (forward it)."""
        with self._lock:
            now = self._clock()
            self._prune(now)
            for rule in self._rules:
                if not rule.matches(service, operation):
                    continue
                rule.matched += 1
                if rule.matched % rule.every:
                    continue
                if rule.probability < 1.0 and self._rng.random() >= rule.probability:
                    continue
                rule.fired += 1
                return rule
            return None

    def _prune(self, now: float) -> None:
        self._rules = [rule for rule in self._rules if not rule.retired(now)]


def route(target: str) -> tuple[str, str]:
    """``(service, operation)`` of an X-Amz-Target value (``Kinesis_20131202.GetRecords``)."""
    prefix, _, operation = target.partition(".")
    for start, service in _TARGET_PREFIXES.items():
        if prefix.startswith(start) and operation:
            return service, operation
    return OTHER, target


# -- the server -----------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        self._upstream: dict[str, http.client.HTTPConnection] = {}

    def finish(self) -> None:
        for connection in self._upstream.values():
            connection.close()
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the proxy's counters say what happened."""

    def do_POST(self) -> None:
        self._handle()

    do_GET = do_PUT = do_DELETE = do_HEAD = do_POST

    def _handle(self) -> None:
        proxy = self.server.proxy
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        service, operation = route(self.headers.get("X-Amz-Target", "") or self.path)
        rule = proxy.schedule.decide(service, operation)
        fault = rule.fault if rule is not None else None
        proxy._count(service, operation, fault)
        if isinstance(fault, Answer):
            self._answer(fault, service)
            return
        if isinstance(fault, Reset):
            self._reset()
            return
        if isinstance(fault, Blackhole):
            assert rule is not None
            proxy._hold(rule)
            self._reset()
            return
        if isinstance(fault, Delay):
            proxy._pause(fault.seconds)
        try:
            status, headers, payload = self._forward(proxy.upstream_for(service), body)
        except (OSError, http.client.HTTPException):
            # The backend itself is gone: the caller sees what it would see without us.
            self._reset()
            return
        if isinstance(fault, LoseResponse):
            self._reset()
            return
        self._send(status, headers, payload)

    def _forward(self, upstream: str, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        headers["Content-Length"] = str(len(body))
        for attempt in (1, 2):
            connection = self._upstream.get(upstream)
            reused = connection is not None
            if connection is None:
                parts = urlsplit(upstream)
                connection = http.client.HTTPConnection(
                    parts.hostname or "127.0.0.1", parts.port or 80, timeout=_UPSTREAM_TIMEOUT_S
                )
                self._upstream[upstream] = connection
            try:
                connection.request(self.command, self.path, body=body, headers=headers)
                response = connection.getresponse()
                payload = response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                connection.close()
                del self._upstream[upstream]
                # A kept-alive upstream connection the backend had closed: once more, fresh.
                if reused and attempt == 1:
                    continue
                raise
            kept = [(k, v) for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP]
            if response.will_close:
                connection.close()
                del self._upstream[upstream]
            return response.status, kept, payload
        raise AssertionError("unreachable: the second attempt returns or raises")

    def _send(self, status: int, headers: list[tuple[str, str]], payload: bytes) -> None:
        self.send_response_only(status)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _answer(self, fault: Answer, service: str) -> None:
        payload = json.dumps({"__type": fault.error_type, "message": fault.message}).encode()
        headers = [
            ("Content-Type", _CONTENT_TYPES.get(service, "application/json")),
            ("x-amzn-RequestId", str(uuid.uuid4())),
        ]
        self._send(fault.status, headers, payload)

    def _reset(self) -> None:
        """Close with SO_LINGER 0, so the client gets an RST, not a tidy FIN."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # The socket closes for real only once its file objects are closed too; the base
        # class still flushes wfile after this returns, into a stand-in.
        for stream in (self.rfile, self.wfile):
            with contextlib.suppress(OSError):
                stream.close()
        self.wfile = io.BytesIO()
        with contextlib.suppress(OSError):
            self.connection.close()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], proxy: FaultProxy) -> None:
        self.proxy = proxy
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up mid-request is normal under fault injection; anything
        # else is a bug in the proxy, kept for the tests to see.
        error = sys.exc_info()[1]
        if not isinstance(error, OSError):
            self.proxy.handler_errors.append(repr(error))


class FaultProxy:
    """The proxy; ``upstream`` is one endpoint URL for every service, or one per service
    (``{"kinesis": ..., "dynamodb": ...}``, with ``"*"`` as the fallback)."""

    def __init__(
        self,
        upstream: str | Mapping[str, str],
        *,
        seed: int = 0,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._upstreams = {"*": upstream} if isinstance(upstream, str) else dict(upstream)
        self.schedule = FaultSchedule(seed, clock)
        self.handler_errors: list[str] = []
        self._address = (host, port)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._requests: collections.Counter[tuple[str, str]] = collections.Counter()
        self._injected: collections.Counter[tuple[str, str, str]] = collections.Counter()

    # -- life ----------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        server = _Server(self._address, self)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True,
            name="fault-proxy",
        )  # fmt: skip
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; held and delayed requests end at once."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "start() the proxy first"
        return int(self._server.server_address[1])

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def upstream_for(self, service: str) -> str:
        return self._upstreams.get(service) or self._upstreams["*"]

    # -- rules ---------------------------------------------------------------------------

    def add(self, rule: Rule, *, first: bool = False) -> Rule:
        return self.schedule.add(rule, first=first)

    def remove(self, rule: Rule) -> None:
        self.schedule.remove(rule)

    def clear(self) -> None:
        self.schedule.clear()

    def outage(self, service: str | None, seconds: float, *, blackhole: bool = False) -> Rule:
        """Every request to ``service`` (None: all) fails for ``seconds`` from now: reset at
        once, or with ``blackhole`` held unanswered until the outage ends."""
        fault: Fault = Blackhole() if blackhole else Reset()
        return self.add(Rule(fault, service=service, duration_s=seconds), first=True)

    # -- counters ------------------------------------------------------------------------

    def requests(self, service: str | None = None, operation: str | None = None) -> int:
        """Requests received (faulted or not) for the service and operation (None: any)."""
        with self._lock:
            return sum(
                count
                for (s, o), count in self._requests.items()
                if service in (None, s) and operation in (None, o)
            )

    def injected(
        self, fault: str | None = None, service: str | None = None, operation: str | None = None
    ) -> int:
        """Faults injected, by fault name (``throttle``, ``reset`` ...), service, operation."""
        with self._lock:
            return sum(
                count
                for (f, s, o), count in self._injected.items()
                if fault in (None, f) and service in (None, s) and operation in (None, o)
            )

    def injected_summary(self) -> dict[str, int]:
        """``{"throttle kinesis GetRecords": 12, ...}``, for reports."""
        with self._lock:
            return {" ".join(key): count for key, count in sorted(self._injected.items())}

    # -- for the handler -----------------------------------------------------------------

    def _count(self, service: str, operation: str, fault: Fault | None) -> None:
        with self._lock:
            self._requests[(service, operation)] += 1
            if fault is not None:
                self._injected[(fault.name, service, operation)] += 1

    def _pause(self, seconds: float) -> None:
        self._stopping.wait(seconds)

    def _hold(self, rule: Rule) -> None:
        while self.schedule.is_live(rule):
            if self._stopping.wait(_HOLD_POLL_S):
                return
