"""``kcl-daemon status``: the lease table as a person (or a script) wants to see it.

Owns reading the lease table named by a properties file and showing one row
per shard: owner, checkpoint, state, parents, owner switches since the last
checkpoint and, where it is known, how far the checkpoint is behind the tip
of the shard. The formatting is pure (``lease_rows``, ``format_table``,
``format_json``); the I/O (``read_leases``, ``measure_lag``) is a thin shell.

States: ``ended`` (checkpoint SHARD_END), ``waiting on parent`` (a parent
lease still in the table has not ended), ``open`` otherwise. Leases do not
store lag, so by default it shows "-". ``--lag`` measures it: for each open
shard, one GetShardIterator just after the checkpoint and one GetRecords of
one record, whose MillisBehindLatest is the lag of the checkpoint (not of
the records in flight since). Those reads count against the shard's read
limit (5 calls/s) that the running workers use too, so they are opt-in.

Exit codes: 0 shown; 1 an AWS error (unreachable endpoint, no credentials);
2 bad configuration; 3 the lease table does not exist.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import orjson
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, NoRegionError

from daemon import logs
from daemon.config import Config, load_config
from daemon.errors import ConfigError, KclDaemonError
from daemon.kinesis_client import make_client
from daemon.leases.model import Lease
from daemon.leases.store import LeaseStore, error_code, translate_aws_error
from daemon.sequence import TRIM_HORIZON

PROG = "kcl-daemon status"
OPEN, ENDED, WAITING = "open", "ended", "waiting on parent"
EXIT_OK, EXIT_AWS, EXIT_CONFIG, EXIT_NO_TABLE = 0, 1, 2, 3
_COLUMNS = ("SHARD", "OWNER", "CHECKPOINT", "STATE", "PARENTS", "SWITCHES", "LAG")


class TableMissing(KclDaemonError):
    """The lease table does not exist (no worker of the application has started)."""


@dataclass(frozen=True)
class LeaseRow:
    shard_id: str
    owner: str | None
    checkpoint: str | None
    pending_checkpoint: str | None
    state: str
    parents: tuple[str, ...]
    children: tuple[str, ...]
    owner_switches_since_checkpoint: int
    lease_counter: int
    lag_millis: int | None = None


def lease_state(lease: Lease, by_key: Mapping[str, Lease]) -> str:
    if lease.is_finished:
        return ENDED
    if any(p in by_key and not by_key[p].is_finished for p in lease.parent_shard_ids):
        return WAITING
    return OPEN


def lease_rows(
    leases: Iterable[Lease], lags: Mapping[str, int | None] | None = None
) -> list[LeaseRow]:
    """One row per lease, in shard order."""
    by_key = {lease.lease_key: lease for lease in leases}
    lags = lags or {}
    return [
        LeaseRow(
            shard_id=lease.lease_key,
            owner=lease.lease_owner,
            checkpoint=str(lease.checkpoint) if lease.checkpoint else None,
            pending_checkpoint=str(lease.pending_checkpoint) if lease.pending_checkpoint else None,
            state=lease_state(lease, by_key),
            parents=tuple(sorted(lease.parent_shard_ids)),
            children=tuple(sorted(lease.child_shard_ids)),
            owner_switches_since_checkpoint=lease.owner_switches_since_checkpoint,
            lease_counter=lease.lease_counter,
            lag_millis=lags.get(lease.lease_key),
        )
        for lease in sorted(by_key.values(), key=lambda lease: _shard_order(lease.lease_key))
    ]


def _shard_order(key: str) -> tuple[str, int, str]:
    # shardId-000000000010 after shardId-000000000009 even when ids are not zero-padded.
    head, _, tail = key.rpartition("-")
    return (head, int(tail), key) if tail.isdigit() else (key, -1, key)


def format_lag(millis: int | None) -> str:
    if millis is None:
        return "-"
    if millis < 1000:
        return f"{millis} ms"
    seconds = millis / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, second = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{second:02d}s"
    hours, minute = divmod(minutes, 60)
    return f"{hours}h{minute:02d}m"


def _cells(row: LeaseRow) -> tuple[str, ...]:
    checkpoint = row.checkpoint or "-"
    if row.pending_checkpoint:
        checkpoint += f" (pending {row.pending_checkpoint})"
    return (
        row.shard_id,
        row.owner or "-",
        checkpoint,
        row.state,
        ",".join(row.parents) or "-",
        str(row.owner_switches_since_checkpoint),
        format_lag(row.lag_millis),
    )


def summary_line(rows: Sequence[LeaseRow], table: str) -> str:
    owners = Counter(row.owner for row in rows if row.owner and row.state != ENDED)
    unassigned = sum(1 for row in rows if not row.owner and row.state != ENDED)
    ended = sum(1 for row in rows if row.state == ENDED)
    by_worker = ", ".join(f"{owner}: {count}" for owner, count in sorted(owners.items()))
    text = f"{len(rows)} leases in table {table!r}; {len(owners)} workers"
    if by_worker:
        text += f" ({by_worker})"
    return text + f"; {unassigned} unassigned; {ended} ended"


def format_table(rows: Sequence[LeaseRow], table: str, *, lag_measured: bool = False) -> str:
    """The human view: aligned columns, then a summary line."""
    lines = [_COLUMNS, *(_cells(row) for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(_COLUMNS))]
    text = [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    ]
    text.append("")
    text.append(summary_line(rows, table))
    if not lag_measured:
        text.append(
            "LAG: leases do not record it; --lag measures it with one Kinesis read per open shard"
        )
    return "\n".join(text) + "\n"


def format_json(rows: Sequence[LeaseRow], table: str, *, lag_measured: bool = False) -> str:
    document = {
        "table": table,
        "lag_measured": lag_measured,
        "leases": [asdict(row) for row in rows],
    }
    return orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n"


# -- I/O -----------------------------------------------------------------------------


def read_leases(dynamodb: Any, table: str) -> list[Lease]:
    """Every lease in ``table``; ``TableMissing`` if there is no such table."""
    try:
        dynamodb.describe_table(TableName=table)
    except ClientError as error:
        if error_code(error) == "ResourceNotFoundException":
            raise TableMissing(
                f"lease table {table!r} does not exist (region {dynamodb.meta.region_name}): "
                "no worker of this application has started yet, or applicationName, tableName "
                "or the region point somewhere else"
            ) from None
        raise translate_aws_error(error, f"DescribeTable on {table!r}") from None
    except BotoCoreError as error:
        raise translate_aws_error(error, f"DescribeTable on {table!r}") from None
    return LeaseStore(dynamodb, table).list_leases()


def measure_lag(
    kinesis: Any, stream: Mapping[str, str], leases: Iterable[Lease]
) -> dict[str, int | None]:
    """Milliseconds each open shard's checkpoint is behind its tip; None where unknown.

    ``stream`` is ``{"StreamName": ...}`` or ``{"StreamARN": ...}``. Ended
    shards are 0; shards at LATEST or AT_TIMESTAMP, or unreadable (trimmed,
    deleted), are None.
    """
    lags: dict[str, int | None] = {}
    for lease in leases:
        checkpoint = lease.checkpoint
        if lease.is_finished:
            lags[lease.lease_key] = 0
            continue
        args: dict[str, Any] = {**stream, "ShardId": lease.lease_key}
        if checkpoint is None or checkpoint.sequence_number == TRIM_HORIZON:
            args["ShardIteratorType"] = TRIM_HORIZON
        elif checkpoint.is_sentinel:
            lags[lease.lease_key] = None
            continue
        else:
            args["ShardIteratorType"] = "AFTER_SEQUENCE_NUMBER"
            args["StartingSequenceNumber"] = checkpoint.sequence_number
        try:
            iterator = kinesis.get_shard_iterator(**args)["ShardIterator"]
            behind = kinesis.get_records(ShardIterator=iterator, Limit=1).get("MillisBehindLatest")
        except (ClientError, BotoCoreError):
            behind = None
        lags[lease.lease_key] = int(behind) if behind is not None else None
    return lags


def _stream_arg(config: Config) -> dict[str, str]:
    if config.stream_arn:
        return {"StreamARN": config.stream_arn}
    return {"StreamName": config.stream_name}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Show the lease table of a kcl-daemon application."
    )
    parser.add_argument("properties_positional", nargs="?", metavar="FILE", help="properties file")
    parser.add_argument(
        "-p", "--properties", "--properties-file", dest="properties", metavar="FILE"
    )
    parser.add_argument("--json", action="store_true", help="print JSON (for scripts)")
    parser.add_argument(
        "--lag",
        action="store_true",
        help="measure each open shard's lag with one Kinesis read (uses the shard's read quota)",
    )
    return parser


def _fail(message: str, code: int) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    path = args.properties or args.properties_positional
    if not path:
        return _fail(
            "no properties file given: run kcl-daemon status --properties app.properties", 2
        )
    try:
        config, _warnings = load_config(path)
    except ConfigError as error:
        return _fail(str(error), EXIT_CONFIG)
    # Library warnings (a malformed lease item) go to stderr, never into the table or the JSON.
    logs.configure("warning", "console", stream=sys.stderr)
    try:
        dynamodb = make_client("dynamodb", config.dynamodb_region_name, config.dynamodb_endpoint)
        leases = read_leases(dynamodb, config.table_name)
        lags: dict[str, int | None] = {}
        if args.lag:
            kinesis = make_client("kinesis", config.region_name, config.kinesis_endpoint)
            lags = measure_lag(kinesis, _stream_arg(config), leases)
    except TableMissing as missing:
        return _fail(str(missing), EXIT_NO_TABLE)
    except NoCredentialsError:
        return _fail(
            "no AWS credentials found: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE",
            EXIT_AWS,
        )
    except NoRegionError:
        return _fail("no AWS region: set regionName in the properties file or AWS_REGION", EXIT_AWS)
    except KclDaemonError as error:
        return _fail(str(error), EXIT_AWS)
    except BotoCoreError as error:
        return _fail(f"AWS client error: {error}", EXIT_AWS)
    rows = lease_rows(leases, lags)
    render = format_json if args.json else format_table
    sys.stdout.write(render(rows, config.table_name, lag_measured=args.lag))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
