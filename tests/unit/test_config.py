"""Config validation, warnings, executable resolution and the generated docs."""

from __future__ import annotations

import dataclasses
import os
import re
import stat
from pathlib import Path

import pytest

from daemon import config as config_module
from daemon.config import (
    config_from_properties,
    default_worker_id,
    load_config,
    parse_stream_arn,
    render_sample_properties,
    render_settings_markdown,
    resolve_executable,
)
from daemon.errors import ConfigError
from daemon.properties import PropertiesSyntaxError, parse_properties
from daemon.settings import (
    COMPATIBILITY_KEYS,
    SETTINGS,
    UNIMPLEMENTED_OFFICIAL_KEYS,
    Config,
    Setting,
    Text,
)

REQUIRED = {"executableName": "python3 app.py", "applicationName": "MyApp", "streamName": "s1"}
REPO = Path(__file__).resolve().parents[2]


def configure(**extra: str) -> tuple[Config, list[str]]:
    return config_from_properties({**REQUIRED, **extra}, "app.properties")


def error_of(props: dict[str, str], lines: dict[str, int] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        config_from_properties(props, "app.properties", lines=lines)
    message = str(caught.value)
    assert "\n" not in message and "\r" not in message
    return message


# ---- defaults -------------------------------------------------------------------------


def test_minimal_properties_give_the_documented_defaults() -> None:
    config, warnings = configure()
    assert warnings == []
    assert config.executable_name == "python3 app.py"
    assert config.table_name == "MyApp"
    assert config.stream_name == "s1" and config.stream_arn is None
    assert config.initial_position_in_stream == "LATEST"
    assert config.initial_position_in_stream_extended is None
    assert config.max_records == 10000
    assert config.idle_time_between_reads_millis == 1500
    assert config.failover_time_millis == 10000
    assert config.shard_sync_interval_millis == 60000
    assert config.max_leases_for_worker is None
    assert config.max_leases_to_steal_at_one_time == 1
    assert config.cleanup_leases_upon_shard_completion is True
    assert config.ignore_unexpected_child_shards is False
    assert config.timeout_in_seconds is None
    assert config.shutdown_grace_millis == 5000
    assert config.metrics_level == "DETAILED"
    assert config.metrics_enabled_dimensions == ("ALL",)
    assert config.retrieval_mode == "POLLING"
    assert config.kinesis_credentials_provider == "DefaultCredentialsProvider"
    assert config.child_restart_backoff_millis == 500
    assert config.child_restart_max_backoff_millis == 30000
    assert config.child_min_uptime_seconds == 10
    assert config.child_restart_budget == 10
    assert config.child_stderr_log_level == "INFO"
    assert config.prefetch_max_records == 20000
    assert config.prefetch_max_bytes == 64 * 1024 * 1024
    assert config.region_name is None and config.dynamodb_region_name is None


def test_config_is_frozen() -> None:
    config, _ = configure()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.max_records = 5  # type: ignore[misc]


def test_default_worker_id_is_host_and_stable_hash(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config_module.socket, "gethostname", lambda: "host-a")
    first = default_worker_id("MyApp", "/etc/kcl/app.properties")
    assert re.fullmatch(r"host-a:[0-9a-f]{8}", first)
    assert default_worker_id("MyApp", "/etc/kcl/app.properties") == first
    assert default_worker_id("OtherApp", "/etc/kcl/app.properties") != first
    assert default_worker_id("MyApp", "/etc/kcl/other.properties") != first


def test_loaded_config_worker_id_depends_on_the_absolute_path(tmp_path: Path) -> None:
    text = "".join(f"{k}={v}\n" for k, v in REQUIRED.items())
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "app.properties").write_text(text)
    (tmp_path / "b" / "app.properties").write_text(text)
    first, _ = load_config(tmp_path / "a" / "app.properties")
    again, _ = load_config(tmp_path / "a" / "app.properties")
    other, _ = load_config(tmp_path / "b" / "app.properties")
    assert first.worker_id == again.worker_id != other.worker_id


