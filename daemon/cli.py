"""``kcl-daemon``: the command line, signals and exit codes.

Exit codes: 0 after a graceful stop; 1 when the worker cannot start (an
unreachable endpoint, a missing stream, no credentials); 2 for bad
configuration. Every such error is one line naming the problem and the fix,
never a traceback. Signals only set an event; the scheduler does the work.
A second SIGINT/SIGTERM kills every child at once and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from concurrent.futures import ThreadPoolExecutor

from botocore.exceptions import BotoCoreError, NoCredentialsError, NoRegionError

from daemon import logs
from daemon.config import Config, load_config, resolve_executable
from daemon.errors import ConfigError, KclDaemonError
from daemon.kinesis_client import make_client

PROG = "kcl-daemon"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Consume a Kinesis stream with one child processor process per shard "
        "(a Python MultiLangDaemon).",
        epilog="Also: kcl-daemon status --properties FILE [--json] [--lag] shows the lease table.",
    )
    parser.add_argument("properties_positional", nargs="?", metavar="FILE", help="properties file")
    parser.add_argument(
        "-p",
        "--properties",
        "--properties-file",
        dest="properties",
        metavar="FILE",
        help="properties file (as the official MultiLangDaemon takes it)",
    )
    parser.add_argument("--log-level", choices=logs.LEVELS, default="info")
    parser.add_argument(
        "--log-format",
        choices=("json", "console"),
        default=None,
        help="default: console on a terminal, JSON otherwise",
    )
    return parser


def _fail(message: str, code: int) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["status"]:
        from daemon import status

        return status.main(argv[1:])
    args = build_parser().parse_args(argv)
    path = args.properties or args.properties_positional
    if not path:
        return _fail("no properties file given: run kcl-daemon --properties app.properties", 2)
    logs.configure(args.log_level, args.log_format)
    log = logs.get_logger()
    try:
        config, warnings = load_config(path)
        child_argv = resolve_executable(config)
    except ConfigError as error:
        return _fail(str(error), 2)
    for warning in warnings:
        log.warning(warning)
    try:
        return asyncio.run(_run(config, child_argv))
    except NoCredentialsError:
        return _fail(
            "no AWS credentials found: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
            "AWS_PROFILE, or run where an instance role is available",
            1,
        )
    except NoRegionError:
        return _fail("no AWS region: set regionName in the properties file or AWS_REGION", 1)
    except KclDaemonError as error:
        return _fail(str(error), 1)
    except BotoCoreError as error:
        return _fail(f"AWS client error: {error}", 1)


async def _run(config: Config, child_argv: list[str]) -> int:
    # Imported here so that --help and config errors stay fast.
    from daemon.operations import Operations
    from daemon.scheduler import Scheduler

    log = logs.get_logger(worker_id=config.worker_id)
    executor = ThreadPoolExecutor(max_workers=32, thread_name_prefix="aws")
    kinesis = make_client(
        "kinesis",
        config.region_name,
        config.kinesis_endpoint,
        fast_get_records=config.fast_get_records,
    )
    dynamodb = make_client("dynamodb", config.region_name, config.dynamodb_endpoint)
    scheduler = Scheduler(config, child_argv, kinesis=kinesis, dynamodb=dynamodb, executor=executor)
    operations = Operations(config, scheduler, executor)
    operations.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals_seen = 0

    def on_signal(signum: int) -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen == 1:
            log.info("stop requested", signal=signal.Signals(signum).name)
            operations.stopping()
            stop.set()
            return
        log.warning("second signal: killing every child and exiting now")
        for consumer in list(scheduler.consumers.values()):
            consumer.kill_child()
        os._exit(130)

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        await scheduler.run(stop)
    finally:
        await operations.stop()
        executor.shutdown(wait=False, cancel_futures=True)
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
