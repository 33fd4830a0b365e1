"""The official amazon_kclpy and our SDK, fed the same golden transcripts through real pipes.

Both run the same scripted processor (processors/samples/scripted_processor.py,
``KCL_SAMPLE_SDK`` picks the SDK). They must answer with the transcript's
``out`` lines (amazon_kclpy byte for byte, since the transcripts record its
output; ours as equal JSON objects) and make the same processor calls with
the same arguments.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from processors.samples.transcripts import (
    IN,
    OUT,
    ChildConversation,
    Turn,
    accepts_record_columns,
    load_transcript,
    script_from_transcript,
)
from protocol.messages import CheckpointReply, Initialize, LeaseLost, ProcessRecords
from protocol.records import wire_record
from tests.support.kclpy import kclpy_sdist, with_kclpy_on_path

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "golden"
TRANSCRIPTS = sorted(GOLDEN.glob("*.jsonl"))
OURS = "processors.kclpy"
OFFICIAL = "amazon_kclpy"


def official_can_play(turns: list[Turn]) -> bool:
    """amazon_kclpy has no prepare_checkpoint and never asks for record columns: transcripts
    that do are ours alone."""
    return not accepts_record_columns(turns) and not any(
        turn.direction == OUT and turn.message.get("prepare") for turn in turns
    )


def run_scripted(
    sdk: str, turns: list[Turn], workdir: Path, kclpy_path: Path | None = None
) -> tuple[list[str], list[Any]]:
    """Play a transcript against the scripted processor; (child lines, processor calls)."""
    workdir.mkdir()
    script, calls = workdir / "script.json", workdir / "calls.jsonl"
    script.write_bytes(orjson.dumps(script_from_transcript(turns)))
    env = dict(os.environ) if kclpy_path is None else with_kclpy_on_path(os.environ, kclpy_path)
    env.update(KCL_SAMPLE_SDK=sdk, KCL_SAMPLE_SCRIPT=str(script), KCL_SAMPLE_OUTPUT=str(calls))
    env["KCL_SAMPLE_RECORD_COLUMNS"] = "1" if accepts_record_columns(turns) else "0"
    argv = [sys.executable, "-m", "processors.samples.scripted_processor"]
    with ChildConversation(argv, env=env, cwd=REPO) as child:
        received = child.play(turns)
        assert child.finish() == 0, child.stderr_text
    return received, [orjson.loads(line) for line in calls.read_bytes().splitlines()]


def classic_view(calls: list[Any]) -> list[Any]:
    """Our calls as amazon_kclpy would log them: without the extension's pending checkpoint."""
    return [{k: v for k, v in call.items() if k != "pending"} for call in calls]


OFFICIAL_PLAYABLE = [path for path in TRANSCRIPTS if official_can_play(load_transcript(path))]


@pytest.mark.parametrize("path", TRANSCRIPTS, ids=lambda p: p.stem)
def test_our_sdk_answers_the_transcript_through_pipes(path, tmp_path):
    turns = load_transcript(path)
    expected = [json.loads(turn.line) for turn in turns if turn.direction == OUT]
    ours, _ = run_scripted(OURS, turns, tmp_path / "ours")
    assert [json.loads(line) for line in ours] == expected


@pytest.mark.parametrize("path", OFFICIAL_PLAYABLE, ids=lambda p: p.stem)
def test_amazon_kclpy_and_our_sdk_answer_alike_and_make_the_same_calls(path, tmp_path, kclpy_path):
    turns = load_transcript(path)
    expected = [turn.line for turn in turns if turn.direction == OUT]
    ours, our_calls = run_scripted(OURS, turns, tmp_path / "ours", kclpy_path)
    official, official_calls = run_scripted(OFFICIAL, turns, tmp_path / "official", kclpy_path)
    assert official == expected
    assert [json.loads(line) for line in ours] == [json.loads(line) for line in official]
    assert classic_view(our_calls) == official_calls


def test_extension_fields_do_not_change_what_amazon_kclpy_sees(tmp_path, kclpy_path):
    """The announced-but-unused extension gives the same calls as the official form."""
    turns = load_transcript(GOLDEN / "ext_announced_classic_checkpoints.jsonl")
    plain = [
        Turn(turn.direction, _without_extension(turn.line)) if turn.direction == IN else turn
        for turn in turns
    ]
    _, with_extension = run_scripted(OFFICIAL, turns, tmp_path / "ext", kclpy_path)
    _, without_extension = run_scripted(OFFICIAL, plain, tmp_path / "plain", kclpy_path)
    assert with_extension == without_extension


def _without_extension(line: str) -> str:
    body = json.loads(line)
    if body["action"] != "initialize":
        return line
    return (
        Initialize(body["shardId"], body["sequenceNumber"], body["subSequenceNumber"])
        .encode(extensions=False)
        .decode()
    )


SAMPLE_IMPORTS = (
    ("from amazon_kclpy import kcl", "from processors.kclpy import kcl"),
    ("from amazon_kclpy.v3 import processor", "from processors.kclpy.v3 import processor"),
)


def test_official_sample_app_runs_on_our_sdk_with_only_its_imports_changed(tmp_path):
    sdist = kclpy_sdist()
    if sdist is None:
        pytest.skip("the amazon_kclpy sdist is not in vendor/: run bin/fetch-kclpy")
    source = (sdist / "samples" / "sample_kclpy_app.py").read_text()
    for official, ours in SAMPLE_IMPORTS:
        assert official in source
        source = source.replace(official, ours)
    app = tmp_path / "sample_kclpy_app.py"
    app.write_text(source)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(REPO)
    batch = [wire_record("aGVsbG8=", "pk", str(n), 1700000000000, 0) for n in (5, 6)]
    with ChildConversation([sys.executable, str(app)], env=env, cwd=tmp_path) as child:
        child.send(Initialize("shardId-000000000001", "TRIM_HORIZON").encode(extensions=False))
        assert json.loads(child.receive()) == {"action": "status", "responseFor": "initialize"}
        child.send(ProcessRecords(batch, 0).encode())
        # The sample checkpoints its largest sequence number on its first batch.
        request = json.loads(child.receive())
        assert request == {"action": "checkpoint", "sequenceNumber": "6", "subSequenceNumber": 0}
        child.send(CheckpointReply("6", 0, "ShutdownException").encode())
        # On ShutdownException it print()s; the guard keeps that off the protocol.
        assert json.loads(child.receive()) == {"action": "status", "responseFor": "processRecords"}
        child.send(LeaseLost().encode())
        assert json.loads(child.receive()) == {"action": "status", "responseFor": "leaseLost"}
        assert child.finish() == 0
        assert "Encountered shutdown exception, skipping checkpoint" in child.stderr_text
