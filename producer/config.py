"""The producer's settings: every option declared once, with the KPL's defaults.

Owns the option table (Python name, KPL property name, default, bounds, one-line doc), the frozen
:class:`ProducerConfig` built from it, its validation, and reading a KPL ``.properties`` file
(``AggregationEnabled = true`` ...), so an existing KPL configuration works unchanged. Times are
in milliseconds and sizes in bytes, as in the KPL, so numbers carry over without conversion.

Options the KPL has and this producer does not need (a native child process, its log level,
thread model, certificates on disk ...) are accepted from a properties file and ignored with a
warning; unknown keys are a :class:`ConfigError`. The options marked "extension" are ours: the
KPL has no memory bound, no back-off and no ordering switch.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Any

from daemon.errors import ConfigError

__all__ = ["KPL_IGNORED_PROPERTIES", "ProducerConfig", "option_table"]

_REGION = re.compile(r"^([a-z]+-([a-z]+-)?[a-z]+-[0-9])?$")
_NAMESPACE = re.compile(r"^(?!AWS/).{1,255}$")
_LONG_MAX = (1 << 63) - 1

# KPL properties with no meaning for an in-process Python producer.
KPL_IGNORED_PROPERTIES = frozenset(
    {
        "LogLevel",
        "MinConnections",
        "ThreadingModel",
        "ThreadPoolSize",
        "EnableCoreDumps",
        "NativeExecutable",
        "TempDirectory",
        "CaCertPath",
        "CaCertFile",
        "CredentialsRefreshDelay",
        "EnableOldestFutureTracker",
        "ReturnUserRecordOnFailure",
        "EnableDaemonHealthCheck",
        "DaemonHealthCheckTimeoutMs",
        "UserRecordTimeoutInMillis",
        "ProxyHost",
        "ProxyPort",
        "ProxyUserName",
        "ProxyPassword",
        "StsEndpoint",
        "StsPort",
    }
)


def _opt(
    default: Any,
    kpl: str | None,
    doc: str,
    low: int | None = None,
    high: int | None = None,
    choices: tuple[str, ...] | None = None,
    pattern: re.Pattern[str] | None = None,
) -> Any:
    meta: dict[str, Any] = {"kpl": kpl, "doc": doc, "low": low, "high": high}
    meta.update(choices=choices, pattern=pattern)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class ProducerConfig:
    """Settings of a :class:`producer.KinesisProducer`; defaults are the KPL's."""

    region: str | None = _opt(
        None, "Region", "AWS region; None takes boto3's default chain", pattern=_REGION
    )
    kinesis_endpoint: str | None = _opt(
        None, "KinesisEndpoint", "Kinesis host name or URL (http://host:port for local servers)"
    )
    kinesis_port: int = _opt(443, "KinesisPort", "port when kinesis_endpoint is a host", 1, 65535)
    cloudwatch_endpoint: str | None = _opt(
        None, "CloudwatchEndpoint", "CloudWatch host name or URL for metrics upload"
    )
    cloudwatch_port: int = _opt(
        443, "CloudwatchPort", "port when cloudwatch_endpoint is a host", 1, 65535
    )
    verify_certificate: bool = _opt(True, "VerifyCertificate", "verify TLS certificates")
    aggregation_enabled: bool = _opt(
        True, "AggregationEnabled", "pack user records into KPL aggregates"
    )
    aggregation_max_count: int = _opt(
        4294967295, "AggregationMaxCount", "most user records in one aggregate", 1, _LONG_MAX
    )
    aggregation_max_size: int = _opt(
        51200, "AggregationMaxSize", "most bytes in one aggregate", 64, 10485760
    )
    collection_max_count: int = _opt(
        500, "CollectionMaxCount", "most Kinesis records in one PutRecords request", 1, 500
    )
    collection_max_size: int = _opt(
        5242880, "CollectionMaxSize", "most bytes in one PutRecords request", 52224, _LONG_MAX
    )
    connect_timeout: int = _opt(6000, "ConnectTimeout", "ms to open a connection", 100, 300000)
    request_timeout: int = _opt(
        6000, "RequestTimeout", "ms for one PutRecords request and its answer", 100, 600000
    )
    max_connections: int = _opt(
        24, "MaxConnections", "most PutRecords requests in flight at once", 1, 256
    )
    max_user_record_size: int = _opt(
        1048576, "MaxUserRecordSize", "most bytes of data plus partition key", 64, 10485760
    )
    rate_limit: int = _opt(
        150, "RateLimit", "per-shard send limit, % of 1000 records/s and 1 MiB/s", 1, _LONG_MAX
    )
    record_max_buffered_time: int = _opt(
        100, "RecordMaxBufferedTime", "ms a record may wait to be aggregated and sent", 0, _LONG_MAX
    )
    record_ttl: int = _opt(
        30000, "RecordTtl", "ms after which an unsent record fails with Expired", 100, _LONG_MAX
    )
    fail_if_throttled: bool = _opt(
        False, "FailIfThrottled", "fail throttled records at once instead of retrying"
    )
    metrics_level: str = _opt(
        "detailed", "MetricsLevel", "metrics uploaded", choices=("none", "summary", "detailed")
    )
    metrics_granularity: str = _opt(
        "shard",
        "MetricsGranularity",
        "finest dimension uploaded",
        choices=("global", "stream", "shard"),
    )
    metrics_namespace: str = _opt(
        "KinesisProducerLibrary", "MetricsNamespace", "CloudWatch namespace", pattern=_NAMESPACE
    )
    metrics_upload_delay: int = _opt(
        60000, "MetricsUploadDelay", "ms between metrics uploads", 1, 60000
    )
    # -- extensions ------------------------------------------------------------------------------
    max_outstanding_records: int = _opt(
        100_000, None, "extension: most unfinished user records held", 1, _LONG_MAX
    )
    max_outstanding_bytes: int = _opt(
        64 * 1024 * 1024,
        None,
        "extension: most bytes of unfinished user records held",
        1,
        _LONG_MAX,
    )
    backpressure: str = _opt(
        "block",
        None,
        "extension: when full, add_user_record blocks or raises BufferFullError",
        choices=("block", "raise"),
    )
    retry_backoff_min: int = _opt(
        100, None, "extension: ms of the first retry back-off (doubles, with jitter)", 1, _LONG_MAX
    )
    retry_backoff_max: int = _opt(
        5000, None, "extension: ms cap of the retry back-off", 1, _LONG_MAX
    )
    preserve_order: bool = _opt(
        True, None, "extension: keep per-partition-key order under retries (see README)"
    )

    def __post_init__(self) -> None:
        for spec in fields(self):
            _check(spec.name, getattr(self, spec.name), spec.metadata, spec.default)
        if self.retry_backoff_max < self.retry_backoff_min:
            raise ConfigError(
                f"retry_backoff_max ({self.retry_backoff_max}) is below retry_backoff_min "
                f"({self.retry_backoff_min}): raise retry_backoff_max"
            )

    def with_changes(self, **changes: Any) -> ProducerConfig:
        """A copy with some options changed (validated again)."""
        return replace(self, **changes)

    @classmethod
    def from_kpl_properties(
        cls, properties: Mapping[str, str] | str, **overrides: Any
    ) -> ProducerConfig:
        """A config from KPL property names (a mapping, or the text of a ``.properties`` file);
        keyword arguments (Python names) win over the properties."""
        pairs = _parse_properties(properties) if isinstance(properties, str) else properties
        by_kpl = {spec.metadata["kpl"]: spec for spec in fields(cls) if spec.metadata["kpl"]}
        values: dict[str, Any] = {}
        ignored = []
        for key, raw in pairs.items():
            key = key.strip()
            if key in KPL_IGNORED_PROPERTIES:
                ignored.append(key)
                continue
            spec = by_kpl.get(key)
            if spec is None:
                raise ConfigError(f"unknown KPL property {key!r}: check its spelling")
            values[spec.name] = _convert(spec.name, str(raw).strip(), spec.default)
        if ignored:
            names = ", ".join(sorted(ignored))
            warnings.warn(f"KPL properties with no effect in this producer: {names}", stacklevel=2)
        values.update(overrides)
        return cls(**values)


