"""AWS client construction, the optional fast GetRecords path, and what a failed call means.

Owns how the daemon builds its botocore clients (Kinesis, DynamoDB,
CloudWatch): boto3's default credential chain (environment, shared files,
SSO, container and instance roles), standard retry mode with few attempts
(the daemon backs off itself, with jitter, and must notice trouble quickly:
a lease renewal that sits in hidden SDK retries is a lease lost), bounded
connect/read timeouts, and a connection pool sized for many shards.

Fast GetRecords
---------------
botocore's JSON parser walks every record of a GetRecords response through
the service model: it base64-decodes each ``Data`` blob and builds a datetime
for each arrival time, and the daemon then base64-encodes the data again for
the child. With ``fast_get_records=True`` the client parses GetRecords
bodies with orjson instead, so ``Data`` stays the base64 string of the wire
(the multilang protocol sends exactly that string) and
``ApproximateArrivalTimestamp`` stays epoch seconds (a float).

It hooks botocore's documented ``before-parse`` event, so the request is
still built, signed, sent and retried by botocore's own machinery; only the
parse of a successful body changes. The hook hands the parsed body over in
``customized_response_dict`` (merged into the result by botocore) and
replaces the body with ``{}`` so botocore's parser has nothing left to walk.
Anything unexpected (a non-200 status, a body that is not a JSON object of
the GetRecords shape, a field of the wrong type) leaves the response alone,
and botocore parses it the standard way: errors keep raising the same
``ClientError`` as ever. Callers of such a client's ``get_records`` must
accept ``Data`` as ``str`` or ``bytes`` and the timestamp as a number or a
datetime (``daemon.conversion`` does).

When every record has all four fields, ``Records`` comes back as a
``daemon.fast_records.FastRecords``: the fields as columns (msgspec decodes
such a body straight into them when it has no escapes), from which
``daemon.conversion`` builds the child's message without a dict per record;
it still reads as the sequence of record dicts.

Failed calls
------------
:func:`classify_error` sorts a botocore exception into one of four kinds, so
every caller maps each kind to exactly one action: an expired shard
iterator; throttling (back off); transient trouble -- 5xx, connection
refused or reset, timeouts, a garbled body -- (back off and retry); and
fatal (a missing resource, denied access, missing credentials, a request the
service rejects: retrying the same call cannot help). :func:`fatal_error`
turns a fatal failure of a Kinesis read into the daemon's typed error.
"""

from __future__ import annotations

import enum
from typing import Any

import boto3
import orjson
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from daemon.errors import ConfigError, DependencyError, KclDaemonError, StreamNotFoundError
from daemon.fast_records import decode_get_records, record_columns

#: Enough for 100+ shards' fetchers plus lease and metrics calls. The daemon's
#: thread pool bounds the calls in flight; an idle slot in the pool costs nothing.
DEFAULT_MAX_POOL_CONNECTIONS = 128
DEFAULT_CONNECT_TIMEOUT_S = 5.0
#: A GetRecords response is up to 10 MiB; a read stalled longer is a dead connection.
DEFAULT_READ_TIMEOUT_S = 20.0
#: One try and one retry inside botocore; longer trouble goes to our own back-off.
DEFAULT_TOTAL_MAX_ATTEMPTS = 2

EXPIRED_ITERATOR = "ExpiredIteratorException"
THROTTLING_CODES = frozenset(
    (
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "Throttling",
        "LimitExceededException",
        "KMSThrottlingException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
    )
)
TRANSIENT_CODES = frozenset(
    ("InternalFailure", "InternalFailureException", "InternalServerError", "ServiceUnavailable",
     "ServiceUnavailableException", "RequestTimeout", "RequestTimeoutException")
)  # fmt: skip
ACCESS_CODES = frozenset(
    ("AccessDeniedException", "AccessDenied", "KMSAccessDeniedException",
     "UnrecognizedClientException", "InvalidSignatureException", "IncompleteSignature",
     "MissingAuthenticationToken", "ExpiredTokenException", "InvalidClientTokenId")
)  # fmt: skip


class ErrorKind(enum.Enum):
    """What a failed AWS call calls for."""

    EXPIRED_ITERATOR = "expired iterator"
    THROTTLED = "throttled"
    TRANSIENT = "transient"
    FATAL = "fatal"


def error_code(error: ClientError) -> str:
    """The AWS error code of a ClientError ("" when the response has none)."""
    return str(error.response.get("Error", {}).get("Code", ""))


def classify_error(error: BaseException) -> ErrorKind:
    """The kind of failure ``error`` is (see the module doc)."""
    if isinstance(error, ClientError):
        code = error_code(error)
        if code == EXPIRED_ITERATOR:
            return ErrorKind.EXPIRED_ITERATOR
        if code in THROTTLING_CODES:
            return ErrorKind.THROTTLED
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        if code in TRANSIENT_CODES or status >= 500:
            return ErrorKind.TRANSIENT
        return ErrorKind.FATAL
    if isinstance(error, NoCredentialsError):
        return ErrorKind.FATAL
    if isinstance(error, BotoCoreError):
        return ErrorKind.TRANSIENT  # connection refused or reset, timeouts, garbled bodies
    return ErrorKind.FATAL


