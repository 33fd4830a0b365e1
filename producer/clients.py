"""boto3 clients for the producer, and turning their exceptions into error codes.

Owns the translation of the KPL's connection options (endpoint host or URL, port, region,
timeouts, certificate checks, pool size) into botocore settings. botocore's own retries are
off: the producer retries per record, with its own back-off and deadline, and a retry inside
botocore would hide throttling from the rate limiter and the metrics. Parameter validation is
off too: the producer builds every request itself, and validating 500 records per call costs
more CPU than anything else in the request path.
"""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import NoRegionError

from daemon.errors import ConfigError
from producer.config import ProducerConfig

__all__ = [
    "endpoint_url",
    "error_code_and_message",
    "make_cloudwatch_client",
    "make_kinesis_client",
]

_MESSAGE_LIMIT = 300


def endpoint_url(host: str | None, port: int) -> str | None:
    """A URL for botocore from the KPL's host-and-port form; URLs pass through unchanged."""
    if not host:
        return None
    if "://" in host:
        return host
    return f"https://{host}" if port == 443 else f"https://{host}:{port}"


def _session_client(service: str, config: ProducerConfig, url: str | None, pool: int) -> Any:
    """A client; :class:`ConfigError` when no region is configured anywhere."""
    settings = Config(
        connect_timeout=config.connect_timeout / 1000.0,
        read_timeout=config.request_timeout / 1000.0,
        max_pool_connections=pool,
        retries={"mode": "standard", "total_max_attempts": 1},
        parameter_validation=False,
        tcp_keepalive=True,
    )
    session: Any = boto3.session.Session()
    try:
        return session.client(
            service,
            region_name=config.region,
            endpoint_url=url,
            verify=config.verify_certificate,
            config=settings,
        )
    except NoRegionError:
        raise ConfigError(
            "no AWS region configured: set one (ProducerConfig region, kcl-produce --region) "
            "or the AWS_REGION environment variable"
        ) from None


def make_kinesis_client(config: ProducerConfig) -> Any:
    url = endpoint_url(config.kinesis_endpoint, config.kinesis_port)
    # One extra connection for ListShards, which runs beside the PutRecords calls.
    return _session_client("kinesis", config, url, config.max_connections + 1)


def make_cloudwatch_client(config: ProducerConfig) -> Any:
    url = endpoint_url(config.cloudwatch_endpoint, config.cloudwatch_port)
    return _session_client("cloudwatch", config, url, 2)


def error_code_and_message(error: BaseException) -> tuple[str, str]:
    """(code, message) for a failed call: the service's error code for a ClientError, else the
    exception's class name (ReadTimeoutError, EndpointConnectionError, ...)."""
    response = getattr(error, "response", None)
    if isinstance(response, dict):
        details = response.get("Error") or {}
        code = details.get("Code")
        if code:
            return str(code), str(details.get("Message") or "")[:_MESSAGE_LIMIT]
    return type(error).__name__, str(error)[:_MESSAGE_LIMIT]