def option_table() -> list[tuple[str, str, Any, str]]:
    """(Python name, KPL name or "", default, doc) of every option, for docs and the CLI."""
    return [
        (spec.name, spec.metadata["kpl"] or "", spec.default, spec.metadata["doc"])
        for spec in fields(ProducerConfig)
    ]


def _check(name: str, value: Any, meta: Mapping[str, Any], default: Any) -> None:
    if default is MISSING:  # pragma: no cover - every option has a default
        return
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, got {value!r}")
        return
    if isinstance(default, int):
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"{name} must be an integer, got {value!r}")
        low, high = meta["low"], meta["high"]
        if (low is not None and value < low) or (high is not None and value > high):
            raise ConfigError(f"{name} must be between {low} and {high}, got {value}")
        return
    if value is None:
        return
    if not isinstance(value, str):
        raise ConfigError(f"{name} must be a string, got {value!r}")
    if meta["choices"] and value not in meta["choices"]:
        raise ConfigError(f"{name} must be one of {', '.join(meta['choices'])}, got {value!r}")
    if meta["pattern"] is not None and not meta["pattern"].match(value):
        raise ConfigError(f"{name} {value!r} does not match {meta['pattern'].pattern}")


def _convert(name: str, raw: str, default: Any) -> Any:
    if isinstance(default, bool):
        lowered = raw.lower()
        if lowered not in ("true", "false"):
            raise ConfigError(f"{name} must be true or false, got {raw!r}")
        return lowered == "true"
    if isinstance(default, int):
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    return raw or None


def _parse_properties(text: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for line in _logical_lines(text.splitlines()):
        parts = re.split(r"\s*[=:]\s*", line, maxsplit=1)
        if len(parts) != 2:
            raise ConfigError(f"properties line {line!r} has no '=': write Key = Value")
        key, value = parts
        # The KPL's own sample file ends one value with a stray ';'.
        pairs[key] = value.rstrip(";").strip()
    return pairs


def _logical_lines(lines: Iterable[str]) -> Iterable[str]:
    pending = ""
    for raw in lines:
        line = raw.strip()
        if not pending and (not line or line.startswith(("#", "!"))):
            continue
        if line.endswith("\\"):
            pending += line[:-1]
            continue
        yield pending + line
        pending = ""
    if pending:
        yield pending
