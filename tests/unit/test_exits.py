import errno
import signal

from daemon.exits import classify_exit, describe_start_failure, read_oom_kill_count


def test_exit_code_is_reported_as_such() -> None:
    info = classify_exit(1, uptime_s=2.5)
    assert (info.exit_code, info.signal, info.requested) == (1, None, False)
    assert info.description == "exited with code 1"
    assert not info.clean and not info.oom_suspected


def test_clean_exit_after_stdin_close_is_requested() -> None:
    info = classify_exit(0, requested=True)
    assert info.clean and info.requested
    assert info.description == "exited with code 0 after the daemon closed its stdin"


def test_sigkill_not_sent_by_us_hints_out_of_memory() -> None:
    info = classify_exit(-signal.SIGKILL)
    assert (info.signal, info.exit_code, info.requested) == (signal.SIGKILL, None, False)
    assert info.oom_suspected
    assert info.description == "killed by SIGKILL (not sent by the daemon: possibly out of memory)"


def test_sigkill_with_kernel_oom_kills_meanwhile_is_probably_out_of_memory() -> None:
    info = classify_exit(-signal.SIGKILL, oom_kills=1)
    assert info.oom_suspected
    assert info.description.startswith("killed by SIGKILL (probably out of memory")


def test_sigkill_we_sent_is_not_an_oom_hint() -> None:
    info = classify_exit(-signal.SIGKILL, requested=True, signal_sent=signal.SIGKILL)
    assert not info.oom_suspected
    assert info.description == "killed by SIGKILL (sent by the daemon)"


def test_sigkill_after_we_sent_only_sigterm_is_still_suspicious() -> None:
    info = classify_exit(-signal.SIGKILL, requested=True, signal_sent=signal.SIGTERM)
    assert info.oom_suspected


def test_sigterm_we_sent_is_terminated() -> None:
    info = classify_exit(-signal.SIGTERM, signal_sent=signal.SIGTERM)
    assert info.requested
    assert info.description == "terminated by SIGTERM (sent by the daemon)"
    assert info.signal_name == "SIGTERM"


def test_sigterm_from_someone_else_says_so() -> None:
    info = classify_exit(-signal.SIGTERM)
    assert info.description == "terminated by SIGTERM (not sent by the daemon)"
    assert not info.requested


def test_other_signals_are_named() -> None:
    assert (
        classify_exit(-signal.SIGSEGV).description == "killed by SIGSEGV (not sent by the daemon)"
    )


def test_shell_style_128_plus_signal_code_is_explained() -> None:
    info = classify_exit(137)
    assert info.exit_code == 137 and info.signal is None
    assert "128+SIGKILL" in info.description


def test_exit_after_our_sigterm_mentions_it() -> None:
    info = classify_exit(0, requested=True, signal_sent=signal.SIGTERM)
    assert info.description == "exited with code 0 after the daemon sent SIGTERM"


def test_log_fields_carry_the_whole_classification() -> None:
    fields = classify_exit(-signal.SIGKILL, uptime_s=1.23456).log_fields()
    assert fields == {
        "returncode": -9,
        "exit": "killed by SIGKILL (not sent by the daemon: possibly out of memory)",
        "requested": False,
        "signal": "SIGKILL",
        "oom_suspected": True,
        "uptime_s": 1.235,
    }


def test_oom_kill_counter_is_read_from_vmstat(tmp_path) -> None:
    vmstat = tmp_path / "vmstat"
    vmstat.write_text("pgfault 10\noom_kill 7\n")
    assert read_oom_kill_count(str(vmstat)) == 7


def test_missing_oom_kill_counter_is_unknown(tmp_path) -> None:
    vmstat = tmp_path / "vmstat"
    vmstat.write_text("pgfault 10\n")
    assert read_oom_kill_count(str(vmstat)) is None
    assert read_oom_kill_count(str(tmp_path / "absent")) is None


def test_command_not_on_path_says_to_give_its_full_path() -> None:
    error = FileNotFoundError(errno.ENOENT, "No such file or directory", "processor")
    reason = describe_start_failure("processor", None, error)
    assert reason == "command 'processor' was not found (not on PATH: give its full path)"


def test_missing_path_says_to_check_it() -> None:
    error = FileNotFoundError(errno.ENOENT, "No such file or directory", "/opt/x/run")
    assert "(check the path)" in describe_start_failure("/opt/x/run", None, error)


def test_missing_working_directory_is_named_rather_than_the_command() -> None:
    error = FileNotFoundError(errno.ENOENT, "No such file or directory", "/srv/app")
    reason = describe_start_failure("python3", "/srv/app", error)
    assert reason == "its working directory '/srv/app' does not exist or is not accessible"


def test_permission_denied_suggests_chmod_or_an_interpreter() -> None:
    error = PermissionError(errno.EACCES, "Permission denied", "app.py")
    reason = describe_start_failure("app.py", None, error)
    assert "is not executable" in reason and "python3 app.py" in reason


def test_exec_format_error_asks_for_a_shebang() -> None:
    error = OSError(errno.ENOEXEC, "Exec format error", "run.sh")
    assert "'#!' line" in describe_start_failure("run.sh", None, error)
