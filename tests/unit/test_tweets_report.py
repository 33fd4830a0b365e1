"""The report: the seed's table from result items, summed over shards or per shard."""

from __future__ import annotations

from collections import Counter

from processors.tweets.report import count_rows, format_table, progress_rows, table_rows

ITEMS = [
    {"minute": "2024-05-01T13:45Z", "shard": "shardId-000000000000", "n_en": 1, "through": "x"},
    {"minute": "2024-05-01T13:46Z", "shard": "shardId-000000000000", "n_en": 1, "n_ja": 4},
    {"minute": "2024-05-01T13:46Z", "shard": "shardId-000000000002", "n_en": 1, "n_ja": 0},
]


def test_counts_are_read_from_the_language_attributes_only() -> None:
    assert count_rows(ITEMS) == Counter(
        {
            ("en", "2024-05-01T13:45Z", "shardId-000000000000"): 1,
            ("en", "2024-05-01T13:46Z", "shardId-000000000000"): 1,
            ("ja", "2024-05-01T13:46Z", "shardId-000000000000"): 4,
            ("en", "2024-05-01T13:46Z", "shardId-000000000002"): 1,
        }
    )


def test_the_seed_table_sums_over_shards_by_time_then_count() -> None:
    headers, rows = table_rows(count_rows(ITEMS))
    assert headers == ["language", "time", "count"]
    assert rows == [["en", "13:45", "1"], ["ja", "13:46", "4"], ["en", "13:46", "2"]]


def test_per_shard_rows_keep_parent_and_child_apart() -> None:
    headers, rows = table_rows(count_rows(ITEMS), per_shard=True)
    assert headers == ["language", "time", "shard", "count"]
    assert ["en", "13:46", "shardId-000000000000", "1"] in rows
    assert ["en", "13:46", "shardId-000000000002", "1"] in rows
    assert len(rows) == 4


def test_times_carry_the_date_when_rows_span_days() -> None:
    items = [
        {"minute": "2024-05-01T23:59Z", "shard": "s", "n_en": 1},
        {"minute": "2024-05-02T00:00Z", "shard": "s", "n_en": 2},
    ]
    _, rows = table_rows(count_rows(items))
    assert [row[1] for row in rows] == ["2024-05-01 23:59", "2024-05-02 00:00"]


def test_table_aligns_text_left_and_numbers_right() -> None:
    text = format_table(
        ["language", "time", "count"], [["en", "13:45", "1"], ["ja", "13:46", "20"]]
    )
    assert text.splitlines() == [
        "language | time  | count",
        "en       | 13:45 |     1",
        "ja       | 13:46 |    20",
    ]


def test_progress_rows_show_every_outcome_per_shard() -> None:
    headers, rows = progress_rows(
        [{"shard": "b", "records": 3, "counted": 2, "duplicates": 1}, {"shard": "a", "records": 0}]
    )
    assert headers == ["shard", "records", "counted", "late", "duplicates", "invalid"]
    assert rows == [["a", "0", "0", "0", "0", "0"], ["b", "3", "2", "0", "1", "0"]]
