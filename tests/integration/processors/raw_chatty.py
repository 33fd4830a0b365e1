#!/usr/bin/env python3
"""A child that speaks the protocol by hand and sprinkles garbage between lines.

Before every status it writes: a blank line, a non-JSON line, JSON that is not
an object, an unknown action, and a checkpoint request with a wrong field
type (which the daemon must answer with IllegalArgumentException). Then it
logs its records to KCL_SAMPLE_OUTPUT and checkpoints properly. The daemon
must skip the noise and deliver everything.

KCL_RAW_MODE picks extra misbehaviour, once per run (KCL_FAULT_MARKER file):
  bad_checkpoints    checkpoints that must be refused with IllegalArgumentException
                     (non-numeric, above the last record, negative sub-sequence)
  wrong_status_once  answer the first processRecords with a status for another action
  huge_line_once     write a 20 MB line before the first status
  record_columns     ask for the record-columns extension at initialize, then
                     exit with an error on any batch that does not use it
"""

import json
import os
import sys

output = os.environ.get("KCL_SAMPLE_OUTPUT")
mode = os.environ.get("KCL_RAW_MODE", "")
marker = os.environ.get("KCL_FAULT_MARKER", "")
out = sys.stdout
shard_id = None


def send(obj_or_text):
    text = obj_or_text if isinstance(obj_or_text, str) else json.dumps(obj_or_text)
    out.write(text + "\n")
    out.flush()


def read_message():
    line = sys.stdin.readline()
    if not line:
        sys.exit(0)
    return json.loads(line)


def noise():
    send("")
    send("this is not json")
    send("[1, 2, 3]")
    send({"action": "dance"})
    send({"action": "checkpoint", "sequenceNumber": {"nested": True}})
    reply = read_message()
    assert reply["action"] == "checkpoint" and reply["error"] == "IllegalArgumentException", reply


def checkpoint(sequence_number, sub_sequence_number=None):
    send(
        {
            "action": "checkpoint",
            "sequenceNumber": sequence_number,
            "subSequenceNumber": sub_sequence_number,
        }
    )
    reply = read_message()
    assert reply["action"] == "checkpoint", reply
    return reply["error"]


def first_time():
    """True once per run: the marker file records that the fault happened."""
    if not marker or os.path.exists(marker):
        return False
    with open(marker, "w") as handle:
        handle.write(str(os.getpid()))
    return True


def refused_checkpoints(last_sequence_number):
    for args in (("not-a-number",), (str(int(last_sequence_number) + 10**30),), ("1", -1)):
        error = checkpoint(*args)
        assert error == "IllegalArgumentException", (args, error)


while True:
    message = read_message()
    action = message["action"]
    if action == "initialize":
        shard_id = message["shardId"]
        if mode == "record_columns":
            assert message.get("recordColumns") is True, message
            send({"action": "status", "responseFor": action, "recordColumns": True})
            continue
    elif action == "processRecords":
        noise()
        if mode == "record_columns":
            if "records" in message:
                sys.exit(f"asked for recordColumns, got records: {str(message)[:200]}")
            columns = message["recordColumns"]
            names = list(columns)
            rows = zip(*columns.values(), strict=True)
            records = [dict(zip(names, values, strict=True)) for values in rows]
        else:
            records = message["records"]
        if output and records:
            with open(output, "a", encoding="utf-8") as handle:
                for record in records:
                    handle.write(
                        f"{shard_id}\t{record['sequenceNumber']}\t{record['subSequenceNumber']}"
                        f"\t{record['partitionKey']}\t{record['data']}\n"
                    )
        if records and mode == "bad_checkpoints":
            refused_checkpoints(records[-1]["sequenceNumber"])
        if records:
            assert checkpoint(records[-1]["sequenceNumber"]) is None
        if mode == "wrong_status_once" and first_time():
            send({"action": "status", "responseFor": "initialize"})
            continue
        if mode == "huge_line_once" and first_time():
            out.write("x" * (20 * 1024 * 1024) + "\n")
            out.flush()
    elif action in ("shardEnded", "shutdownRequested"):
        checkpoint(None)
    send({"action": "status", "responseFor": action})