def test_explicit_worker_id_and_its_official_alias_win() -> None:
    assert configure(workerId="w-1")[0].worker_id == "w-1"
    assert configure(workerIdentifier="w-2")[0].worker_id == "w-2"


# ---- values ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "text", "attr", "value"),
    [
        ("maxRecords", " 77 ", "max_records", 77),
        ("maxRecords", "+5", "max_records", 5),
        ("idleTimeBetweenReadsInMillis", "0", "idle_time_between_reads_millis", 0),
        ("maxLeasesForWorker", "3", "max_leases_for_worker", 3),
        ("maxLeasesForWorker", "   ", "max_leases_for_worker", None),
        ("timeoutInSeconds", "30", "timeout_in_seconds", 30),
        (
            "cleanupLeasesUponShardCompletion",
            "FALSE",
            "cleanup_leases_upon_shard_completion",
            False,
        ),
        ("ignoreUnexpectedChildShards", "True", "ignore_unexpected_child_shards", True),
        ("ignoreUnexpectedChildShards", "yes", "ignore_unexpected_child_shards", True),
        ("initialPositionInStream", "trim_horizon", "initial_position_in_stream", "TRIM_HORIZON"),
        ("metricsLevel", "summary", "metrics_level", "SUMMARY"),
        ("retrievalMode", "polling", "retrieval_mode", "POLLING"),
        ("retrievalMode", "DEFAULT", "retrieval_mode", "POLLING"),
        ("childStderrLogLevel", "warn", "child_stderr_log_level", "WARNING"),
        ("childMinUptimeSeconds", "0.5", "child_min_uptime_seconds", 0.5),
        (
            "metricsEnabledDimensions",
            "operation, ShardId,shardid",
            "metrics_enabled_dimensions",
            ("Operation", "ShardId"),
        ),
        ("kinesisEndpoint", "http://localhost:4567", "kinesis_endpoint", "http://localhost:4567"),
        ("tableName", "leases-table", "table_name", "leases-table"),
        ("regionName", "eu-west-1", "region_name", "eu-west-1"),
    ],
)
def test_values_are_parsed_by_type(key: str, text: str, attr: str, value: object) -> None:
    config, warnings = configure(**{key: text})
    assert getattr(config, attr) == value
    assert warnings == []


def test_region_defaults_apply_to_dynamodb_and_cloudwatch_unless_set() -> None:
    config, _ = configure(regionName="eu-west-1", dynamoDBRegionName="us-east-2")
    assert config.region_name == "eu-west-1"
    assert config.dynamodb_region_name == "us-east-2"
    assert config.cloudwatch_region_name == "eu-west-1"


def test_bad_integer_message_names_key_value_and_range() -> None:
    assert (
        error_of({**REQUIRED, "maxRecords": "abc"})
        == "maxRecords = 'abc' in app.properties: expected an integer from 1 to 10000"
    )


def test_bad_value_message_names_the_line_when_known() -> None:
    message = error_of({**REQUIRED, "maxRecords": "0"}, lines={"maxRecords": 7})
    assert (
        message == "maxRecords = '0' in app.properties line 7: expected an integer from 1 to 10000"
    )


