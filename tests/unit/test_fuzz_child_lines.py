"""Fuzzing the child-line decoder: whatever a child writes, decoding never raises.

``protocol.messages.decode_child_line`` turns a line into a Status, a CheckpointRequest or a
DecodeProblem (never an exception): bytes of any kind, text of any kind (lone surrogates
included), JSON of any shape with the protocol's field names given values of every JSON type,
and valid lines with bytes flipped, cut or inserted. On top of "never raises" each test checks
what the daemon relies on: a checkpoint request always comes back as something the daemon
answers, fields have the types the consumer uses, and a problem's description (which is
logged) stays short however long the line. The number of inputs is in each test's settings
(``KCL_FUZZ_SCALE`` multiplies them).
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.messages import (
    CheckpointReply,
    CheckpointRequest,
    DecodeProblem,
    Problem,
    Status,
    decode_child_line,
    decode_daemon_line,
)
from tests.faults.fuzzing import fuzz_settings

# A described problem is logged: it must stay one short line whatever the child sent.
MAX_DESCRIPTION = 400
ACTIONS = ["status", "checkpoint", "initialize", "processRecords", "leaseLost", "shardEnded",
           "shutdownRequested", "record", "", "STATUS", "status ", "checkpoint\x00"]  # fmt: skip
FIELDS = ["action", "responseFor", "sequenceNumber", "subSequenceNumber", "prepare", "error"]

# Inputs built from a random.Random seeded by hypothesis: one draw per input keeps thousands of
# them within a second or two (a failure still names its seed and shows the line).
STRINGS = ["0", "-1", "1" * 56, "\u0661\u0662", "12ab", " 7", "7 ", "+3", "", "null", "processRecords",
           "status", "\x00", "\u00e9t\u00e9"]  # fmt: skip


def json_value(rng: random.Random, depth: int = 2) -> Any:
    """Any JSON value: scalars of every type (big integers included), lists and objects."""
    kind = rng.randrange(9 if depth > 0 else 7)
    if kind == 0:
        return None
    if kind == 1:
        return rng.random() < 0.5
    if kind == 2:
        return rng.choice([rng.randint(-5, 5), rng.randint(-(2**70), 2**70), 2**64, -(2**63) - 1])
    if kind == 3:
        return rng.choice([rng.uniform(-1e6, 1e6), 1e308, -0.0, 5e-324])
    if kind in (4, 5):
        return rng.choice(STRINGS)
    if kind == 6:
        return "".join(chr(rng.randrange(0x20, 0x3000)) for _ in range(rng.randrange(8)))
    if kind == 7:
        return [json_value(rng, depth - 1) for _ in range(rng.randrange(4))]
    keys = FIELDS + ["", "x"]
    return {rng.choice(keys): json_value(rng, depth - 1) for _ in range(rng.randrange(4))}


def protocol_object(rng: random.Random) -> dict[str, Any]:
    """A JSON object with the protocol's field names, each (if present) holding any value."""
    action = rng.choice(ACTIONS) if rng.random() < 0.8 else json_value(rng)
    body: dict[str, Any] = {"action": action}
    for name in FIELDS[1:]:
        if rng.random() < 0.5:
            body[name] = json_value(rng)
    return body


protocol_objects = st.integers(0, 2**64).map(lambda seed: protocol_object(random.Random(seed)))


def check(result: object) -> None:
    """What every decoded line must look like."""
    assert isinstance(result, Status | CheckpointRequest | DecodeProblem), result
    if isinstance(result, Status):
        assert type(result.response_for) is str
    elif isinstance(result, CheckpointRequest):
        assert result.sequence_number is None or type(result.sequence_number) is str
        assert result.sub_sequence_number is None or type(result.sub_sequence_number) is int
        assert type(result.prepare) is bool
    else:
        assert isinstance(result.problem, Problem)
        assert len(result.describe()) <= MAX_DESCRIPTION, result.describe()[:100]


@fuzz_settings(1000)
@given(st.binary(max_size=3000))
def test_any_bytes_decode_without_raising(line: bytes) -> None:
    check(decode_child_line(line))


@fuzz_settings(500)
@given(st.text(st.characters(codec=None, exclude_categories=()), max_size=500))
def test_any_text_decodes_without_raising_even_with_lone_surrogates(line: str) -> None:
    check(decode_child_line(line))


