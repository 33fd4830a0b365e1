"""Shard sync: list the stream's shards and create the leases that are missing.

The pure part, ``plan_new_leases``, decides which shards get a lease and at
which starting checkpoint (``leases_for_child_shards`` does the same for the
ChildShards a GetRecords response names at a shard's end, and
``leases_to_clean_up`` picks the finished leases that may go); the I/O part
lists shards (paginated ListShards) and writes leases with create-if-absent,
so workers syncing at the same time cannot clobber each other.

Planning rules (lease-table.md, "Shard sync and resharding"). Shards are
visited parents first; "leased" means a lease exists or is planned in this
same pass. For a shard without a lease:

1. A closed shard with a leased descendant is skipped: the lineage was
   processed past it already (its lease was cleaned up), or it was closed
   when the table was started at LATEST.
2. A shard with a leased parent is leased at TRIM_HORIZON (nothing in a child
   comes before its parent's end), or at AT_TIMESTAMP when a parent has
   not started yet from AT_TIMESTAMP (the whole lineage then starts from the
   timestamp).
3. Otherwise an open shard gets the initial position.
4. Otherwise (closed, nothing leased around it): at LATEST it is skipped, as
   its records are older than anything LATEST asks for; at TRIM_HORIZON or
   AT_TIMESTAMP it is leased at the initial position, so that starting
   from the oldest data loses nothing. Its children are then leased by rule
   2 and wait for it (parents before children).

So with an empty table and LATEST, only open shards are leased; with
TRIM_HORIZON or AT_TIMESTAMP, every shard ListShards still returns is.
(The Java KCL creates leases one generation at a time instead; leasing the
whole lineage up front is simpler and the parent wait keeps the order.)
Every new lease carries ``parentShardId`` and the hash-key range. Leases
that exist are never changed here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from daemon.errors import StreamNotFoundError
from daemon.leases.model import Lease
from daemon.leases.store import error_code, translate_aws_error
from daemon.sequence import AT_TIMESTAMP, LATEST, TRIM_HORIZON, ExtendedSequenceNumber

Shard = Mapping[str, Any]


class LeaseTable(Protocol):
    """The part of ``LeaseStore`` that shard sync uses (a seam for tests)."""

    def list_leases(self) -> list[Lease]: ...

    def get_lease(self, lease_key: str) -> Lease | None: ...

    def create_lease_if_absent(self, lease: Lease) -> bool: ...


def parents_of(shard: Shard) -> list[str]:
    """The shard's parent ids (ParentShardId, then AdjacentParentShardId for a merge)."""
    return [
        parent
        for parent in (shard.get("ParentShardId"), shard.get("AdjacentParentShardId"))
        if parent
    ]


def children_of(shard_id: str, shards: Sequence[Shard]) -> list[str]:
    """Ids of the shards naming ``shard_id`` as a parent, sorted."""
    return sorted(shard["ShardId"] for shard in shards if shard_id in parents_of(shard))


def is_closed(shard: Shard) -> bool:
    """True when the shard has an EndingSequenceNumber (it takes no more writes)."""
    return bool(shard.get("SequenceNumberRange", {}).get("EndingSequenceNumber"))


def _hash_range(shard: Shard) -> tuple[int | None, int | None]:
    hash_range = shard.get("HashKeyRange") or {}
    start = hash_range.get("StartingHashKey")
    end = hash_range.get("EndingHashKey")
    return (int(start) if start is not None else None, int(end) if end is not None else None)


def _parents_first(shards: Sequence[Shard]) -> list[Shard]:
    """Shards ordered so that every parent in the list precedes its children."""
    by_id = {shard["ShardId"]: shard for shard in shards}
    ordered: list[Shard] = []
    done: set[str] = set()

    def visit(shard_id: str, path: frozenset[str]) -> None:
        if shard_id in done or shard_id in path:  # `path` guards against bad cyclic input
            return
        for parent in parents_of(by_id[shard_id]):
            if parent in by_id:
                visit(parent, path | {shard_id})
        done.add(shard_id)
        ordered.append(by_id[shard_id])

    for shard_id in sorted(by_id):
        visit(shard_id, frozenset())
    return ordered