@pytest.mark.parametrize(
    ("key", "text", "expected"),
    [
        ("maxRecords", "10001", "an integer from 1 to 10000"),
        ("maxRecords", "1.5", "an integer from 1 to 10000"),
        ("maxRecords", "１２", "an integer from 1 to 10000"),
        ("failoverTimeMillis", "0", "an integer from 1 to 2147483647"),
        ("idleTimeBetweenReadsInMillis", "-1", "an integer from 0 to"),
        ("cleanupLeasesUponShardCompletion", "maybe", "true or false"),
        ("metricsLevel", "VERBOSE", "NONE, SUMMARY or DETAILED"),
        ("initialPositionInStream", "EARLIEST", "TRIM_HORIZON, LATEST or AT_TIMESTAMP"),
        ("initialPositionInStreamExtended", "1700000000000", "epoch seconds"),
        ("initialPositionInStreamExtended", "nan", "epoch seconds"),
        ("childMinUptimeSeconds", "-1", "a number from 0"),
        ("childMinUptimeSeconds", "inf", "a number from 0"),
        ("metricsEnabledDimensions", "Operation,Bogus", "ALL, Operation, ShardId or"),
        ("kinesisEndpoint", "localhost:4567", "a URL with scheme and host"),
        ("dynamoDBEndpoint", "ftp://x", "a URL with scheme and host"),
        ("executableName", 'python3 "unbalanced', "a command line"),
        ("streamName", "bad name", "a stream name"),
        ("tableName", "ab", "a DynamoDB table name"),
        ("regionName", "us east 1", "an AWS region name"),
        ("childStderrLogLevel", "LOUD", "DEBUG, INFO, WARNING, ERROR or CRITICAL"),
    ],
)
def test_each_bad_value_is_one_line_naming_key_value_and_expectation(
    key: str, text: str, expected: str
) -> None:
    message = error_of({**REQUIRED, key: text})
    assert message.startswith(f"{key} = {text!r} in app.properties: expected ")
    assert expected in message


@pytest.mark.parametrize(
    "setting",
    [
        s
        for s in SETTINGS
        if not (isinstance(s.type, Text) and s.type.pattern is None) and s.key != "executableName"
    ],
    ids=lambda s: s.key,
)
def test_every_validated_setting_rejects_garbage_with_the_same_format(setting: Setting) -> None:
    message = error_of({**REQUIRED, setting.key: "@@ 'nope"})
    assert message.startswith(f'{setting.key} = "@@ \'nope" in app.properties: expected ')


def test_fanout_is_refused_with_the_fix() -> None:
    message = error_of({**REQUIRED, "retrievalMode": "FANOUT"})
    assert message.startswith("retrievalMode = 'FANOUT' in app.properties: expected POLLING")
    assert "only POLLING is supported" in message
    assert "set retrievalMode=POLLING" in message


# ---- required keys and cross-key rules ---------------------------------------------------


def test_missing_executable_name_says_what_to_set() -> None:
    props = {k: v for k, v in REQUIRED.items() if k != "executableName"}
    assert error_of(props) == (
        "executableName is missing from app.properties: "
        "set it to the command that starts your record processor"
    )


def test_empty_required_value_is_reported_as_empty_with_its_line() -> None:
    message = error_of({**REQUIRED, "applicationName": "  "}, lines={"applicationName": 2})
    assert message.startswith("applicationName is empty in app.properties line 2: set it to")


def test_missing_stream_says_to_set_stream_name_or_arn() -> None:
    props = {k: v for k, v in REQUIRED.items() if k != "streamName"}
    message = error_of(props)
    assert message.startswith(
        "streamName is missing from app.properties: set streamName (or streamArn)"
    )


def test_stream_arn_gives_the_stream_name_and_region() -> None:
    arn = "arn:aws:kinesis:eu-west-1:123456789012:stream/orders"
    config, warnings = config_from_properties({**REQUIRED, "streamName": "", "streamArn": arn})
    assert config.stream_name == "orders"
    assert config.stream_arn == arn
    assert config.region_name == "eu-west-1"
    assert warnings == []


def test_stream_arn_wins_over_a_different_stream_name_with_a_warning() -> None:
    arn = "arn:aws-cn:kinesis:cn-north-1:123456789012:stream/orders"
    config, warnings = configure(streamArn=arn)
    assert config.stream_name == "orders"
    assert warnings == [
        "streamArn and streamName name different streams in app.properties; "
        "streamArn wins (stream 'orders')"
    ]


