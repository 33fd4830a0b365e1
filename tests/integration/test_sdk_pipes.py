"""The SDK and the sample processors as real child processes behind real pipes.

Each test plays the daemon's side with ChildConversation: write an action,
read the child's lines (checkpoint requests, then the status), reply.
"""

from __future__ import annotations

import base64
import os
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from processors.samples.transcripts import ChildConversation
from protocol.messages import (
    CheckpointReply,
    Initialize,
    LeaseLost,
    ProcessRecords,
    ShardEnded,
    ShutdownRequested,
)
from protocol.records import wire_record

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "processors" / "samples"
SHARD = "shardId-000000000005"


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(extra)
    return env


def module_child(module: str, *args: str, **env: str) -> ChildConversation:
    argv = [sys.executable, "-m", f"processors.samples.{module}", *args]
    return ChildConversation(argv, env=child_env(**env), cwd=REPO)


def records(*payloads: bytes, first_seq: int = 100, sub: int = 0) -> list[Any]:
    return [
        wire_record(base64.b64encode(p).decode(), f"pk-{i}", str(first_seq + i), 1700000000000, sub)
        for i, p in enumerate(payloads)
    ]


def receive_json(child: ChildConversation) -> dict[str, Any]:
    body = orjson.loads(child.receive())
    assert isinstance(body, dict)
    return body


def expect_status(child: ChildConversation, action: str) -> None:
    assert receive_json(child) == {"action": "status", "responseFor": action}


def answer_checkpoint(child: ChildConversation, error: str | None = None) -> dict[str, Any]:
    request = receive_json(child)
    assert request["action"] == "checkpoint"
    child.send(
        CheckpointReply(request["sequenceNumber"], request["subSequenceNumber"], error).encode()
    )
    return request


def initialize(child: ChildConversation) -> None:
    """As kcl-daemon does: it offers record columns, our SDK asks for them, batches use them."""
    child.send(Initialize(SHARD, "TRIM_HORIZON").encode())
    answer = {"action": "status", "responseFor": "initialize", "recordColumns": True}
    assert receive_json(child) == answer


def test_record_logger_writes_each_batch_before_checkpointing_its_last_record(tmp_path):
    output = tmp_path / "records.tsv"
    with module_child("record_logger", KCL_SAMPLE_OUTPUT=str(output)) as child:
        initialize(child)
        batch = records(b"one", b"two")
        batch[1]["partitionKey"] = "tab\there"
        child.send(ProcessRecords(batch, 0, columns=True).encode())
        request = receive_json(child)
        # The batch is in the file by the time the checkpoint is asked for.
        lines = output.read_text().splitlines()
        assert lines == [
            f"{SHARD}\t100\t0\tpk-0\t{batch[0]['data']}",
            f"{SHARD}\t101\t0\ttab\\there\t{batch[1]['data']}",
        ]
        assert (request["sequenceNumber"], request["subSequenceNumber"]) == ("101", 0)
        child.send(CheckpointReply("101", 0).encode())
        expect_status(child, "processRecords")
        child.send(ShardEnded().encode())
        assert answer_checkpoint(child)["sequenceNumber"] is None
        expect_status(child, "shardEnded")
        assert child.finish() == 0


def test_record_logger_without_output_variable_exits_with_a_message():
    with module_child("record_logger") as child:
        assert child.finish() != 0
        assert "KCL_SAMPLE_OUTPUT" in child.stderr_text


def test_sample_runs_as_an_executable_script_from_any_directory(tmp_path):
    script = SAMPLES / "record_logger.py"
    assert os.access(script, os.X_OK)
    assert script.read_text().startswith("#!/usr/bin/env python3\n")
    output = tmp_path / "records.tsv"
    # The shebang finds python3 on PATH: put this interpreter's first, as an
    # activated virtualenv would.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = child_env(KCL_SAMPLE_OUTPUT=str(output), PATH=path)
    with ChildConversation([str(script)], env=env, cwd=tmp_path) as child:
        initialize(child)
        child.send(ProcessRecords(records(b"x"), 0, columns=True).encode())
        answer_checkpoint(child)
        expect_status(child, "processRecords")
        assert child.finish() == 0
    assert output.read_text().startswith(f"{SHARD}\t100\t0\tpk-0\t")