def _leased_descendant(shard_id: str, children: Mapping[str, list[str]], leased: set[str]) -> bool:
    stack = list(children.get(shard_id, ()))
    seen: set[str] = set()
    while stack:
        child = stack.pop()
        if child in leased:
            return True
        if child not in seen:
            seen.add(child)
            stack.extend(children.get(child, ()))
    return False


def plan_new_leases(
    shards: Sequence[Shard],
    existing: Mapping[str, Lease],
    initial_position: ExtendedSequenceNumber,
) -> list[Lease]:
    """The leases to create for ``shards`` (ListShards entries), parents before children.

    See the module docstring for the rules. Pure: ``existing`` maps lease key
    to lease and is not modified.
    """
    children: dict[str, list[str]] = {}
    for shard in shards:
        for parent in parents_of(shard):
            children.setdefault(parent, []).append(shard["ShardId"])
    existing_ids = set(existing)
    planned: dict[str, Lease] = {}
    start_from_oldest = initial_position.sequence_number != LATEST

    for shard in _parents_first(shards):
        shard_id = shard["ShardId"]
        if shard_id in existing:
            continue
        closed = is_closed(shard)
        if closed and _leased_descendant(shard_id, children, existing_ids):
            continue
        parents = parents_of(shard)
        parent_leases = [
            lease
            for parent in parents
            if (lease := existing.get(parent) or planned.get(parent)) is not None
        ]
        if parent_leases:
            checkpoint = _child_checkpoint(parent_leases)
        elif not closed or start_from_oldest:
            checkpoint = initial_position
        else:
            continue
        start, end = _hash_range(shard)
        planned[shard_id] = Lease(
            lease_key=shard_id,
            checkpoint=checkpoint,
            parent_shard_ids=frozenset(parents),
            starting_hash_key=start,
            ending_hash_key=end,
        )
    return list(planned.values())


def _child_checkpoint(parent_leases: Sequence[Lease]) -> ExtendedSequenceNumber:
    """Rule 2: a child starts at TRIM_HORIZON, or AT_TIMESTAMP when a parent has not started."""
    from_timestamp = any(
        lease.checkpoint is not None and lease.checkpoint.sequence_number == AT_TIMESTAMP
        for lease in parent_leases
    )
    return ExtendedSequenceNumber(AT_TIMESTAMP if from_timestamp else TRIM_HORIZON)


def leases_for_child_shards(
    child_shards: Sequence[Mapping[str, Any]], existing: Mapping[str, Lease]
) -> list[Lease]:
    """Leases for the ``ChildShards`` of a GetRecords response that have none yet.

    At a shard's end the service names its children (ShardId, ParentShards,
    HashKeyRange) before ListShards may show them; their leases must exist
    before the parent is marked finished, so that nobody loses track of the
    lineage. Pure; follows the planning rule for children of a leased parent.
    """
    planned: list[Lease] = []
    for child in child_shards:
        shard_id = child.get("ShardId")
        if not shard_id or shard_id in existing:
            continue
        parents = [parent for parent in child.get("ParentShards") or () if parent]
        parent_leases = [existing[parent] for parent in parents if parent in existing]
        start, end = _hash_range(child)
        planned.append(
            Lease(
                lease_key=shard_id,
                checkpoint=_child_checkpoint(parent_leases),
                parent_shard_ids=frozenset(parents),
                starting_hash_key=start,
                ending_hash_key=end,
            )
        )
    return planned