def test_region_name_differing_from_the_arn_is_kept_with_a_warning() -> None:
    arn = "arn:aws:kinesis:eu-west-1:123456789012:stream/s1"
    config, warnings = configure(streamArn=arn, regionName="us-east-1")
    assert config.region_name == "us-east-1"
    assert len(warnings) == 1 and "differs from the region in streamArn" in warnings[0]


@pytest.mark.parametrize(
    "arn",
    [
        "orders",
        "arn:aws:kinesis:eu-west-1:123456789012:table/orders",
        "arn:aws:dynamodb:eu-west-1:123456789012:stream/orders",
        "arn:aws:kinesis:eu-west-1:1234:stream/orders",
        "arn:aws:kinesis:eu-west-1:123456789012:stream/",
    ],
)
def test_unparsable_stream_arn_is_an_error(arn: str) -> None:
    message = error_of({**REQUIRED, "streamArn": arn}, lines={"streamArn": 4})
    assert message == (
        f"streamArn = {arn!r} in app.properties line 4: "
        "expected arn:aws:kinesis:REGION:ACCOUNT_ID:stream/STREAM_NAME"
    )


def test_parse_stream_arn_splits_region_account_and_name() -> None:
    arn = "arn:aws:kinesis:us-east-1:000000000000:stream/my.stream-1"
    assert parse_stream_arn(arn) == ("us-east-1", "000000000000", "my.stream-1")


def test_extended_initial_position_selects_at_timestamp() -> None:
    config, warnings = configure(initialPositionInStreamExtended="1700000000.25")
    assert config.initial_position_in_stream == "AT_TIMESTAMP"
    assert config.initial_position_in_stream_extended == 1700000000.25
    assert warnings == []


def test_extended_position_overrides_another_position_with_a_warning() -> None:
    config, warnings = configure(
        initialPositionInStream="LATEST", initialPositionInStreamExtended="1700000000"
    )
    assert config.initial_position_in_stream == "AT_TIMESTAMP"
    assert len(warnings) == 1 and "selects AT_TIMESTAMP" in warnings[0]


def test_at_timestamp_without_a_time_is_an_error() -> None:
    message = error_of({**REQUIRED, "initialPositionInStream": "AT_TIMESTAMP"})
    assert message.startswith("initialPositionInStream = 'AT_TIMESTAMP' in app.properties")
    assert "initialPositionInStreamExtended" in message


def test_application_name_that_cannot_be_a_table_name_is_an_error_unless_table_name_set() -> None:
    message = error_of({**REQUIRED, "applicationName": "My App"})
    assert message.startswith("applicationName = 'My App' in app.properties: expected a DynamoDB")
    assert "tableName" in message
    config, _ = configure(applicationName="My App", tableName="my-app-leases")
    assert config.table_name == "my-app-leases"


def test_max_backoff_below_first_backoff_is_an_error_naming_the_written_key() -> None:
    message = error_of({**REQUIRED, "childRestartMaxBackoffMillis": "100"})
    assert message == (
        "childRestartMaxBackoffMillis = '100' in app.properties: "
        "expected at least childRestartBackoffMillis (500)"
    )
    message = error_of({**REQUIRED, "childRestartBackoffMillis": "60000"})
    assert message.startswith(
        "childRestartBackoffMillis = '60000' in app.properties: expected at most"
    )


