"""ProducerConfig: the KPL's defaults, validation, and reading a KPL properties file."""

from __future__ import annotations

import pytest

from daemon.errors import ConfigError
from producer.config import ProducerConfig, option_table

# The KPL's default_config.properties, as shipped with its Java sample (stray ';' included).
KPL_SAMPLE = """
# comment
AggregationEnabled = true
AggregationMaxCount = 4294967295
AggregationMaxSize = 51200
CollectionMaxCount = 500
CollectionMaxSize = 5242880
ConnectTimeout = 6000
FailIfThrottled = false
LogLevel = info
MaxConnections = 24
MaxUserRecordSize = 1048576;
MetricsGranularity = shard
MetricsLevel = detailed
MetricsNamespace = KinesisProducerLibrary
MetricsUploadDelay = 60000
MinConnections = 1
KinesisPort = 443
RateLimit = 150
RecordMaxBufferedTime = 100
RecordTtl = 30000
RequestTimeout = 6000
VerifyCertificate = true
ThreadingModel = PER_REQUEST
"""


def test_defaults_are_the_kpl_defaults():
    config = ProducerConfig()
    assert (config.aggregation_enabled, config.aggregation_max_count) == (True, 4294967295)
    assert (config.aggregation_max_size, config.collection_max_count) == (51200, 500)
    assert config.collection_max_size == 5242880
    assert (config.record_max_buffered_time, config.record_ttl) == (100, 30000)
    assert (config.max_connections, config.request_timeout, config.connect_timeout) == (
        24,
        6000,
        6000,
    )
    assert (config.rate_limit, config.fail_if_throttled) == (150, False)
    assert (config.metrics_level, config.metrics_granularity) == ("detailed", "shard")
    assert (config.metrics_namespace, config.metrics_upload_delay) == (
        "KinesisProducerLibrary",
        60000,
    )


def test_kpl_sample_properties_give_the_defaults():
    with pytest.warns(UserWarning, match="LogLevel"):
        parsed = ProducerConfig.from_kpl_properties(KPL_SAMPLE)
    assert parsed == ProducerConfig()


def test_seed_example_settings_read_from_properties():
    parsed = ProducerConfig.from_kpl_properties(
        {
            "RecordMaxBufferedTime": "3000",
            "MaxConnections": "1",
            "RequestTimeout": "60000",
            "Region": "us-west-1",
        }
    )
    assert (parsed.record_max_buffered_time, parsed.max_connections) == (3000, 1)
    assert (parsed.request_timeout, parsed.region) == (60000, "us-west-1")


def test_keyword_overrides_win_over_properties():
    parsed = ProducerConfig.from_kpl_properties("RecordTtl = 5000", record_ttl=700)
    assert parsed.record_ttl == 700


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"collection_max_count": 501}, "collection_max_count must be between 1 and 500"),
        ({"aggregation_max_size": 63}, "aggregation_max_size"),
        ({"record_ttl": 99}, "record_ttl"),
        ({"max_connections": 0}, "max_connections"),
        ({"request_timeout": 600001}, "request_timeout"),
        ({"metrics_level": "verbose"}, "metrics_level must be one of none, summary, detailed"),
        ({"region": "Mars"}, "region"),
        ({"metrics_namespace": "AWS/Kinesis"}, "metrics_namespace"),
        ({"aggregation_enabled": "yes"}, "true or false"),
        ({"rate_limit": 1.5}, "integer"),
        ({"retry_backoff_min": 500, "retry_backoff_max": 100}, "retry_backoff_max"),
        ({"backpressure": "drop"}, "backpressure"),
    ],
)
def test_out_of_range_settings_name_the_option(changes, message):
    with pytest.raises(ConfigError, match=message):
        ProducerConfig(**changes)


def test_unknown_kpl_property_is_a_config_error():
    with pytest.raises(ConfigError, match="AggregationMaxSise"):
        ProducerConfig.from_kpl_properties("AggregationMaxSise = 100")


def test_property_without_equals_sign_is_a_config_error():
    with pytest.raises(ConfigError, match="Key = Value"):
        ProducerConfig.from_kpl_properties("RecordTtl")


def test_bad_property_value_names_the_option():
    with pytest.raises(ConfigError, match="record_ttl must be an integer"):
        ProducerConfig.from_kpl_properties("RecordTtl = soon")


def test_with_changes_validates_again():
    config = ProducerConfig().with_changes(record_ttl=1000)
    assert config.record_ttl == 1000
    with pytest.raises(ConfigError):
        config.with_changes(record_ttl=1)


def test_option_table_lists_every_option_once_with_a_doc():
    names = [row[0] for row in option_table()]
    assert len(names) == len(set(names))
    assert all(row[3] for row in option_table())
    assert option_table()[names.index("record_ttl")][:3] == ("record_ttl", "RecordTtl", 30000)
