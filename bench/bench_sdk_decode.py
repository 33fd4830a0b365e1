#!/usr/bin/env python3
"""Child-side decode speed: our SDK (processors.kclpy) against the official amazon_kclpy.

Each SDK runs its real ``KCLProcess.run()`` loop in process over an in-memory
input of processRecords messages (10,000 records of 100 bytes each by
default) in the form kcl-daemon sends it: record objects for amazon_kclpy
(which never asks for anything else) and the record-columns extension for
ours (``protocol.records``; our SDK asks for it whenever the daemon offers
it). For comparison ours also reads record objects, which is what it gets
from the official daemon. Ours reads bytes (it reads its stdin in binary);
amazon_kclpy reads a UTF-8 TextIOWrapper, like ``sys.stdin``. The processor
either reads every record's ``binary_data`` or only its sequence number;
output goes to an in-memory file. That is the whole per-message cost a child
pays: read the line, decode it, wrap the records, call the processor, write
the status line. A separate row measures the daemon-side encoder
(``protocol.messages.ProcessRecords(...).encode()``).

Figures are records per second of CPU time (``time.process_time``, so other
jobs on a shared machine disturb them less than wall time would), the median
of 5 runs; the variants take turns within each run. The official library is
found through ``KCL_TEST_KCLPY_PATH`` or ``vendor/kclpy-*`` (bin/fetch-kclpy);
without it its rows are left out.

    python bench/bench_sdk_decode.py [--records 10000] [--size 100] [--messages 3]
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import orjson  # noqa: E402

from processors.kclpy import kcl as our_kcl  # noqa: E402
from protocol.messages import Initialize, ProcessRecords  # noqa: E402
from protocol.records import WireRecord, wire_record  # noqa: E402

RUNS = 5
FIRST_SEQUENCE = 49590338271490256608559692538361571095921575989136588802
SDK_TARGET_RATIO = 3.0
ENCODER_TARGET = 500_000

OFFICIAL_DATA = "amazon_kclpy 3.2 KCLProcess, reading binary_data"
OFFICIAL_NO_DATA = "amazon_kclpy 3.2 KCLProcess, not reading data"
OURS_DATA = "processors.kclpy KCLProcess, recordColumns, reading binary_data"
OURS_NO_DATA = "processors.kclpy KCLProcess, recordColumns, not reading data"
OURS_OBJECTS_DATA = "processors.kclpy KCLProcess, record objects, reading binary_data"
OURS_OBJECTS_NO_DATA = "processors.kclpy KCLProcess, record objects, not reading data"
ENCODE = "protocol.messages ProcessRecords(...).encode()"
BUILD_ENCODE = "wire_record(...) per record, then encode()"


def find_official() -> Path | None:
    configured = os.environ.get("KCL_TEST_KCLPY_PATH")
    candidates = [Path(configured)] if configured else sorted((REPO / "vendor").glob("kclpy-*"))
    for path in candidates:
        if (path / "amazon_kclpy" / "kcl.py").is_file():
            return path
    return None


def make_records(count: int, size: int) -> list[WireRecord]:
    return [
        wire_record(
            base64.b64encode(os.urandom(size)).decode("ascii"),
            f"partition-{n % 64}",
            str(FIRST_SEQUENCE + n),
            1_700_000_000_000 + n,
        )
        for n in range(count)
    ]


class Reader:
    """A processor that reads what a typical one reads, for either SDK."""

    version = 3

    def __init__(self, touch_data: bool) -> None:
        self.touch_data = touch_data
        self.total = 0

    def initialize(self, initialize_input: Any) -> None:
        pass

    def process_records(self, process_records_input: Any) -> None:
        total = 0
        if self.touch_data:
            for record in process_records_input.records:
                total += len(record.binary_data)
        else:
            for record in process_records_input.records:
                total += len(record.sequence_number)
        self.total += total


def median_seconds(runs: dict[str, Callable[[], None]]) -> dict[str, float]:
    """Median CPU time of each callable over RUNS rounds.

    The callables take turns within each round, so a change in machine load
    (other people's jobs) affects all of them alike and the ratios hold.
    """
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(RUNS):
        for name, run in runs.items():
            start = time.process_time()
            run()
            times[name].append(time.process_time() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def sdk_runner(kcl: Any, text: str, binary: bytes, touch_data: bool) -> Callable[[], None]:
    def run() -> None:
        if kcl is our_kcl:
            source: Any = io.BytesIO(binary)
            sink: Any = io.BytesIO()
        else:
            # amazon_kclpy reads and writes text through sys.stdin and sys.stdout, which are
            # TextIOWrappers over the pipes: give it the same, so that it pays for decoding
            # the lines as it does in a real child (a StringIO would hand it decoded text).
            source = io.TextIOWrapper(io.BytesIO(binary), encoding="utf-8")
            sink = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
        kcl.KCLProcess(Reader(touch_data), input_file=source, output_file=sink).run()

    return run


def machine_line() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"Machine: {cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, orjson {orjson.__version__}, load average {load}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="SDK decode benchmark")
    parser.add_argument("--records", type=int, default=10_000, help="records per message")
    parser.add_argument("--size", type=int, default=100, help="bytes per record")
    parser.add_argument("--messages", type=int, default=3, help="messages per run")
    args = parser.parse_args()

    records = make_records(args.records, args.size)
    batch = ProcessRecords(records, 0).encode()
    lines = [Initialize("shardId-000000000000", "TRIM_HORIZON").encode(extensions=False)]
    lines += [batch] * args.messages
    binary = b"\n".join(lines) + b"\n"
    text = binary.decode("utf-8")
    # What kcl-daemon sends our SDK once it has asked for the record-columns extension.
    column_batch = ProcessRecords(records, 0, columns=True).encode()
    column_lines = [Initialize("shardId-000000000000", "TRIM_HORIZON").encode()]
    column_lines += [column_batch] * args.messages
    column_binary = b"\n".join(column_lines) + b"\n"
    per_run = args.records * args.messages

    runs: dict[str, Callable[[], None]] = {}
    official_path = find_official()
    if official_path is not None:
        sys.path.insert(0, str(official_path))
        from amazon_kclpy import kcl as official_kcl

        runs[OFFICIAL_DATA] = sdk_runner(official_kcl, text, binary, True)
        runs[OFFICIAL_NO_DATA] = sdk_runner(official_kcl, text, binary, False)
    runs[OURS_DATA] = sdk_runner(our_kcl, "", column_binary, True)
    runs[OURS_NO_DATA] = sdk_runner(our_kcl, "", column_binary, False)
    runs[OURS_OBJECTS_DATA] = sdk_runner(our_kcl, text, binary, True)
    runs[OURS_OBJECTS_NO_DATA] = sdk_runner(our_kcl, text, binary, False)

    def build_and_encode() -> None:
        fresh = [
            wire_record(
                r["data"], r["partitionKey"], r["sequenceNumber"], r["approximateArrivalTimestamp"]
            )
            for r in records
        ]
        ProcessRecords(fresh, 0).encode()

    def encode_only() -> None:
        ProcessRecords(records, 0).encode()

    runs[ENCODE] = encode_only
    runs[BUILD_ENCODE] = build_and_encode
    seconds = median_seconds(runs)
    rate = {
        name: (args.records if name in (ENCODE, BUILD_ENCODE) else per_run) / value
        for name, value in seconds.items()
    }
    ratios = {}
    if official_path is not None:
        for ours, official in (
            (OURS_DATA, OFFICIAL_DATA),
            (OURS_NO_DATA, OFFICIAL_NO_DATA),
            (OURS_OBJECTS_DATA, OFFICIAL_DATA),
            (OURS_OBJECTS_NO_DATA, OFFICIAL_NO_DATA),
        ):
            ratios[ours] = rate[ours] / rate[official]

    print(
        f"SDK decode: processRecords messages of {args.records:,} records x {args.size} bytes "
        f"({len(batch) / 1e6:.2f} MB a line as record objects, {len(column_batch) / 1e6:.2f} MB"
        f" as recordColumns), {args.messages} messages a run, median CPU time of {RUNS} runs"
    )
    print()
    print(machine_line())
    print()
    print("| what | records/s | vs amazon_kclpy (same data access) |")
    print("|---|---:|---:|")
    for name in runs:
        ratio = f"{ratios[name]:.1f}x" if name in ratios else ""
        print(f"| {name} | {rate[name]:,.0f} | {ratio} |")
    print()
    if ratios:
        ratio = ratios[OURS_DATA]
        verdict = "met" if ratio >= SDK_TARGET_RATIO else "NOT met"
        print(
            f"SDK target (>= {SDK_TARGET_RATIO:g}x amazon_kclpy reading data, each SDK fed what"
            f" kcl-daemon sends it): {ratio:.1f}x, {verdict}; on record objects (the official"
            f" daemon's form) ours is {ratios[OURS_OBJECTS_DATA]:.1f}x"
        )
    else:
        print(
            "amazon_kclpy not found (set KCL_TEST_KCLPY_PATH or run bin/fetch-kclpy): no comparison"
        )
    verdict = "met" if rate[ENCODE] >= ENCODER_TARGET else "NOT met"
    print(f"Encoder target (>= {ENCODER_TARGET:,} records/s): {rate[ENCODE]:,.0f}, {verdict}")


if __name__ == "__main__":
    main()