def leases_to_clean_up(leases: Sequence[Lease], shards: Sequence[Shard] = ()) -> list[Lease]:
    """Finished leases that may be deleted (cleanupLeasesUponShardCompletion).

    A finished lease (checkpoint SHARD_END) goes once it knows its children
    (``childShardIds``, else ListShards lineage from ``shards``), every child
    has a lease with a real checkpoint (a sequence number or SHARD_END: the
    child has started, so nothing will ever wait on the parent again), and
    none of its own parents' leases is left, so that lineages are deleted
    oldest first and shard sync never re-creates a deleted lease (rule 1).
    Pure.
    """
    by_key = {lease.lease_key: lease for lease in leases}
    doomed: list[Lease] = []
    for lease in leases:
        if not lease.is_finished:
            continue
        children = set(lease.child_shard_ids) or set(children_of(lease.lease_key, shards))
        if not children or any(parent in by_key for parent in lease.parent_shard_ids):
            continue
        started = all(
            (child := by_key.get(key)) is not None
            and child.checkpoint is not None
            and (child.checkpoint.is_shard_end or not child.checkpoint.is_sentinel)
            for key in children
        )
        if started:
            doomed.append(lease)
    return sorted(doomed, key=lambda lease: lease.lease_key)


def list_all_shards(
    kinesis_client: Any, stream_name: str | None = None, stream_arn: str | None = None
) -> list[dict[str, Any]]:
    """Every shard of the stream (paginated ListShards), as the API returns them.

    Raises StreamNotFoundError for a missing stream, ThrottledError when
    ListShards is throttled, DependencyError for other failures.
    """
    if (stream_name is None) == (stream_arn is None):
        raise ValueError("give exactly one of stream_name and stream_arn")
    stream = stream_name if stream_name is not None else stream_arn
    shards: list[dict[str, Any]] = []
    # After the first page NextToken must be sent alone: ListShards rejects it
    # together with StreamName.
    kwargs: dict[str, Any] = (
        {"StreamName": stream_name} if stream_name is not None else {"StreamARN": stream_arn}
    )
    while True:
        try:
            page = kinesis_client.list_shards(**kwargs)
        except ClientError as error:
            if error_code(error) == "ResourceNotFoundException":
                region = kinesis_client.meta.region_name
                raise StreamNotFoundError(
                    f"Kinesis stream {stream!r} not found in region {region}: create it"
                    f" (aws kinesis create-stream --stream-name NAME --shard-count 1) or fix"
                    " streamName / regionName / kinesisEndpoint in the properties file"
                ) from error
            raise translate_aws_error(error, f"ListShards for stream {stream!r}") from error
        except BotoCoreError as error:
            raise translate_aws_error(error, f"ListShards for stream {stream!r}") from error
        shards.extend(page.get("Shards", []))
        token = page.get("NextToken")
        if not token:
            return shards
        kwargs = {"NextToken": token}


def sync_shards(
    kinesis_client: Any,
    store: LeaseTable,
    stream: str,
    initial_position: ExtendedSequenceNumber,
) -> list[Lease]:
    """Create the missing leases for ``stream`` (a name or an ARN); return all leases.

    Leases are created parents first, one create-if-absent each, so a sync
    interrupted half-way is completed by the next one (children of created
    parents follow rule 2). A lease another worker created first is read back.
    """
    shards = list_all_shards(kinesis_client, **_stream_kwargs(stream))
    existing = {lease.lease_key: lease for lease in store.list_leases()}
    for lease in plan_new_leases(shards, existing, initial_position):
        if store.create_lease_if_absent(lease):
            existing[lease.lease_key] = lease
        else:
            winner = store.get_lease(lease.lease_key)
            if winner is not None:
                existing[lease.lease_key] = winner
    return list(existing.values())


def _stream_kwargs(stream: str) -> dict[str, str]:
    if not stream:
        raise ValueError("no stream name or ARN given for shard sync")
    if stream.startswith("arn:"):
        return {"stream_arn": stream}
    return {"stream_name": stream}
