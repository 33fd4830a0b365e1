"""The seed's tweet counter: tweets per language per minute of event time, exact under failures.

A generator writes realistic tweets to a Kinesis stream with the KPL-compatible producer
(aggregation on); kcl-daemon runs one ``processor`` child per shard through the Python SDK; the
children count into DynamoDB; ``report`` prints the seed's table, ``language | time | count``;
``demo`` (``bin/demo``) does it all on a local moto server.

=============  ============================================================================
module         job
=============  ============================================================================
events         the tweet payload (Twitter v1.1 status subset), Snowflake ids, minutes
counting       pure: record positions, the late rule, what each record adds to which item
applier        applies one batch exactly once: claims, counts, late, progress
results        the DynamoDB tables and the three single-item writes
processor      the record processor run by kcl-daemon (prepare, write, commit)
faults         SIGKILL at a chosen stage of a chosen batch (the tests' seam)
generator      the tweet source and the ground truth of what it sent
report         ``kcl-tweets-report``
demo           the end-to-end demo
=============  ============================================================================

DESIGN
======

What is counted
    One row per (minute of event time, shard) in ``<prefix>-counts`` with a counter per
    language: the seed's "Recording Shard Name". Work from different shards, and from a parent
    and its children across a reshard, never touches the same row; the report sums over shards.

Idempotence: keyed by record position, not by batch
    The seed's protocol alone (prepare, write, checkpoint) is not enough: a crash between the
    write and the checkpoint replays the batch, and an increment applied twice counts twice.
    Nor can a batch be the unit of idempotence: after a restart the daemon starts after the
    checkpoint, but batches the records differently. So every results item carries ``through``,
    the position (sequence number and sub-sequence number as fixed-width text) of the last
    record whose contribution it holds, and a batch's additions to an item are one UpdateItem:
    ``ADD`` the sums, ``SET through = <last>``, on condition ``through`` is absent or below the
    batch's first record for that item. Invariant: an item applied through P holds exactly the
    contributions of the records at or below P. A refused update means a replay: read
    ``through`` (strongly consistent), keep the records after it, update again.

    No gap can open: a processor applies its shard's records in stream order from its start
    checkpoint C; every record at or below C was applied before C was committed; and it never
    goes on after a failed write (it exits and the daemon restarts it from the checkpoint). A
    worker that lost its lease but is finishing a batch (a zombie) writes the same contributions
    at the same positions: whichever write lands first wins, the other is refused and skips.

    Why not TransactWriteItems with one progress item per shard, as first planned: dynalite (the
    DynamoDB of the resharding tests) has no transactions, and on AWS a transactional write costs
    two write units per item. Per-item conditions need no transaction: each item is its own
    unit of exactly-once.

    The shard's progress item (``<prefix>-progress``) is written last, under the same rule, and
    counts every record by outcome (counted, late, duplicate, invalid). At initialize its
    ``through`` lets a restarted processor skip the applied prefix without a refused write per
    row; the demo and the tests watch it.

Prepared checkpoints
    Per batch: ``prepare_checkpoint`` at the batch's last record (the daemon stores it as the
    lease's pending checkpoint, and refuses if the lease is gone: a worker that lost the shard
    writes nothing), apply the batch, commit the prepared checkpoint. A pending checkpoint at
    initialize means the previous processor died (or lost the lease) between prepare and
    commit: it is logged with the applied-through position that decides what is skipped.
    Exactness never rests on the checkpoint; a checkpoint that fails only costs a replay.

Duplicates
    A retrying producer sends the same tweet twice; after a reshard the copies can be on a
    parent and a child shard. Each distinct tweet id of a batch is claimed with a conditional
    put in ``<prefix>-seen`` (``holder`` = the claiming record, shard and position: not the
    worker, so a replay of that record by any worker recognises its own claim). Exactly one
    record per id counts; the others count as duplicates on their shard's progress item. Claims
    expire after the dedupe window (DynamoDB TTL, 7 days by default): copies further apart are
    counted twice, and the window must cover the time from a crash to its replay.

Late tweets
    A tweet is late when Kinesis received it ``allowed lateness`` (default 300 s) or more after
    the end of its minute: that minute's row is final from then on. Late tweets are counted in
    ``<prefix>-late`` by (language, minute, shard), never dropped. The watermark is the record's
    arrival time rather than the largest event time seen on the shard (also considered): the
    arrival time belongs to the record, so the decision is the same on every replay, on every
    worker, on a parent or a child shard, while a per-shard watermark depends on that shard's
    history (a new child shard has none) and would make the same tweet late in one run and not
    in another. Cost: tweets written long after they were created (a backfill) all land in the
    late table; use a larger ``--allowed-lateness`` or a separate application for those.

Cost per tweet
    For a batch of B records touching m (minute, shard) rows, in DynamoDB write units (every
    item here is under 1 KB):

    * 1 conditional PutItem in ``<prefix>-seen``: the claim (1 WCU, ~100 bytes kept for the
      dedupe window). It dominates; dropping dedupe would leave about 0.01 WCU per tweet.
    * (m + 1) / B UpdateItems: the rows and the progress item (1 WCU each).
    * 2 / B lease-table writes: prepare and commit.
    * On replays only: one strongly consistent GetItem (1 RCU) per refused write or claim.

    With B = 500 and m = 2 that is about 1.01 WCU per tweet; at on-demand prices (0.625 USD per
    million write units in us-east-1 at the time of writing) about 0.63 USD per million tweets.
    Claims run in parallel (``--claim-threads``, 8): at DynamoDB's few milliseconds per write
    that is well above a shard's 1,000 records/s. The local servers are far slower (moto: a
    few hundred conditional writes per second in all), which is what bounds the demo.

Failures the tests drive (tests/integration/test_tweets_exact.py)
    SIGKILL of a child after each stage of a batch (prepared, claims, counts, progress); SIGKILL
    of a worker while a second one takes its leases; a shard split while tweets flow, with
    copies of tweets resent onto the children (kinesis-local + dynalite); duplicates, late and
    too-late tweets and a record that is not a tweet. The counts equal the ground truth computed
    from what the generator sent.
"""
