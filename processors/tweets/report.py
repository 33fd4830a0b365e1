"""``kcl-tweets-report``: prints the seed's table, ``language | time | count``, from the results.

Owns turning result items into rows (summed over shards, or per shard with ``--shards``, the
seed's "Recording Shard Name" table) and printing them. Times are minutes of event time, UTC;
rows sort by time, then by count (largest first). ``--late`` adds the late table (tweets that
arrived past the allowed lateness), ``--progress`` what each shard's processor has applied.

    kcl-tweets-report --tables tweets --dynamodb-endpoint http://127.0.0.1:5000 --shards
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from daemon.errors import DependencyError
from processors.tweets.counting import language_of_attribute
from processors.tweets.results import ResultsStore, TableNames, make_dynamodb_client

__all__ = ["count_rows", "format_table", "main", "progress_rows", "table_rows"]

_PROGRESS_COLUMNS = ("records", "counted", "late", "duplicates", "invalid")


def count_rows(items: Iterable[dict[str, Any]]) -> Counter[tuple[str, str, str]]:
    """(language, minute, shard) -> count, from plain items of a counts or late table."""
    counts: Counter[tuple[str, str, str]] = Counter()
    for item in items:
        for name, value in item.items():
            lang = language_of_attribute(name)
            if lang is not None and isinstance(value, int) and value:
                counts[(lang, item["minute"], item["shard"])] += value
    return counts


def summed(counts: Counter[tuple[str, str, str]]) -> Counter[tuple[str, str]]:
    """Summed over shards: (language, minute) -> count."""
    out: Counter[tuple[str, str]] = Counter()
    for (lang, minute, _shard), count in counts.items():
        out[(lang, minute)] += count
    return out


def _time_formatter(minutes: Iterable[str]) -> Any:
    dates = {minute[:10] for minute in minutes}
    if len(dates) <= 1:
        return lambda minute: minute[11:16]
    return lambda minute: f"{minute[:10]} {minute[11:16]}"


def table_rows(
    counts: Counter[tuple[str, str, str]], per_shard: bool = False
) -> tuple[list[str], list[list[str]]]:
    """Headers and rows of the seed's table (with a shard column when ``per_shard``)."""
    show = _time_formatter(minute for _, minute, _ in counts)
    if per_shard:
        ordered = sorted(counts.items(), key=lambda kv: (kv[0][1], -kv[1], kv[0][0], kv[0][2]))
        rows = [[lang, show(minute), shard, str(n)] for (lang, minute, shard), n in ordered]
        return ["language", "time", "shard", "count"], rows
    totals = summed(counts)
    ordered_totals = sorted(totals.items(), key=lambda kv: (kv[0][1], -kv[1], kv[0][0]))
    rows = [[lang, show(minute), str(n)] for (lang, minute), n in ordered_totals]
    return ["language", "time", "count"], rows


def progress_rows(items: Iterable[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    rows = [
        [item["shard"], *(str(item.get(column, 0)) for column in _PROGRESS_COLUMNS)]
        for item in sorted(items, key=lambda item: str(item["shard"]))
    ]
    return ["shard", *_PROGRESS_COLUMNS], rows


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns joined by `` | ``; numbers right-aligned, text left-aligned."""
    widths = [len(header) for header in headers]
    for row in rows:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row, strict=True)]
    numeric = [bool(rows) and all(row[i].isdigit() for row in rows) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.rjust(width) if numeric[i] else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return " | ".join(parts).rstrip()

    return "\n".join([line(headers), *(line(row) for row in rows)])


def render(
    store: ResultsStore, per_shard: bool = False, late: bool = False, progress: bool = False
) -> str:
    """The whole report as text."""
    counts = count_rows(store.scan(store.names.counts))
    headers, rows = table_rows(counts, per_shard)
    parts = [format_table(headers, rows) if rows else "(no tweets counted yet)"]
    late_counts = count_rows(store.scan(store.names.late))
    total = sum(counts.values())
    late_total = sum(late_counts.values())
    footer = f"{total} tweets in {len({(k[0], k[1]) for k in counts})} (language, minute) rows"
    footer += f"; {late_total} arrived past the allowed lateness"
    parts.append(footer + ("" if late or not late_total else " (--late shows them)"))
    if late and late_counts:
        late_headers, late_rows = table_rows(late_counts, per_shard)
        late_headers[-1] = "late count"
        parts.append(
            "\nlate table (not in the counts above):\n" + format_table(late_headers, late_rows)
        )
    if progress:
        progress_headers, rows_p = progress_rows(store.scan(store.names.progress))
        parts.append("\nrecords per shard:\n" + format_table(progress_headers, rows_p))
    return "\n".join(parts)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kcl-tweets-report", description="Print tweets per language per minute"
    )
    parser.add_argument("--tables", default="tweets", help="results table prefix (tweets)")
    parser.add_argument("--dynamodb-endpoint", help="DynamoDB endpoint URL (local servers)")
    parser.add_argument("--region", help="AWS region (default: boto3's)")
    parser.add_argument(
        "--shards", action="store_true", help="one row per (language, minute, shard)"
    )
    parser.add_argument("--late", action="store_true", help="also print the late table")
    parser.add_argument("--progress", action="store_true", help="also print per-shard progress")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    store = ResultsStore(
        make_dynamodb_client(args.dynamodb_endpoint, args.region), TableNames(args.tables)
    )
    try:
        print(render(store, args.shards, args.late, args.progress))
    except DependencyError as error:
        print(
            f"kcl-tweets-report: cannot read the results tables ({error}); check --tables, "
            "--dynamodb-endpoint and --region",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
