"""Every properties key, declared once, and the frozen ``Config`` they fill.

Each ``Config`` field that comes from the properties file is declared with
``_setting(...)``: its key, value type, default, one-line doc and section sit
on the field itself, so the attribute, its type hint and its declaration can
never drift apart. ``SETTINGS`` is the registry read back from those fields;
parsing (``daemon.config``) and the generated docs (``daemon.settings_doc``)
both work from it, like gunicorn's ``Setting`` classes but without a
metaclass.

A value type turns the text of a value into a Python value or raises
``ValueError`` whose message says what was expected ("an integer from 1 to
10000"); ``daemon.config`` wraps that into the one-line ``ConfigError``.

Keys the official daemon reads that we accept and ignore on purpose are in
``COMPATIBILITY_KEYS`` (silent) and ``UNIMPLEMENTED_OFFICIAL_KEYS`` (a warning).
"""

from __future__ import annotations

import dataclasses
import math
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import urlsplit

__all__ = [
    "COMPATIBILITY_KEYS",
    "DEFAULT_CREDENTIALS_PROVIDER",
    "SETTINGS",
    "SETTINGS_BY_ATTR",
    "UNIMPLEMENTED_OFFICIAL_KEYS",
    "Config",
    "Setting",
    "ValueType",
]

_JAVA_INT_MAX = 2**31 - 1
DEFAULT_CREDENTIALS_PROVIDER = "DefaultCredentialsProvider"
# Both name boto3's default chain: the v2 SDK name and the v1 SDK name.
_DEFAULT_CHAIN_NAMES = ("DefaultCredentialsProvider", "DefaultAWSCredentialsProviderChain")
_INTEGER = re.compile(r"[+-]?[0-9]+")
_DECIMAL = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")
# BeanUtils' BooleanConverter, which the official daemon uses, accepts these.
_TRUE = frozenset({"true", "yes", "y", "on", "1"})
_FALSE = frozenset({"false", "no", "n", "off", "0"})


class ValueType:
    """How one setting's text becomes a value; subclasses override ``parse``."""

    type_name: ClassVar[str] = "string"

    @property
    def name(self) -> str:
        """The type column of the settings table."""
        return self.type_name

    def parse(self, text: str) -> Any:
        """The value of ``text`` (stripped, never empty); a ``ValueError`` says what was expected."""
        return text

    def format(self, value: Any) -> str:
        """``value`` written as properties text that ``parse`` reads back."""
        return "" if value is None else str(value)

    def shown(self, text: str) -> str:
        """``text`` as it may appear in an error message."""
        return text


@dataclass(frozen=True)
class Text(ValueType):
    pattern: str | None = None
    expected: str = "a non-empty string"

    def parse(self, text: str) -> str:
        if self.pattern is not None and re.fullmatch(self.pattern, text) is None:
            raise ValueError(self.expected)
        return text


@dataclass(frozen=True)
class Command(ValueType):
    type_name: ClassVar[str] = "command"

    def parse(self, text: str) -> str:
        expected = "a command line such as: python3 processor.py (with balanced quotes)"
        try:
            words = shlex.split(text)
        except ValueError:
            raise ValueError(expected) from None
        if not words:
            raise ValueError(expected)
        return text


@dataclass(frozen=True)
class Url(ValueType):
    type_name: ClassVar[str] = "URL"

    def parse(self, text: str) -> str:
        expected = "a URL with scheme and host, such as http://localhost:4567"
        try:
            parts = urlsplit(text)
        except ValueError:
            raise ValueError(expected) from None
        if parts.scheme not in ("http", "https") or not parts.hostname or " " in text:
            raise ValueError(expected)
        return text


@dataclass(frozen=True)
class Integer(ValueType):
    minimum: int = 0
    maximum: int = _JAVA_INT_MAX

    @property
    def name(self) -> str:
        if self.maximum == _JAVA_INT_MAX:
            return f"integer >= {self.minimum}"
        return f"integer {self.minimum}-{self.maximum}"

    def parse(self, text: str) -> int:
        if _INTEGER.fullmatch(text) is None or not self.minimum <= int(text) <= self.maximum:
            raise ValueError(f"an integer from {self.minimum} to {self.maximum}")
        return int(text)