# ---- credentials ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("AWSCredentialsProvider", "DefaultCredentialsProvider"),
        ("AWSCredentialsProvider", "DefaultAWSCredentialsProviderChain"),
        ("AwsCredentialsProvider", "DefaultCredentialsProvider"),
        ("awsCredentialsProvider", "DefaultCredentialsProvider"),
        (
            "AWSCredentialsProvider",
            "software.amazon.awssdk.auth.credentials.DefaultCredentialsProvider",
        ),
        ("AWSCredentialsProvider", "com.amazonaws.auth.DefaultAWSCredentialsProviderChain"),
        (
            "AWSCredentialsProvider",
            "DefaultCredentialsProvider, DefaultAWSCredentialsProviderChain",
        ),
        ("AWSCredentialsProviderDynamoDB", "DefaultCredentialsProvider"),
        ("AwsCredentialsProviderCloudWatch", "DefaultAWSCredentialsProviderChain"),
    ],
)
def test_default_chain_provider_names_are_accepted_silently(key: str, value: str) -> None:
    config, warnings = configure(**{key: value})
    assert warnings == []
    assert config.kinesis_credentials_provider == "DefaultCredentialsProvider"
    assert config.dynamodb_credentials_provider == "DefaultCredentialsProvider"
    assert config.cloudwatch_credentials_provider == "DefaultCredentialsProvider"


def test_other_provider_is_refused_naming_the_supported_ones_without_echoing_arguments() -> None:
    message = error_of(
        {**REQUIRED, "AWSCredentialsProvider": "StaticCredentialsProvider|AKIAEXAMPLE|s3cr3t"}
    )
    assert message.startswith(
        "AWSCredentialsProvider = 'StaticCredentialsProvider|...' in app.properties: expected "
        "DefaultCredentialsProvider or DefaultAWSCredentialsProviderChain"
    )
    assert "AKIAEXAMPLE" not in message and "s3cr3t" not in message


# ---- unknown keys -----------------------------------------------------------------------


def test_unknown_key_warns_with_did_you_mean_and_line() -> None:
    _, warnings = config_from_properties(
        {**REQUIRED, "maxRecord": "5"}, "app.properties", lines={"maxRecord": 7}
    )
    assert warnings == [
        "unknown key 'maxRecord' in app.properties line 7; did you mean 'maxRecords'?"
    ]


def test_key_differing_only_by_case_is_not_applied_but_suggested() -> None:
    config, warnings = configure(maxrecords="5")
    assert config.max_records == 10000
    assert warnings == ["unknown key 'maxrecords' in app.properties; did you mean 'maxRecords'?"]


def test_unknown_key_with_nothing_close_says_it_is_ignored() -> None:
    _, warnings = configure(zzzzqqq="1")
    assert warnings == ["unknown key 'zzzzqqq' in app.properties; it is ignored"]


def test_compatibility_keys_are_ignored_without_warning() -> None:
    _, warnings = configure(**{key: "x" for key in COMPATIBILITY_KEYS})
    assert warnings == []


def test_unimplemented_official_key_gets_its_own_warning() -> None:
    _, warnings = configure(consumerName="c1")
    assert warnings == [
        "key 'consumerName' in app.properties is an official KCL setting that kcl-daemon "
        "does not implement; it is ignored"
    ]


def test_setting_a_key_and_its_alias_warns_which_wins() -> None:
    config, warnings = configure(workerId="a", workerIdentifier="b")
    assert config.worker_id == "b"
    assert warnings == [
        "'workerId' and 'workerIdentifier' both set workerId in app.properties; 'workerIdentifier' wins"
    ]


# ---- loading files ------------------------------------------------------------------------


def test_load_config_reads_latin1_file_and_reports_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "app.properties"
    path.write_bytes(
        b"executableName=python3 app.py\napplicationName=caf\xe9s\nstreamName=s1\n"
        b"tableName=cafes\nmaxRecords=5\nmaxRecords=6\n"
    )
    config, warnings = load_config(path)
    assert config.application_name == "caf\xe9s"
    assert config.max_records == 6
    assert config.properties_path == str(path.resolve())
    assert warnings == [
        f"'maxRecords' is set more than once in {path} (lines 5 and 6); line 6 wins"
    ]


def test_missing_file_names_the_path_and_the_fix(tmp_path: Path) -> None:
    missing = tmp_path / "nope.properties"
    with pytest.raises(ConfigError) as caught:
        load_config(missing)
    message = str(caught.value)
    assert message.startswith(f"properties file '{missing}' not found")
    assert "kcl-daemon --properties" in message