@fuzz_settings(800)
@given(protocol_objects)
def test_json_objects_with_fields_of_every_type_decode_to_typed_messages(
    body: dict[str, Any],
) -> None:
    line = json.dumps(body).encode()  # stdlib json: big integers and any key survive
    result = decode_child_line(line)
    check(result)
    action = body["action"]
    if action == "checkpoint":
        # Always something the daemon answers: a request, or a problem tagged "checkpoint"
        # (answered with IllegalArgumentException), so the child never waits for ever.
        assert isinstance(result, CheckpointRequest) or result.action == "checkpoint", result
    elif action == "status":
        assert isinstance(result, Status) or result.action == "status", result
    else:
        assert isinstance(result, DecodeProblem)
    if isinstance(result, Status):
        assert result.response_for == body["responseFor"]
    if isinstance(result, CheckpointRequest):
        assert result.prepare == (body.get("prepare") is True)


@pytest.mark.parametrize(
    "body",
    [
        {"action": "checkpoint", "sequenceNumber": "\ud800", "subSequenceNumber": None},
        {"action": "checkpoint", "sequenceNumber": "5", "note": "\udfff"},
        {"action": "status", "responseFor": "processRecords", "note": "\ud83d"},
    ],
)
def test_a_line_with_a_lone_surrogate_escape_is_still_answered(body: dict[str, Any]) -> None:
    # Valid JSON that orjson refuses; an unanswered checkpoint would hang the child.
    result = decode_child_line(json.dumps(body).encode())
    assert isinstance(result, CheckpointRequest | Status)
    if isinstance(result, CheckpointRequest):
        # The echo in the reply must be writable.
        assert CheckpointReply(result.sequence_number, None, "IllegalArgumentException").encode()


@fuzz_settings(200)
@given(st.text(max_size=40), st.integers(0, 2**63), st.booleans())
def test_encoded_messages_decode_to_themselves(text: str, number: int, prepare: bool) -> None:
    assert decode_child_line(Status(text).encode()) == Status(text)
    request = CheckpointRequest(str(number), number % 7, prepare)
    assert decode_child_line(request.encode()) == request


VALID_LINES = [
    Status("processRecords").encode(),
    CheckpointRequest("49590338271490256608559692538361571095921575989136588898", 3).encode(),
    CheckpointRequest(None, None, True).encode(),
    b'{"action":"checkpoint","sequenceNumber":"1","subSequenceNumber":"2","prepare":true}',
]


def mutated_line(rng: random.Random) -> bytes:
    line = bytearray(rng.choice(VALID_LINES))
    for _ in range(rng.randint(1, 6)):
        position = rng.randint(0, len(line))
        operation = rng.choice(["flip", "insert", "delete", "truncate"])
        if operation == "flip" and position < len(line):
            line[position] ^= 1 << rng.randint(0, 7)
        elif operation == "insert":
            line[position:position] = rng.randbytes(rng.randint(1, 8))
        elif operation == "delete":
            del line[position : position + rng.randint(1, 8)]
        else:
            del line[position:]
    return bytes(line)


mutated_lines = st.integers(0, 2**64).map(lambda seed: mutated_line(random.Random(seed)))


@fuzz_settings(1000)
@given(mutated_lines)
def test_valid_lines_with_bytes_flipped_cut_or_inserted_decode_without_raising(
    line: bytes,
) -> None:
    check(decode_child_line(line))


@fuzz_settings(100)
@given(st.integers(1, 200_000), st.sampled_from([b"[", b'{"a":', b'"', b"x", b"\xff"]))
def test_deep_nesting_and_long_lines_are_problems_with_short_descriptions(
    repeat: int, unit: bytes
) -> None:
    check(decode_child_line(unit * repeat))


@fuzz_settings(300)
@given(st.binary(max_size=2000) | protocol_objects.map(lambda b: json.dumps(b).encode()))
def test_the_sdk_side_decoder_never_raises_either(line: bytes) -> None:
    result = decode_daemon_line(line)
    if isinstance(result, DecodeProblem):
        assert len(result.describe()) <= MAX_DESCRIPTION


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
def test_non_json_constants_stay_not_json(constant: bytes) -> None:
    result = decode_child_line(b'{"action": "checkpoint", "sequenceNumber": ' + constant + b"}")
    assert isinstance(result, DecodeProblem) and result.action is None