@dataclass(frozen=True)
class Number(ValueType):
    minimum: float = 0.0
    maximum: float = float(_JAVA_INT_MAX)
    expected: str = ""

    @property
    def name(self) -> str:
        return f"number >= {self.minimum:g}"

    def parse(self, text: str) -> float:
        expected = self.expected or f"a number from {self.minimum:g} to {self.maximum:g}"
        if _DECIMAL.fullmatch(text) is None:
            raise ValueError(expected)
        value = float(text)
        if not (math.isfinite(value) and self.minimum <= value <= self.maximum):
            raise ValueError(expected)
        return value

    def format(self, value: Any) -> str:
        return "" if value is None else f"{value:g}"


@dataclass(frozen=True)
class Boolean(ValueType):
    type_name: ClassVar[str] = "boolean"

    def parse(self, text: str) -> bool:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ValueError("true or false")

    def format(self, value: Any) -> str:
        return "true" if value else "false"


@dataclass(frozen=True)
class Choice(ValueType):
    """One of ``choices``, any case; ``aliases`` map other spellings, ``refused`` explains."""

    choices: tuple[str, ...] = ()
    aliases: Mapping[str, str] = field(default_factory=dict)
    refused: Mapping[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return " / ".join(self.choices)

    def parse(self, text: str) -> str:
        upper = text.upper()
        if upper in self.refused:
            raise ValueError(self.refused[upper])
        upper = self.aliases.get(upper, upper)
        if upper not in self.choices:
            raise ValueError(_one_of(self.choices))
        return upper


@dataclass(frozen=True)
class NameList(ValueType):
    """A comma-separated list of names from ``choices``, any case."""

    choices: tuple[str, ...] = ()
    type_name: ClassVar[str] = "comma-separated list"

    def parse(self, text: str) -> tuple[str, ...]:
        canonical = {choice.upper(): choice for choice in self.choices}
        names = [part.strip() for part in text.split(",") if part.strip()]
        if not names or any(name.upper() not in canonical for name in names):
            raise ValueError(f"a comma-separated list of {_one_of(self.choices)}")
        return tuple(dict.fromkeys(canonical[name.upper()] for name in names))

    def format(self, value: Any) -> str:
        return ",".join(value)


@dataclass(frozen=True)
class CredentialsProvider(ValueType):
    """The official daemon's provider list; only the default chain maps onto boto3."""

    type_name: ClassVar[str] = "provider name"

    def parse(self, text: str) -> str:
        for provider in text.split(","):
            # "a.b.ClassName|arg|arg": compare the bare class name.
            class_name = provider.split("|", 1)[0].strip().rsplit(".", 1)[-1]
            if class_name and class_name not in _DEFAULT_CHAIN_NAMES:
                raise ValueError(
                    f"{_one_of(_DEFAULT_CHAIN_NAMES)} (boto3's default chain: environment "
                    "variables, AWS_PROFILE and the shared config files, container and "
                    "instance roles); other providers are not supported"
                )
        return DEFAULT_CREDENTIALS_PROVIDER

    def shown(self, text: str) -> str:
        # Constructor arguments after '|' may be secrets (static keys): never echo them.
        return ",".join(
            part.split("|", 1)[0] + ("|..." if "|" in part else "") for part in text.split(",")
        )


def _one_of(choices: tuple[str, ...]) -> str:
    if len(choices) == 1:
        return choices[0]
    return ", ".join(choices[:-1]) + " or " + choices[-1]


@dataclass(frozen=True)
class Setting:
    """One properties key: how to read it and what it means."""

    key: str
    type: ValueType
    default: Any
    doc: str
    section: str
    attr: str = ""
    required_hint: str | None = None
    default_doc: str | None = None
    example: str | None = None
    aliases: tuple[str, ...] = ()
    any_case: bool = False
    set_in_sample: bool = False  # the sample file sets it to ``example`` (required ones always)

    @property
    def required(self) -> bool:
        return self.required_hint is not None

    def default_text(self) -> str:
        """The default as the docs show it."""
        if self.default_doc is not None:
            return self.default_doc
        if self.required:
            return "required"
        if self.default is None:
            return "none"
        return self.type.format(self.default)


def _setting(key: str, type_: ValueType, default: Any, section: str, doc: str, **extra: Any) -> Any:
    """A dataclass field that carries its ``Setting`` declaration."""
    declared = Setting(key=key, type=type_, default=default, doc=doc, section=section, **extra)
    if declared.required:
        return field(metadata={"setting": declared})
    return field(default=default, metadata={"setting": declared})


_MILLIS = Integer(minimum=1)
_REGION = Text(
    r"[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?", "an AWS region name such as us-east-1"
)
_STREAM = Text(r"[A-Za-z0-9_.-]{1,128}", "a stream name: 1-128 letters, digits, '_', '-', '.'")
_TABLE = Text(
    r"[A-Za-z0-9_.-]{3,255}", "a DynamoDB table name: 3-255 letters, digits, '_', '-', '.'"
)
_APP, _AWS, _POSITION, _READ = "Application", "AWS", "Initial position", "Reading"
_LEASES, _PROCESS, _CHILD, _METRICS = "Leases", "Processing", "Child processes", "Metrics"


@dataclass(frozen=True, kw_only=True)
class Config:
    """The daemon's validated configuration; build it with ``daemon.config``.

    Each field is declared as ``_setting(key, type, default, section, doc, ...)``.
    """

    # fmt: off
    executable_name: str = _setting(
        "executableName", Command(), None, _APP,
        "Command that starts one record processor (split as a shell would; never run by one)",
        required_hint="set it to the command that starts your record processor",
        example="python3 processor.py")
    application_name: str = _setting(
        "applicationName", Text(), None, _APP,
        "Application name: names the lease table (unless tableName) and the metrics namespace",
        required_hint="set it to your application's name (it names the lease table)",
        example="MyKclApplication")
    stream_name: str = _setting(
        "streamName", _STREAM, "", _APP,
        "Kinesis stream to read (this or streamArn is required)",
        default_doc="from streamArn", example="my-stream", set_in_sample=True)
    stream_arn: str | None = _setting(
        "streamArn", Text(), None, _APP,
        "Kinesis stream ARN; wins over streamName",
        example="arn:aws:kinesis:us-east-1:123456789012:stream/my-stream")
    table_name: str = _setting(
        "tableName", _TABLE, "", _APP,
        "DynamoDB lease table name",
        default_doc="applicationName")
    worker_id: str = _setting(
        "workerId", Text(), "", _APP,
        "Lease owner name of this worker; a restarted daemon with the same id takes its "
        "leases back at once",
        default_doc="hostname:hash (stable for one host, properties file and applicationName)",
        aliases=("workerIdentifier",))

    region_name: str | None = _setting(
        "regionName", _REGION, None, _AWS,
        "AWS region of all three services",
        default_doc="the region in streamArn, else boto3's (AWS_REGION, ~/.aws/config)")
    dynamodb_region_name: str | None = _setting(
        "dynamoDBRegionName", _REGION, None, _AWS,
        "Region of the lease table, if it differs",
        default_doc="regionName")
    cloudwatch_region_name: str | None = _setting(
        "cloudWatchRegionName", _REGION, None, _AWS,
        "Region metrics are published to, if it differs",
        default_doc="regionName")
    kinesis_endpoint: str | None = _setting(
        "kinesisEndpoint", Url(), None, _AWS,
        "Kinesis endpoint URL (local emulators)",
        example="http://localhost:4567")
    dynamodb_endpoint: str | None = _setting(
        "dynamoDBEndpoint", Url(), None, _AWS,
        "DynamoDB endpoint URL (local emulators)",
        example="http://localhost:8000")
    cloudwatch_endpoint: str | None = _setting(
        "cloudWatchEndpoint", Url(), None, _AWS,
        "CloudWatch endpoint URL (local emulators)",
        example="http://localhost:5000")
    kinesis_credentials_provider: str = _setting(
        "AWSCredentialsProvider", CredentialsProvider(), DEFAULT_CREDENTIALS_PROVIDER, _AWS,
        "Credentials: DefaultCredentialsProvider or DefaultAWSCredentialsProviderChain "
        "(both mean boto3's default chain; other providers are refused)",
        any_case=True, example=DEFAULT_CREDENTIALS_PROVIDER, set_in_sample=True)
    dynamodb_credentials_provider: str = _setting(
        "AWSCredentialsProviderDynamoDB", CredentialsProvider(), DEFAULT_CREDENTIALS_PROVIDER,
        _AWS, "Credentials for DynamoDB (same names)",
        default_doc="AWSCredentialsProvider", any_case=True)
    cloudwatch_credentials_provider: str = _setting(
        "AWSCredentialsProviderCloudWatch", CredentialsProvider(), DEFAULT_CREDENTIALS_PROVIDER,
        _AWS, "Credentials for CloudWatch (same names)",
        default_doc="AWSCredentialsProvider", any_case=True)

    initial_position_in_stream: str = _setting(
        "initialPositionInStream", Choice(("TRIM_HORIZON", "LATEST", "AT_TIMESTAMP")), "LATEST",
        _POSITION, "Where a shard with no checkpoint starts")
    initial_position_in_stream_extended: float | None = _setting(
        "initialPositionInStreamExtended",
        Number(0, 1e11, "a time in epoch seconds such as 1700000000 (not milliseconds)"), None,
        _POSITION, "Start time in epoch seconds; setting it selects AT_TIMESTAMP",
        example="1700000000")

    retrieval_mode: str = _setting(
        "retrievalMode",
        Choice(("POLLING",), aliases={"DEFAULT": "POLLING"}, refused={
            "FANOUT": "POLLING: only POLLING is supported (enhanced fan-out is not "
                      "implemented); set retrievalMode=POLLING"}),
        "POLLING", _READ, "How records are read: only POLLING (the official default is FANOUT)")
    max_records: int = _setting(
        "maxRecords", Integer(1, 10000), 10000, _READ,
        "Most records per GetRecords call")
    idle_time_between_reads_millis: int = _setting(
        "idleTimeBetweenReadsInMillis", Integer(0), 1500, _READ,
        "Least time between GetRecords calls on a shard (no 200 ms floor, for local tests)")
    prefetch_max_records: int = _setting(
        "prefetchMaxRecords", Integer(1), 20000, _READ,
        "Most records read ahead per shard")
    prefetch_max_bytes: int = _setting(
        "prefetchMaxBytes", Integer(1), 64 * 1024 * 1024, _READ,
        "Most record bytes read ahead per shard")
    fast_get_records: bool = _setting(
        "fastGetRecords", Boolean(), True, _READ,
        "Parse GetRecords ourselves (msgspec, or orjson for bodies with escapes), passing "
        "record data through as base64 (false: boto3's own parser, 10-20x more daemon CPU "
        "per record)")

    failover_time_millis: int = _setting(
        "failoverTimeMillis", _MILLIS, 10000, _LEASES,
        "A lease not renewed for this long is expired")
    shard_sync_interval_millis: int = _setting(
        "shardSyncIntervalMillis", _MILLIS, 60000, _LEASES,
        "Time between shard discoveries")
    max_leases_for_worker: int | None = _setting(
        "maxLeasesForWorker", Integer(1), None, _LEASES,
        "Most leases this worker holds",
        default_doc="unlimited")
    max_leases_to_steal_at_one_time: int = _setting(
        "maxLeasesToStealAtOneTime", Integer(0), 1, _LEASES,
        "Most leases taken from a busier worker per scan (0: never steal)")
    parent_shard_poll_interval_millis: int = _setting(
        "parentShardPollIntervalMillis", _MILLIS, 10000, _LEASES,
        "Time between checks that a child shard's parents are finished")
    cleanup_leases_upon_shard_completion: bool = _setting(
        "cleanupLeasesUponShardCompletion", Boolean(), True, _LEASES,
        "Delete a finished shard's lease once its children have started")
    ignore_unexpected_child_shards: bool = _setting(
        "ignoreUnexpectedChildShards", Boolean(), False, _LEASES,
        "Skip child shards whose parent has no lease")

    call_process_records_even_for_empty_record_list: bool = _setting(
        "callProcessRecordsEvenForEmptyRecordList", Boolean(), False, _PROCESS,
        "Send processRecords with an empty list when a read returns nothing")
    task_backoff_time_millis: int = _setting(
        "taskBackoffTimeMillis", _MILLIS, 500, _PROCESS,
        "Back-off before retrying a failed task")
    timeout_in_seconds: int | None = _setting(
        "timeoutInSeconds", Integer(1), None, _PROCESS,
        "A child that takes longer to answer one action is killed and restarted",
        default_doc="none (wait forever)")
    shutdown_grace_millis: int = _setting(
        "shutdownGraceMillis", Integer(0), 5000, _PROCESS,
        "On shutdown, time children get for their final checkpoint before SIGTERM")
    poison_record_policy: str = _setting(
        "poisonRecordPolicy", Choice(("RETRY", "DEAD_LETTER")), "RETRY", _PROCESS,
        "RETRY: a failing batch is retried with back-off forever; DEAD_LETTER: after "
        "poisonRecordMaxAttempts failures, bisect it and dead-letter the failing records")
    poison_record_max_attempts: int = _setting(
        "poisonRecordMaxAttempts", Integer(1), 3, _PROCESS,
        "Failures of one batch (and of one record alone) before it counts as poison")
    dead_letter_table_name: str = _setting(
        "deadLetterTableName", Text(r"[A-Za-z0-9_.-]{3,255}", "a DynamoDB table name"), "",
        _PROCESS, "DynamoDB table for poison records (created if missing)", default_doc="none")
    dead_letter_stream_name: str = _setting(
        "deadLetterStreamName", Text(r"[A-Za-z0-9_.-]{1,128}", "a Kinesis stream name"), "",
        _PROCESS, "Kinesis stream for poison records (must exist)", default_doc="none")

    child_restart_backoff_millis: int = _setting(
        "childRestartBackoffMillis", _MILLIS, 500, _CHILD,
        "First delay before restarting a child that failed soon after starting; doubles per "
        "failure, with jitter (after a healthy run the restart is immediate)")
    child_restart_max_backoff_millis: int = _setting(
        "childRestartMaxBackoffMillis", _MILLIS, 30000, _CHILD,
        "Longest delay between child restarts")
    child_min_uptime_seconds: float = _setting(
        "childMinUptimeSeconds", Number(0), 10.0, _CHILD,
        "A child must stay up this long for its restart count to reset")
    child_restart_budget: int = _setting(
        "childRestartBudget", Integer(0), 10, _CHILD,
        "Restarts of a crash-looping child before its shard's lease is released")
    child_stderr_log_level: str = _setting(
        "childStderrLogLevel",
        Choice(("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
               aliases={"WARN": "WARNING", "FATAL": "CRITICAL"}),
        "INFO", _CHILD, "Log level of the lines a child writes to stderr")
    child_max_rss_megabytes: float = _setting(
        "childMaxRssMegabytes", Number(0), 0.0, _CHILD,
        "A child (with its descendants) whose resident memory exceeds this is restarted "
        "like a crashed one; 0: no limit",
        default_doc="0 (no limit)")

    metrics_level: str = _setting(
        "metricsLevel", Choice(("NONE", "SUMMARY", "DETAILED")), "DETAILED", _METRICS,
        "Which CloudWatch metrics are published")
    metrics_buffer_time_millis: int = _setting(
        "metricsBufferTimeMillis", _MILLIS, 10000, _METRICS,
        "Longest time metrics are buffered")
    metrics_max_queue_size: int = _setting(
        "metricsMaxQueueSize", Integer(1), 10000, _METRICS,
        "Most metrics buffered")
    metrics_enabled_dimensions: tuple[str, ...] = _setting(
        "metricsEnabledDimensions",
        NameList(("ALL", "Operation", "ShardId", "WorkerIdentifier")), ("ALL",), _METRICS,
        "Metric dimensions to publish")
    metrics_prometheus_address: str = _setting(
        "metricsPrometheusAddress",
        Text(
            r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9.-]*)):(?P<port>6553[0-5]|655[0-2][0-9]"
            r"|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})",
            "host:port such as 127.0.0.1:9464",
        ),
        "", _METRICS,
        "Serve Prometheus metrics at http://host:port/metrics (127.0.0.1: this host only)",
        default_doc="off", example="127.0.0.1:9464")
    health_log_interval_seconds: float = _setting(
        "healthLogIntervalSeconds", Number(0), 60.0, _METRICS,
        "Time between health log lines (leases held, records/s, largest lag, child restarts); 0: none")
    # fmt: on

    # Not a setting: the properties file read (relative executables resolve from its folder).
    properties_path: str | None = None


