#!/usr/bin/env python3
"""A child that speaks the protocol by hand and, on chosen shards, writes garbage to stdout.

Every shard's child logs its records to KCL_SAMPLE_OUTPUT (the record logger's format) and
checkpoints after each batch. KCL_GARBAGE_PLAN names what the child of a shard does besides,
before each ``status`` it sends (``shardId-000000000000=random_bytes,shardId-...=wrong_types``;
shards not named behave):

  random_bytes     1-8 lines of random bytes (any byte but newline; up to 4 KiB each)
  huge_lines       two lines of 1-3 MiB under the daemon's 16 MiB limit (junk, and a JSON
                   object with an unknown action)
  wrong_types      valid JSON with wrong types (action a number, null, a list ...), JSON nested
                   past any parser's depth, invalid UTF-8, truncated JSON; and during
                   processRecords checkpoint requests with fields of the wrong type or shape,
                   each of which the daemon must answer with IllegalArgumentException
  bad_status_once  once per run: a status whose responseFor is a number (the daemon replaces
                   the child)
  oversized_once   once per run: a 17 MiB line (over the limit: the daemon replaces the child)
  flood            100 short lines that are not JSON (the daemon logs only some of them,
                   and counts the rest)

"Once per run" uses a marker file, KCL_FAULT_MARKER + the shard id. A garbage line is always
finished with a newline before the next real message. The child counts its garbage lines and
appends ``garbage <TAB> shard <TAB> count`` to KCL_CHILD_EVENTS (if set) when it exits.
Randomness comes from KCL_GARBAGE_SEED (default 0) and the shard id.
"""

from __future__ import annotations

import json
import os
import random
import sys
from typing import Any

stdin = sys.stdin.buffer
stdout = sys.stdout.buffer
output = os.environ.get("KCL_SAMPLE_OUTPUT")
events = os.environ.get("KCL_CHILD_EVENTS")
marker = os.environ.get("KCL_FAULT_MARKER", "")
plan = dict(
    entry.split("=", 1) for entry in os.environ.get("KCL_GARBAGE_PLAN", "").split(",") if entry
)
seed = os.environ.get("KCL_GARBAGE_SEED", "0")
garbage_lines = 0
shard_id = ""
mode = ""
rng = random.Random()


def write_line(data: bytes) -> None:
    stdout.write(data + b"\n")
    stdout.flush()


def garbage(data: bytes) -> None:
    global garbage_lines
    garbage_lines += 1
    write_line(data)


def send(message: dict[str, Any]) -> None:
    write_line(json.dumps(message).encode())


def read_message() -> dict[str, Any]:
    line = stdin.readline()
    if not line:
        finish()
    message: dict[str, Any] = json.loads(line)
    return message


def finish() -> None:
    if events and shard_id:
        with open(events, "a", encoding="utf-8") as handle:
            handle.write(f"garbage\t{shard_id}\t{garbage_lines}\n")
    sys.exit(0)


def checkpoint(sequence_number: Any, sub_sequence_number: Any = None) -> Any:
    send({"action": "checkpoint", "sequenceNumber": sequence_number,
          "subSequenceNumber": sub_sequence_number})  # fmt: skip
    reply = read_message()
    if reply.get("action") != "checkpoint":
        sys.exit(f"garbage child: expected a checkpoint reply, got {reply!r:.200}")
    return reply.get("error")


def refused(sequence_number: Any, sub_sequence_number: Any = None) -> None:
    """A checkpoint with a wrong type (sent raw) that must be refused as an illegal argument."""
    error = checkpoint(sequence_number, sub_sequence_number)
    if error != "IllegalArgumentException":
        sys.exit(f"garbage child: {sequence_number!r} was answered {error!r}")


def first_time() -> bool:
    path = f"{marker}.{shard_id}"
    if not marker or os.path.exists(path):
        return False
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(str(os.getpid()))
    return True


def random_bytes() -> None:
    for _ in range(rng.randint(1, 8)):
        data = bytes(rng.randrange(256) for _ in range(rng.randint(0, 4096)))
        garbage(data.replace(b"\n", b" "))


def huge_lines() -> None:
    junk = bytes(rng.randrange(32, 127) for _ in range(64))
    garbage(junk * (rng.randint(1, 3) * 1024 * 1024 // 64))
    filler = "x" * (rng.randint(1, 3) * 1024 * 1024)
    garbage(json.dumps({"action": "dance", "filler": filler}).encode())


def wrong_types(action: str) -> None:
    for value in (5, None, ["status"], {"responseFor": "processRecords"}, True, 1.5):
        garbage(json.dumps({"action": value, "responseFor": "processRecords"}).encode())
    garbage(b"[" * 100_000 + b"]" * 100_000)
    garbage(b'{"action": "status", "responseFor": "\xff\xfe"}')
    garbage(b'{"action": "checkpoint", "sequenceNumber": NaN}')
    garbage(b'{"action": "checkpoint"')
    garbage(json.dumps({"action": "checkpoint", "sequenceNumber": "1", "prepare": "yes"})[:-1]
            .encode())  # fmt: skip
    if action != "processRecords":
        return  # outside processRecords a checkpoint is refused for another reason
    # Checkpoint requests of the wrong shape: each is answered (IllegalArgumentException).
    for sequence_number, sub in (([1], None), (True, None), ({"n": 1}, None), (1.5, None),
                                 ("12ab", None), ("", None), ("1", "x"), ("1", 1.5),
                                 ("1", -1), ("1", [0])):  # fmt: skip
        refused(sequence_number, sub)


def misbehave(action: str) -> None:
    if mode == "random_bytes":
        random_bytes()
    elif mode == "huge_lines":
        huge_lines()
    elif mode == "wrong_types":
        wrong_types(action)
    elif mode == "flood":
        for n in range(100):
            garbage(b"not json %d" % n)
    elif mode == "oversized_once" and first_time():
        garbage(b"y" * (17 * 1024 * 1024))


def log_records(records: list[dict[str, Any]]) -> None:
    if output and records:
        text = "".join(
            f"{shard_id}\t{r['sequenceNumber']}\t{r['subSequenceNumber']}\t{r['partitionKey']}"
            f"\t{r['data']}\n"
            for r in records
        )
        fd = os.open(output, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)


def main() -> None:
    global shard_id, mode
    while True:
        message = read_message()
        action = message["action"]
        if action == "initialize":
            shard_id = message["shardId"]
            mode = plan.get(shard_id, "")
            rng.seed(f"{seed}:{shard_id}:{os.getpid()}")
        elif action == "processRecords":
            records = message["records"]
            log_records(records)
            if records:
                last = records[-1]
                error = checkpoint(last["sequenceNumber"], last["subSequenceNumber"])
                if error is not None:
                    print(f"checkpoint failed: {error}", file=sys.stderr, flush=True)
            if mode == "bad_status_once" and first_time():
                send({"action": "status", "responseFor": 42})
                continue
        elif action in ("shardEnded", "shutdownRequested"):
            checkpoint(None)
        misbehave(action)
        send({"action": "status", "responseFor": action})


if __name__ == "__main__":
    main()