def test_folder_instead_of_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a folder"):
        load_config(tmp_path)


def test_syntax_error_in_file_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "app.properties"
    path.write_text("executableName=x\nbad=\\u00zz\n")
    with pytest.raises(PropertiesSyntaxError, match=r"app\.properties line 2: malformed escape"):
        load_config(path)


def test_bad_value_in_file_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "app.properties"
    path.write_text("".join(f"{k}={v}\n" for k, v in REQUIRED.items()) + "maxRecords = lots\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == (
        f"maxRecords = 'lots' in {path} line 4: expected an integer from 1 to 10000"
    )


# ---- executable resolution ----------------------------------------------------------------


def _script(path: Path, executable: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 0\n")
    mode = stat.S_IRWXU if executable else stat.S_IRUSR | stat.S_IWUSR
    path.chmod(mode)
    return path


def _config_at(props_dir: Path, executable: str) -> Config:
    props_dir.mkdir(parents=True, exist_ok=True)
    path = props_dir / "app.properties"
    config, _ = config_from_properties({**REQUIRED, "executableName": executable}, path=path)
    return config


def test_absolute_executable_is_kept_with_its_arguments(tmp_path: Path) -> None:
    script = _script(tmp_path / "bin" / "proc.sh")
    config = _config_at(tmp_path / "conf", f"'{script}' --flag 'two words'")
    assert resolve_executable(config) == [str(script), "--flag", "two words"]


def test_relative_executable_resolves_from_the_properties_folder_first(tmp_path: Path) -> None:
    in_props = _script(tmp_path / "conf" / "proc.sh")
    _script(tmp_path / "cwd" / "proc.sh")
    config = _config_at(tmp_path / "conf", "./proc.sh arg")
    assert resolve_executable(config, cwd=tmp_path / "cwd") == [str(in_props), "arg"]


def test_relative_executable_falls_back_to_the_working_directory(tmp_path: Path) -> None:
    in_cwd = _script(tmp_path / "cwd" / "tools" / "proc.sh")
    config = _config_at(tmp_path / "conf", "tools/proc.sh")
    assert resolve_executable(config, cwd=tmp_path / "cwd") == [str(in_cwd)]


def test_bare_name_is_found_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    on_path = _script(tmp_path / "pathdir" / "my-processor")
    monkeypatch.setenv("PATH", str(tmp_path / "pathdir"))
    config = _config_at(tmp_path / "conf", "my-processor --x")
    assert resolve_executable(config, cwd=tmp_path) == [str(on_path), "--x"]


def test_bare_name_next_to_the_properties_file_is_found(tmp_path: Path) -> None:
    script = _script(tmp_path / "conf" / "app.py")
    config = _config_at(tmp_path / "conf", "app.py")
    assert resolve_executable(config, cwd=tmp_path) == [str(script)]


def test_not_executable_file_says_chmod(tmp_path: Path) -> None:
    script = _script(tmp_path / "conf" / "app.py", executable=False)
    config = _config_at(tmp_path / "conf", "app.py")
    with pytest.raises(ConfigError) as caught:
        resolve_executable(config, cwd=tmp_path)
    message = str(caught.value)
    assert message.startswith(f"executableName 'app.py' is not executable: chmod +x {script}")
    assert "python3 app.py" in message


def test_missing_executable_says_where_it_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    config = _config_at(tmp_path / "conf", "foo.py")
    with pytest.raises(ConfigError) as caught:
        resolve_executable(config, cwd=tmp_path / "cwd")
    message = str(caught.value)
    assert message.startswith("executableName 'foo.py' not found: looked in ")
    assert str(tmp_path / "conf") in message and str(tmp_path / "cwd") in message
    assert "PATH" in message and "\n" not in message


def test_folder_as_executable_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "conf" / "proc").mkdir(parents=True)
    config = _config_at(tmp_path / "conf", "./proc")
    with pytest.raises(ConfigError, match="executableName './proc' is a folder"):
        resolve_executable(config, cwd=tmp_path)