def test_echo_processor_logs_records_to_stderr_and_checkpoints_every_batch():
    with module_child("echo_processor") as child:
        initialize(child)
        child.send(ProcessRecords(records(b"hello echo"), 0, columns=True).encode())
        assert answer_checkpoint(child)["sequenceNumber"] is None
        expect_status(child, "processRecords")
        child.send(ShutdownRequested().encode())
        answer_checkpoint(child)
        expect_status(child, "shutdownRequested")
        assert child.finish() == 0
        assert "hello echo" in child.stderr_text


def test_noop_processor_checkpoints_only_every_n_records():
    with module_child("noop_processor", "--checkpoint-every", "3") as child:
        initialize(child)
        child.send(ProcessRecords(records(b"a", b"b"), 0, columns=True).encode())
        expect_status(child, "processRecords")
        child.send(ProcessRecords(records(b"c", b"d", first_seq=200), 0, columns=True).encode())
        request = answer_checkpoint(child)
        assert (request["sequenceNumber"], request["subSequenceNumber"]) == ("201", 0)
        expect_status(child, "processRecords")
        child.send(LeaseLost().encode())
        expect_status(child, "leaseLost")
        assert child.finish() == 0


def test_retriable_checkpoint_errors_are_retried_by_the_samples(tmp_path):
    output = tmp_path / "records.tsv"
    with module_child("record_logger", KCL_SAMPLE_OUTPUT=str(output)) as child:
        initialize(child)
        child.send(ProcessRecords(records(b"x"), 0, columns=True).encode())
        answer_checkpoint(child, "ThrottlingException")
        answer_checkpoint(child, "KinesisClientLibDependencyException")
        answer_checkpoint(child)
        expect_status(child, "processRecords")
        assert child.finish() == 0


def test_stdout_noise_from_the_processor_never_reaches_the_protocol():
    with module_child("scripted_processor", KCL_SAMPLE_NOISE="1") as child:
        initialize(child)
        child.send(ProcessRecords(records(b"x"), 0, columns=True).encode())
        expect_status(child, "processRecords")
        child.send(LeaseLost().encode())
        expect_status(child, "leaseLost")
        assert child.finish() == 0
        assert "noise from print() during processRecords" in child.stderr_text
        assert "noise from fd 1 during processRecords" in child.stderr_text


def test_processor_exception_is_logged_and_the_action_still_answered():
    with module_child("scripted_processor", KCL_SAMPLE_RAISE="processRecords") as child:
        initialize(child)
        child.send(ProcessRecords(records(b"x"), 0, columns=True).encode())
        expect_status(child, "processRecords")
        child.send(ProcessRecords(records(b"y"), 0, columns=True).encode())
        expect_status(child, "processRecords")
        assert child.finish() == 0
        assert child.stderr_text.count("RuntimeError: scripted failure during processRecords") == 2
        assert "Traceback (most recent call last)" in child.stderr_text


def test_child_exits_cleanly_when_its_input_closes_between_actions():
    with module_child("scripted_processor") as child:
        initialize(child)
        assert child.finish() == 0


def test_child_exits_cleanly_when_its_input_closes_during_a_checkpoint(tmp_path):
    script = tmp_path / "script.json"
    script.write_bytes(orjson.dumps([[], [{"method": "checkpoint"}]]))
    output = tmp_path / "calls.jsonl"
    env = {"KCL_SAMPLE_SCRIPT": str(script), "KCL_SAMPLE_OUTPUT": str(output)}
    with module_child("scripted_processor", **env) as child:
        initialize(child)
        child.send(ProcessRecords(records(b"x"), 0, columns=True).encode())
        assert receive_json(child)["action"] == "checkpoint"
        assert child.finish() == 0
    calls = [orjson.loads(line) for line in output.read_bytes().splitlines()]
    assert calls[-1] == {"call": "checkpoint", "args": [None, None], "error": "ShutdownException"}


def test_a_ten_thousand_record_batch_crosses_the_pipe(tmp_path):
    output = tmp_path / "records.tsv"
    payloads = [os.urandom(100) for _ in range(10_000)]
    with module_child("record_logger", KCL_SAMPLE_OUTPUT=str(output)) as child:
        initialize(child)
        child.send(ProcessRecords(records(*payloads), 0, columns=True).encode())
        assert answer_checkpoint(child)["sequenceNumber"] == str(100 + 9_999)
        expect_status(child, "processRecords")
        assert child.finish() == 0
    lines = output.read_text().splitlines()
    assert [base64.b64decode(line.split("\t")[4]) for line in lines] == payloads