SETTINGS: tuple[Setting, ...] = tuple(
    dataclasses.replace(f.metadata["setting"], attr=f.name)
    for f in dataclasses.fields(Config)
    if "setting" in f.metadata
)
SETTINGS_BY_ATTR: dict[str, Setting] = {setting.attr: setting for setting in SETTINGS}

# Read by the official daemon, meaningless here: accepted without a word.
COMPATIBILITY_KEYS: dict[str, str] = {
    "maxActiveThreads": "children need no thread pool here",
    "processingLanguage": "it only sets the official daemon's user agent",
    "validateSequenceNumberBeforeCheckpointing": "checkpoints are always checked against "
    "the records delivered",
}

# Read by the official daemon but not implemented here: accepted with a warning.
UNIMPLEMENTED_OFFICIAL_KEYS: frozenset[str] = frozenset(
    """
    initialLeaseTableReadCapacity initialLeaseTableWriteCapacity maxLeaseRenewalThreads
    listShardsBackoffTimeInMillis maxListShardsRetryAttempts shardPrioritization
    skipShardSyncAtWorkerInitializationIfLeasesExist schedulerInitializationBackoffTimeMillis
    logWarningForTaskAfterMillis enablePriorityLeaseAssignment retryGetRecordsInSeconds
    maxGetRecordsThreadPool consumerArn consumerName maxDescribeStreamSummaryRetries
    maxDescribeStreamConsumerRetries registerStreamConsumerRetries retryBackoffMillis
    clientVersionConfig gracefulLeaseHandoffTimeoutMillis isGracefulLeaseHandoffEnabled
    leaseAssignmentIntervalMillis coordinatorStateTableName coordinatorStateBillingMode
    coordinatorStateReadCapacity coordinatorStateWriteCapacity
    coordinatorStatePointInTimeRecoveryEnabled coordinatorStateDeletionProtectionEnabled
    coordinatorStateTags workerMetricsTableName workerMetricsBillingMode
    workerMetricsReadCapacity workerMetricsWriteCapacity workerMetricsPointInTimeRecoveryEnabled
    workerMetricsDeletionProtectionEnabled workerMetricsTags
    inMemoryWorkerMetricsCaptureFrequencyMillis workerMetricsReporterFreqInMillis
    noOfPersistedMetricsPerWorkerMetrics disableWorkerMetrics maxThroughputPerHostKBps
    dampeningPercentage reBalanceThresholdPercentage allowThroughputOvershoot
    varianceBalancingFrequency workerMetricsEMAAlpha staleWorkerMetricsEntryCleanupDuration
    """.split()  # noqa: SIM905 (a word list reads better than 47 quoted lines)
)