def test_executable_without_properties_path_resolves_from_cwd(tmp_path: Path) -> None:
    script = _script(tmp_path / "proc.sh")
    config, _ = configure(executableName="./proc.sh")
    assert resolve_executable(config, cwd=tmp_path) == [str(script)]


# ---- the registry and its generated docs ----------------------------------------------------


def test_every_config_field_but_the_path_is_a_declared_setting() -> None:
    fields = {f.name for f in dataclasses.fields(Config)}
    assert fields - {s.attr for s in SETTINGS} == {"properties_path"}
    keys = [s.key for s in SETTINGS] + [a for s in SETTINGS for a in s.aliases]
    assert len(keys) == len(set(keys))
    assert not set(keys) & (set(COMPATIBILITY_KEYS) | UNIMPLEMENTED_OFFICIAL_KEYS)
    assert all(s.doc and "\n" not in s.doc for s in SETTINGS)


def test_markdown_table_lists_every_key() -> None:
    table = render_settings_markdown()
    assert table.startswith("| key | type | default | meaning |\n")
    for setting in SETTINGS:
        assert re.search(rf"^\| `{setting.key}`", table, re.MULTILINE), setting.key
    for key in COMPATIBILITY_KEYS:
        assert f"`{key}`" in table


def test_sample_file_round_trips_to_the_defaults() -> None:
    props = parse_properties(render_sample_properties().encode("iso-8859-1"))
    assert set(props) == {s.key for s in SETTINGS if s.required or s.set_in_sample}
    config, warnings = config_from_properties({**props, **REQUIRED}, "sample")
    expected, _ = config_from_properties(REQUIRED, "sample")
    assert warnings == []
    assert config == expected


def test_sample_file_with_every_setting_uncommented_still_gives_the_defaults() -> None:
    lines = render_sample_properties().splitlines()
    uncommented = [line[1:] if re.match(r"#[A-Za-z]", line) else line for line in lines]
    props = parse_properties("\n".join(uncommented))
    assert set(props) == {s.key for s in SETTINGS}
    config, warnings = config_from_properties({**props, **REQUIRED}, "sample")
    expected, _ = config_from_properties(REQUIRED, "sample")
    assert warnings == []
    assert config == expected


def test_deploy_example_is_the_generated_sample() -> None:
    example = REPO / "deploy" / "app.properties.example"
    assert example.read_text(encoding="iso-8859-1") == render_sample_properties(), (
        "regenerate it: python -m daemon.config --sample > deploy/app.properties.example"
    )


def test_cli_prints_markdown_sample_and_checks_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert config_module.main(["--markdown"]) == 0
    assert capsys.readouterr().out == render_settings_markdown()
    assert config_module.main(["--sample"]) == 0
    assert capsys.readouterr().out == render_sample_properties()

    script = _script(tmp_path / "proc.sh")
    good = tmp_path / "good.properties"
    good.write_text(f"executableName={script}\napplicationName=App\nstreamName=s\nmaxRecord=1\n")
    assert config_module.main(["--check", str(good)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("ok: application 'App', stream 's'")
    assert "did you mean 'maxRecords'?" in err

    assert config_module.main(["--check", str(tmp_path / "missing.properties")]) == 2
    assert capsys.readouterr().err.startswith("error: properties file")


def test_check_does_not_depend_on_the_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _script(tmp_path / "conf" / "proc.sh")
    path = tmp_path / "conf" / "app.properties"
    path.write_text("executableName=./proc.sh\napplicationName=App\nstreamName=s\n")
    monkeypatch.chdir(tmp_path)
    config, _ = load_config(os.path.relpath(path, tmp_path))
    assert resolve_executable(config) == [str(tmp_path / "conf" / "proc.sh")]
