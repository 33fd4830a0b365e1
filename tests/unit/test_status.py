"""``kcl-daemon status`` formatting: rows, states, the table and the JSON (no servers)."""

from __future__ import annotations

import orjson
import pytest

from daemon.leases.model import Lease
from daemon.sequence import SHARD_END, TRIM_HORIZON, ExtendedSequenceNumber
from daemon.status import (
    ENDED,
    OPEN,
    WAITING,
    format_json,
    format_lag,
    format_table,
    lease_rows,
    main,
)

SEQ = "49590338271490256608559692538361571095921575989136588898"


def position(seq: str, sub: int = 0) -> ExtendedSequenceNumber:
    return ExtendedSequenceNumber(seq, sub)


PARENT = Lease("shardId-000000000000", checkpoint=position(SHARD_END))
OPEN_PARENT = Lease("shardId-000000000001", lease_owner="w1", checkpoint=position(SEQ, 3))
CHILD_OF_ENDED = Lease(
    "shardId-000000000002",
    lease_owner="w2",
    checkpoint=position(TRIM_HORIZON),
    parent_shard_ids=frozenset({"shardId-000000000000"}),
    owner_switches_since_checkpoint=2,
)
CHILD_OF_OPEN = Lease(
    "shardId-000000000010",
    checkpoint=position(TRIM_HORIZON),
    parent_shard_ids=frozenset({"shardId-000000000001", "shardId-000000000000"}),
)
ORPHAN = Lease(
    "shardId-000000000003",
    lease_owner="w1",
    parent_shard_ids=frozenset({"shardId-000000000099"}),  # parent lease already cleaned up
)
ALL = [CHILD_OF_OPEN, ORPHAN, CHILD_OF_ENDED, OPEN_PARENT, PARENT]


def test_rows_come_in_shard_order_with_numeric_suffixes_compared_as_numbers() -> None:
    keys = [row.shard_id for row in lease_rows(ALL + [Lease("shardId-9")])]
    assert keys == [
        "shardId-000000000000",
        "shardId-000000000001",
        "shardId-000000000002",
        "shardId-000000000003",
        "shardId-9",
        "shardId-000000000010",
    ]


def test_state_is_ended_waiting_on_a_parent_still_in_the_table_or_open() -> None:
    states = {row.shard_id: row.state for row in lease_rows(ALL)}
    assert states == {
        "shardId-000000000000": ENDED,
        "shardId-000000000001": OPEN,
        "shardId-000000000002": OPEN,
        "shardId-000000000003": OPEN,
        "shardId-000000000010": WAITING,
    }


def test_row_shows_checkpoint_with_sub_sequence_parents_and_switches() -> None:
    rows = {row.shard_id: row for row in lease_rows(ALL)}
    assert rows["shardId-000000000001"].checkpoint == f"{SEQ}/3"
    assert rows["shardId-000000000010"].parents == (
        "shardId-000000000000",
        "shardId-000000000001",
    )
    assert rows["shardId-000000000002"].owner_switches_since_checkpoint == 2
    assert rows["shardId-000000000003"].checkpoint is None


@pytest.mark.parametrize(
    ("millis", "text"),
    [(None, "-"), (0, "0 ms"), (999, "999 ms"), (1500, "1.5 s"), (125_000, "2m05s"),
     (3 * 3600_000 + 7 * 60_000, "3h07m")],
)  # fmt: skip
def test_lag_reads_as_a_duration(millis: int | None, text: str) -> None:
    assert format_lag(millis) == text


def test_table_has_aligned_columns_a_summary_and_says_lag_was_not_measured() -> None:
    text = format_table(lease_rows(ALL), "orders")
    lines = text.splitlines()
    assert lines[0].split() == [
        "SHARD",
        "OWNER",
        "CHECKPOINT",
        "STATE",
        "PARENTS",
        "SWITCHES",
        "LAG",
    ]
    owner_column = lines[0].index("OWNER")
    assert all(line[owner_column - 2 : owner_column] == "  " for line in lines[1:6])
    row = next(line for line in lines if line.startswith("shardId-000000000010"))
    assert "waiting on parent" in row
    assert "shardId-000000000000,shardId-000000000001" in row
    assert "5 leases in table 'orders'; 2 workers (w1: 2, w2: 1); 1 unassigned; 1 ended" in lines
    assert any("--lag" in line for line in lines)


def test_table_shows_measured_lag_and_drops_the_hint() -> None:
    rows = lease_rows([OPEN_PARENT], {"shardId-000000000001": 2500})
    text = format_table(rows, "orders", lag_measured=True)
    assert "2.5 s" in text
    assert "--lag" not in text


def test_json_has_every_field_for_scripts() -> None:
    document = orjson.loads(format_json(lease_rows(ALL, {"shardId-000000000000": 0}), "orders"))
    assert document["table"] == "orders"
    assert document["lag_measured"] is False
    first = document["leases"][0]
    assert first == {
        "shard_id": "shardId-000000000000",
        "owner": None,
        "checkpoint": "SHARD_END",
        "pending_checkpoint": None,
        "state": "ended",
        "parents": [],
        "children": [],
        "owner_switches_since_checkpoint": 0,
        "lease_counter": 0,
        "lag_millis": 0,
    }


def test_without_a_properties_file_it_says_how_to_call_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main([]) == 2
    assert "--properties" in capsys.readouterr().err


def test_a_bad_properties_file_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--properties", "/nonexistent/app.properties"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not found" in err
