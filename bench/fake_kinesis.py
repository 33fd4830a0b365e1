#!/usr/bin/env python3
"""A loopback Kinesis endpoint that answers GetRecords at full speed, for benchmarks.

No emulator can feed a daemon hundreds of thousands of records a second
(moto manages about 15k), so the relay benchmark brings its own endpoint: a
threaded HTTP server on 127.0.0.1 that speaks just enough of the Kinesis JSON
1.1 protocol (dispatch on ``X-Amz-Target``) for kcl-daemon:

* ``ListShards``: N open shards splitting the hash-key space evenly;
* ``GetShardIterator``: an iterator that names the shard and a batch number
  (TRIM_HORIZON and LATEST start at batch 0; AT/AFTER_SEQUENCE_NUMBER resume
  from the sequence number, which encodes its batch);
* ``GetRecords``: a prepared response of ``--records`` records of ``--size``
  random bytes (``plain``), or of ``--aggregates`` KPL aggregates of
  ``--size``-byte user records (``aggregated``, built with the producer's
  own Aggregator, partition keys chosen to hash into the shard), with
  ``MillisBehindLatest`` 60000 so the daemon never idles. Records advance:
  every record of every response has its own increasing 56-digit sequence
  number. A response body is assembled from pre-encoded pieces with one
  slice assignment and one ``bytes.join`` (about a millisecond), so the
  server stays a small fraction of the CPU the daemon uses;
* ``DescribeStreamSummary``, in case a client asks.

Requests whose target starts with ``DynamoDB_20120810.`` are forwarded
unchanged to ``--dynamodb`` (a moto server) and counted by operation, so one
endpoint also measures what the lease table costs. ``GET /stats`` returns the
counters as JSON: GetRecords calls, records served, DynamoDB calls by name.

Run it as a process (it prints ``listening <url>`` on its first line), or use
:class:`FakeKinesisProcess` from a harness.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import http.client
import os
import random
import subprocess
import sys
import threading
import urllib.parse
import urllib.request
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import orjson  # noqa: E402

from daemon.local_backend import stop_process  # noqa: E402
from protocol.aggregation import Aggregator, UserRecord  # noqa: E402

STREAM = "bench-stream"
MAX_HASH_KEY = 2**128 - 1
#: Sequence number = 34 digits fixed per shard + 14 digits of batch + 8 of index.
_HEAD_DIGITS = 34
_BATCH_DIGITS = 14
_INDEX_DIGITS = 8
_MILLIS_BEHIND = 60_000
_ARRIVAL_MS = 1_700_000_000_123
_DYNAMODB_PREFIX = "DynamoDB_20120810."
_KINESIS_PREFIX = "Kinesis_20131202."
_JSON = "application/x-amz-json-1.1"


def shard_id(index: int) -> str:
    return f"shardId-{index:012d}"


def sequence_head(index: int) -> str:
    return f"49590338271490256608559692538361{index:02d}"


def hash_range(index: int, shards: int) -> tuple[int, int]:
    width = (MAX_HASH_KEY + 1) // shards
    start = index * width
    end = MAX_HASH_KEY if index == shards - 1 else start + width - 1
    return start, end


def keys_in_range(low: int, high: int, count: int, rng: random.Random) -> list[str]:
    """Partition keys whose MD5 hash key lies in ``low..high`` (KPL routing)."""
    keys: list[str] = []
    while len(keys) < count:
        key = f"pk-{rng.getrandbits(48):012x}"
        value = int.from_bytes(hashlib.md5(key.encode()).digest(), "big")
        if low <= value <= high:
            keys.append(key)
    return keys


@dataclass
class Template:
    """A GetRecords body cut where the batch number goes.

    ``parts`` alternates fixed text and batch-number slots (odd indexes).
    """

    parts: list[bytes]
    user_records: int  # records a child sees per response (after deaggregation)
    kinesis_records: int

    def render(self, batch: int, next_iterator: str) -> bytes:
        parts = self.parts
        slot = b"%0*d" % (_BATCH_DIGITS, batch)
        parts[1:-1:2] = [slot] * ((len(parts) - 1) // 2)
        parts[-1] = next_iterator.encode() + b'"}'
        return b"".join(parts)


def _record_object(data: bytes, key: str, arrival_ms: int) -> bytes:
    """A record's JSON members after its sequence number, closing brace included.

    The arrival time is written as AWS writes it (epoch seconds, scientific notation).
    """
    return b'"ApproximateArrivalTimestamp":%s,"Data":"%s","PartitionKey":%s}' % (
        b"%s.%sE9" % (str(arrival_ms)[:1].encode(), str(arrival_ms)[1:].encode()),
        base64.b64encode(data),
        orjson.dumps(key),
    )


def build_template(
    index: int,
    shards: int,
    mode: str,
    records: int,
    size: int,
    aggregates: int,
    seed: int,
    millis_behind: int = _MILLIS_BEHIND,
) -> Template:
    """The GetRecords body of one shard, with a slot for the batch number in every
    sequence number (distinct payloads repeat after 256 records or 8 aggregates)."""
    rng = random.Random(seed * 1000 + index)
    if mode == "plain":
        keys = [f"partition-{n}" for n in range(64)]
        # 256 distinct payloads, about 40 records to an arrival millisecond, as
        # when a shard is read at a few MB/s.
        members = [
            _record_object(rng.randbytes(size), keys[n % 64], _ARRIVAL_MS + n) for n in range(256)
        ]
        count = user = records
    elif mode == "aggregated":
        keys = keys_in_range(*hash_range(index, shards), 32, rng)
        members = []
        sizes: list[int] = []
        for _ in range(8):
            aggregator = Aggregator()
            n = 0
            while aggregator.try_add(UserRecord(keys[n % len(keys)], rng.randbytes(size))):
                n += 1
            members.append(_record_object(aggregator.encode(), keys[0], _ARRIVAL_MS + len(sizes)))
            sizes.append(aggregator.count)
        count = aggregates
        user = sum(sizes[n % len(sizes)] for n in range(aggregates))
    else:
        raise ValueError(f"unknown mode {mode!r}")
    head = b'{"SequenceNumber":"' + sequence_head(index).encode()
    parts = [b'{"MillisBehindLatest":%d,"Records":[' % millis_behind + head]
    for n in range(count):
        parts.append(b"")  # the batch number goes here
        tail = b'%0*d",' % (_INDEX_DIGITS, n) + members[n % len(members)]
        tail += b"," + head if n + 1 < count else b'],"NextShardIterator":"'
        parts.append(tail)
    parts.append(b'"}')
    return Template(parts, user, count)


class State:
    """What the server serves and counts; shared by the handler threads."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.shards = args.shards
        self.templates = [
            build_template(
                n,
                args.shards,
                args.mode,
                args.records,
                args.size,
                args.aggregates,
                args.seed,
                args.millis_behind,
            )
            for n in range(args.shards)
        ]
        self.dynamodb = urllib.parse.urlsplit(args.dynamodb) if args.dynamodb else None
        self.lock = threading.Lock()
        self.calls: Counter[str] = Counter()
        self.records_served = 0
        self.user_records_served = 0
        self.local = threading.local()

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                "calls": dict(self.calls),
                "records_served": self.records_served,
                "user_records_served": self.user_records_served,
                "user_records_per_response": self.templates[0].user_records,
                "kinesis_records_per_response": self.templates[0].kinesis_records,
            }

    def count(self, name: str) -> None:
        with self.lock:
            self.calls[name] += 1

    # -- Kinesis ----------------------------------------------------------------------

    def kinesis(self, operation: str, request: dict[str, Any]) -> tuple[int, bytes]:
        self.count(operation)
        if operation == "GetRecords":
            return self.get_records(request)
        if operation == "ListShards":
            return 200, orjson.dumps({"Shards": [self.shard(n) for n in range(self.shards)]})
        if operation == "GetShardIterator":
            return self.get_shard_iterator(request)
        if operation == "DescribeStreamSummary":
            return 200, orjson.dumps(
                {
                    "StreamDescriptionSummary": {
                        "StreamName": STREAM,
                        "StreamARN": f"arn:aws:kinesis:us-east-1:123456789012:stream/{STREAM}",
                        "StreamStatus": "ACTIVE",
                        "RetentionPeriodHours": 24,
                        "StreamCreationTimestamp": 1700000000,
                        "EnhancedMonitoring": [],
                        "OpenShardCount": self.shards,
                    }
                }
            )
        return 400, orjson.dumps(
            {"__type": "UnknownOperationException", "message": f"{operation} is not served here"}
        )

    def shard(self, index: int) -> dict[str, Any]:
        low, high = hash_range(index, self.shards)
        return {
            "ShardId": shard_id(index),
            "HashKeyRange": {"StartingHashKey": str(low), "EndingHashKey": str(high)},
            "SequenceNumberRange": {
                "StartingSequenceNumber": sequence_head(index) + "0" * 22,
            },
        }

    def get_shard_iterator(self, request: dict[str, Any]) -> tuple[int, bytes]:
        wanted = request.get("ShardId", "")
        try:
            index = int(wanted.rsplit("-", 1)[1])
        except (IndexError, ValueError):
            index = -1
        if not 0 <= index < self.shards:
            return 400, orjson.dumps(
                {"__type": "ResourceNotFoundException", "message": f"no shard {wanted}"}
            )
        kind = request.get("ShardIteratorType")
        batch = 0
        if kind in ("AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER"):
            sequence = str(request.get("StartingSequenceNumber", ""))
            batch = int(sequence[_HEAD_DIGITS : _HEAD_DIGITS + _BATCH_DIGITS] or 0)
            position = int(sequence[_HEAD_DIGITS + _BATCH_DIGITS :] or 0)
            last = self.templates[index].kinesis_records - 1
            if kind == "AFTER_SEQUENCE_NUMBER" and position >= last:
                batch += 1
        return 200, orjson.dumps({"ShardIterator": f"it-{index}-{batch}"})

    def get_records(self, request: dict[str, Any]) -> tuple[int, bytes]:
        try:
            _, index_text, batch_text = str(request.get("ShardIterator", "")).split("-")
            index, batch = int(index_text), int(batch_text)
        except ValueError:
            return 400, orjson.dumps(
                {"__type": "InvalidArgumentException", "message": "bad shard iterator"}
            )
        template = self.templates[index]
        # Each thread renders into its own copy of the pieces list.
        copies = getattr(self.local, "templates", None)
        if copies is None:
            copies = self.local.templates = {}
        parts = copies.get(index)
        if parts is None:
            parts = copies[index] = Template(
                list(template.parts), template.user_records, template.kinesis_records
            )
        body = parts.render(batch, f"it-{index}-{batch + 1}")
        with self.lock:
            self.records_served += template.kinesis_records
            self.user_records_served += template.user_records
        return 200, body

    # -- DynamoDB, forwarded ----------------------------------------------------------

    def forward(
        self, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        assert self.dynamodb is not None
        connection = getattr(self.local, "dynamodb", None)
        for attempt in range(2):
            if connection is None:
                connection = http.client.HTTPConnection(
                    self.dynamodb.hostname, self.dynamodb.port, timeout=30
                )
                self.local.dynamodb = connection
            try:
                connection.request("POST", path, body, headers)
                response = connection.getresponse()
                data = response.read()
                return response.status, response.getheaders(), data
            except (ConnectionError, http.client.HTTPException):
                connection.close()
                connection = self.local.dynamodb = None
                if attempt:
                    raise
        raise AssertionError("unreachable")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        body = orjson.dumps(self.server.state.stats())
        self._reply(200, body, [("Content-Type", "application/json")])

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        target = self.headers.get("X-Amz-Target", "")
        state = self.server.state
        if target.startswith(_DYNAMODB_PREFIX):
            if state.dynamodb is None:
                self._reply(400, b'{"__type":"UnknownOperationException"}', [])
                return
            state.count("DynamoDB." + target[len(_DYNAMODB_PREFIX) :])
            headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
            status, reply_headers, data = state.forward(self.path, headers, raw)
            keep = [
                (k, v)
                for k, v in reply_headers
                if k.lower()
                not in ("content-length", "connection", "transfer-encoding", "server", "date")
            ]
            self._reply(status, data, keep)
            return
        operation = target[len(_KINESIS_PREFIX) :] if target.startswith(_KINESIS_PREFIX) else target
        try:
            request = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            request = {}
        status, body = state.kinesis(operation, request)
        self._reply(status, body, [("Content-Type", _JSON)])

    def _reply(self, status: int, body: bytes, headers: list[tuple[str, str]]) -> None:
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-amzn-RequestId", "bench")
        self.end_headers()
        self.wfile.write(body)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], state: State) -> None:
        super().__init__(address, Handler)
        self.state = state


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--shards", type=int, default=1)
    parser.add_argument("--mode", choices=("plain", "aggregated"), default="plain")
    parser.add_argument("--records", type=int, default=10_000, help="records per response (plain)")
    parser.add_argument("--aggregates", type=int, default=40, help="aggregates per response")
    parser.add_argument("--size", type=int, default=100, help="bytes per user record")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--millis-behind", type=int, default=60_000, help="MillisBehindLatest (0: caught up)"
    )
    parser.add_argument("--dynamodb", default=None, help="DynamoDB endpoint to forward to")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    server = Server(("127.0.0.1", args.port), State(args))
    print(f"listening http://127.0.0.1:{server.server_address[1]}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever(poll_interval=0.2)


class FakeKinesisProcess:
    """The server as a child process of a harness; a context manager."""

    def __init__(self, **options: Any) -> None:
        argv = [sys.executable, str(Path(__file__).resolve())]
        for key, value in options.items():
            if value is not None:
                argv += [f"--{key.replace('_', '-')}", str(value)]
        self.process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env={**os.environ}
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline().decode().strip()
        if not line.startswith("listening "):
            self.process.kill()
            raise RuntimeError(f"fake Kinesis did not start: {line!r}")
        self.endpoint = line.split(" ", 1)[1]

    @property
    def pid(self) -> int:
        return self.process.pid

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.endpoint + "/stats", timeout=10) as response:
            result: dict[str, Any] = orjson.loads(response.read())
            return result

    def stop(self) -> None:
        stop_process(self.process)

    def __enter__(self) -> FakeKinesisProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    main()