def fatal_error(error: BaseException, operation: str, stream: str, shard_id: str) -> KclDaemonError:
    """The typed error for a Kinesis read (GetShardIterator, GetRecords) classified FATAL."""
    where = f"{operation} on shard {shard_id} of stream {stream!r}"
    if isinstance(error, NoCredentialsError):
        return ConfigError(
            f"no AWS credentials for {where}: set AWS_PROFILE or AWS_ACCESS_KEY_ID,"
            " or run with an instance or task role"
        )
    if isinstance(error, ClientError):
        code = error_code(error)
        message = error.response.get("Error", {}).get("Message", "")
        if code == "ResourceNotFoundException":
            return StreamNotFoundError(
                f"{where}: not found ({message or code}); the stream was deleted or the shard"
                " expired past the stream's retention period"
            )
        if code in ACCESS_CODES:
            return ConfigError(
                f"{where} was denied ({code}): give the daemon's credentials"
                f" kinesis:{operation} (and kms:Decrypt on the stream's key if it is"
                " encrypted), or refresh expired credentials"
            )
        return DependencyError(f"{where} failed: {code}: {message}")
    return DependencyError(f"{where} failed: {type(error).__name__}: {error}")


FAST_GET_RECORDS_EVENT = "before-parse.kinesis.GetRecords"
_HANDLER_ID = "kcl-daemon.fast-get-records"


def make_client(
    service: str,
    region: str | None = None,
    endpoint_url: str | None = None,
    max_pool_connections: int = DEFAULT_MAX_POOL_CONNECTIONS,
    *,
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
    read_timeout_s: float = DEFAULT_READ_TIMEOUT_S,
    total_max_attempts: int = DEFAULT_TOTAL_MAX_ATTEMPTS,
    fast_get_records: bool = False,
    session: boto3.session.Session | None = None,
) -> BaseClient:
    """A botocore client for ``service`` ("kinesis", "dynamodb", "cloudwatch").

    ``region`` None lets boto3 resolve it (AWS_REGION, config files) and raises
    ``botocore.exceptions.NoRegionError`` when nothing names one.
    ``fast_get_records`` is only meaningful for Kinesis (see the module doc).
    """
    config = Config(
        retries={"mode": "standard", "total_max_attempts": total_max_attempts},
        connect_timeout=connect_timeout_s,
        read_timeout=read_timeout_s,
        max_pool_connections=max_pool_connections,
        tcp_keepalive=True,
    )
    # Typed as Any: boto3-stubs only know client() for literal service names.
    factory: Any = session or boto3.session.Session()
    client: BaseClient = factory.client(
        service, region_name=region, endpoint_url=endpoint_url, config=config
    )
    if fast_get_records:
        if service != "kinesis":
            raise ValueError(f"fast_get_records applies to kinesis clients, not {service!r}")
        enable_fast_get_records(client)
    return client


def enable_fast_get_records(client: BaseClient) -> None:
    """Make this Kinesis client's ``get_records`` parse bodies with orjson.

    Only this client changes: botocore gives every client its own copy of the
    event hooks. Calling it twice registers the hook once.
    """
    client.meta.events.register(FAST_GET_RECORDS_EVENT, _parse_get_records, unique_id=_HANDLER_ID)


_NUMBER_TYPES = frozenset((int, float))


def _parse_get_records(
    response_dict: dict[str, Any], customized_response_dict: dict[str, Any], **_: Any
) -> None:
    """The ``before-parse`` hook: take over the parse of a well-formed 200 body."""
    if response_dict.get("status_code") != 200:
        return
    body = response_dict.get("body")
    if not isinstance(body, bytes | bytearray) or not body:
        return
    fast = decode_get_records(bytes(body))
    if fast is not None:
        customized_response_dict.update(fast)
        response_dict["body"] = b"{}"
        return
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return
    if not _has_get_records_shape(parsed):
        return
    columns = record_columns(parsed["Records"], bytes(body))
    if columns is not None:
        parsed["Records"] = columns
    elif not all(map(_is_fast_record, parsed["Records"])):
        return
    customized_response_dict.update(parsed)
    response_dict["body"] = b"{}"


def _has_get_records_shape(parsed: object) -> bool:
    """The top level of a GetRecords body, records not looked at."""
    if type(parsed) is not dict:
        return False
    if type(parsed.get("Records")) is not list:
        return False
    iterator = parsed.get("NextShardIterator")
    if iterator is not None and type(iterator) is not str:
        return False
    behind = parsed.get("MillisBehindLatest")
    if behind is not None and type(behind) is not int:
        return False
    children = parsed.get("ChildShards")
    return children is None or type(children) is list


def _is_fast_record(record: object) -> bool:
    if (
        type(record) is not dict
        or type(record.get("Data")) is not str
        or type(record.get("SequenceNumber")) is not str
    ):
        return False
    key = record.get("PartitionKey")
    if key is not None and type(key) is not str:
        return False
    arrival = record.get("ApproximateArrivalTimestamp")
    return arrival is None or type(arrival) in _NUMBER_TYPES


def is_get_records_body(parsed: object) -> bool:
    """Whether a decoded JSON body has exactly the types the fast path passes on."""
    if not _has_get_records_shape(parsed):
        return False
    assert isinstance(parsed, dict)
    return all(map(_is_fast_record, parsed["Records"]))
