"""The stdout guard: processor output on fd 1 or sys.stdout never reaches the protocol.

pytest's ``capfd`` stands in for the daemon's pipes: fd 1 and fd 2 are
captured separately, so what the protocol wrote and what the processor
printed can be told apart.
"""

from __future__ import annotations

import io
import os
import sys
from typing import Any

import orjson

from processors.kclpy import kcl
from processors.kclpy._channel import StdoutGuard
from protocol.messages import Initialize, LeaseLost


class Noisy:
    version = 3

    def initialize(self, initialize_input: Any) -> None:
        print("print() from the processor")
        sys.stdout.write("sys.stdout.write from the processor\n")
        os.write(1, b"raw fd 1 write from the processor\n")

    def lease_lost(self, lease_lost_input: Any) -> None:
        pass


def test_processor_output_goes_to_stderr_and_protocol_lines_to_stdout(capfd):
    lines = Initialize("shard-1", "LATEST").encode(extensions=False) + b"\n"
    lines += LeaseLost().encode() + b"\n"
    kcl.KCLProcess(Noisy(), input_file=io.BytesIO(lines)).run()
    out, err = capfd.readouterr()
    protocol = [orjson.loads(line) for line in out.splitlines() if line.strip()]
    assert protocol == [
        {"action": "status", "responseFor": "initialize"},
        {"action": "status", "responseFor": "leaseLost"},
    ]
    assert "print() from the processor" in err
    assert "sys.stdout.write from the processor" in err
    assert "raw fd 1 write from the processor" in err


def test_guard_restores_stdout_when_lifted(capfd):
    saved = sys.stdout
    guard = StdoutGuard()
    os.write(1, b"while guarded\n")
    os.write(guard.protocol_fd, b"protocol line\n")
    guard.restore()
    os.write(1, b"after the guard\n")
    out, err = capfd.readouterr()
    assert sys.stdout is saved
    assert out.splitlines() == ["protocol line", "after the guard"]
    assert "while guarded" in err


def test_explicit_output_file_is_not_guarded(capfd):
    output = io.BytesIO()
    lines = Initialize("shard-1", "LATEST").encode(extensions=False) + b"\n"
    kcl.KCLProcess(Noisy(), input_file=io.BytesIO(lines), output_file=output).run()
    out, _ = capfd.readouterr()
    assert "raw fd 1 write from the processor" in out
    assert b'"responseFor":"initialize"' in output.getvalue()
