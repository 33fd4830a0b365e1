"""Loading and validating the daemon's configuration from a properties file.

The keys, types, defaults and docs are declared once in ``daemon.settings``;
this module turns parsed properties into a frozen ``Config`` plus a list of
warnings, and owns the rules that span keys: streamArn over streamName, the
lease table name, the stable default workerId, AT_TIMESTAMP, and finding the
child executable.

Every error is a ``ConfigError`` whose message is one line naming the key, the
value and what was expected (or the file and the fix), so the CLI can print it
without a traceback. Unknown keys are warnings, never errors: the official
daemon ignores them silently, and we only make typos visible.

The default workerId is ``hostname:HASH`` where HASH covers the absolute path of
the properties file and applicationName. A daemon restarted with the same file
finds its own name on its leases and takes them back at once, instead of
waiting failoverTimeMillis for them to expire (the official daemon picks a
random id per start). Two daemons on one host from the same file would share
an id: give each its own workerId.
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import os
import re
import shlex
import shutil
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from daemon.errors import ConfigError
from daemon.properties import parse_property_entries
from daemon.settings import (
    COMPATIBILITY_KEYS,
    SETTINGS,
    SETTINGS_BY_ATTR,
    UNIMPLEMENTED_OFFICIAL_KEYS,
    Config,
    Setting,
)
from daemon.settings_doc import (
    readme_with_settings,
    render_sample_properties,
    render_settings_markdown,
)

__all__ = [
    "Config",
    "config_from_properties",
    "default_worker_id",
    "load_config",
    "parse_stream_arn",
    "render_sample_properties",
    "render_settings_markdown",
    "resolve_executable",
]

_STREAM_ARN = re.compile(
    r"arn:aws[a-z-]*:kinesis:(?P<region>[a-z0-9-]+):(?P<account>[0-9]{12}):"
    r"stream/(?P<name>[A-Za-z0-9_.-]{1,128})"
)
# Maps a setting's attribute to the key as written and where it was written.
_KeyWhere = Callable[[str], tuple[str, str]]
_BY_KEY: dict[str, Setting] = {
    **{setting.key: setting for setting in SETTINGS},
    **{alias: setting for setting in SETTINGS for alias in setting.aliases},
}
_BY_ANY_CASE_KEY = {setting.key.lower(): setting for setting in SETTINGS if setting.any_case}
_KNOWN_KEYS = sorted({*_BY_KEY, *COMPATIBILITY_KEYS, *UNIMPLEMENTED_OFFICIAL_KEYS})
_KNOWN_BY_LOWER = {key.lower(): key for key in _KNOWN_KEYS}


def load_config(path: str | Path) -> tuple[Config, list[str]]:
    """Read, parse and validate the properties file at ``path``.

    Returns the config and the warnings to log (unknown keys, duplicates,
    overridden keys). Raises ``ConfigError`` for a missing or unreadable file,
    bad syntax, or a bad, missing or contradictory value.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"properties file '{path}' not found (no file at {path.absolute()}): pass the path "
            "of your properties file, e.g. kcl-daemon --properties /path/to/app.properties"
        ) from None
    except IsADirectoryError:
        raise ConfigError(
            f"properties file '{path}' is a folder: pass the path of the properties file in it"
        ) from None
    except PermissionError:
        raise ConfigError(
            f"properties file '{path}' is not readable: make it readable (chmod u+r '{path}')"
        ) from None
    except OSError as exc:
        raise ConfigError(f"properties file '{path}' cannot be read: {exc.strerror}") from None
    source = str(path)
    entries = parse_property_entries(data, source)
    warnings = []
    first_line: dict[str, int] = {}
    for entry in entries:
        if entry.key in first_line:
            warnings.append(
                f"{entry.key!r} is set more than once in {source} (lines {first_line[entry.key]} "
                f"and {entry.line}); line {entry.line} wins"
            )
        else:
            first_line[entry.key] = entry.line
    config, more = config_from_properties(
        {entry.key: entry.value for entry in entries},
        source,
        lines={entry.key: entry.line for entry in entries},
        path=path,
    )
    return config, warnings + more


def config_from_properties(
    props: Mapping[str, str],
    source: str = "<properties>",
    *,
    lines: Mapping[str, int] | None = None,
    path: str | Path | None = None,
) -> tuple[Config, list[str]]:
    """Validate parsed properties into a ``Config`` and a list of warnings.

    ``source`` names the properties in messages, ``lines`` maps a key to the
    line it was set on, and ``path`` is the file read (relative executables
    resolve from its folder, and it feeds the default workerId).
    """
    lines = lines or {}

    def where(key: str) -> str:
        return f"{source} line {lines[key]}" if key in lines else source

    warnings: list[str] = []
    written: dict[str, tuple[str, str]] = {}  # attr -> (key as written, raw value)
    for key, raw in props.items():
        setting = _BY_KEY.get(key) or _BY_ANY_CASE_KEY.get(key.lower())
        if setting is None:
            warning = _unknown_key_warning(key, where(key))
            if warning:
                warnings.append(warning)
            continue
        if setting.attr in written:
            earlier = written[setting.attr][0]
            warnings.append(
                f"{earlier!r} and {key!r} both set {setting.key} in {source}; {key!r} wins"
            )
        written[setting.attr] = (key, raw)

    values: dict[str, Any] = {}
    for setting in SETTINGS:
        key, raw = written.get(setting.attr, (setting.key, ""))
        text = raw.strip()
        if not text:
            if setting.required:
                state = "empty in" if setting.attr in written else "missing from"
                raise ConfigError(f"{setting.key} is {state} {where(key)}: {setting.required_hint}")
            values[setting.attr] = setting.default
            continue
        try:
            values[setting.attr] = setting.type.parse(text)
        except ValueError as exc:
            raise _bad_value(key, setting.type.shown(text), where(key), str(exc)) from None

    def key_where(attr: str) -> tuple[str, str]:
        key = written.get(attr, (SETTINGS_BY_ATTR[attr].key, ""))[0]
        return key, where(key)

    _resolve_stream(values, key_where, source, warnings)
    _resolve_position(values, written, key_where, warnings)
    _check_backoff(values, written, key_where)
    _check_dead_letter(values, key_where)
    if not values["table_name"]:
        app = values["application_name"]
        try:
            values["table_name"] = SETTINGS_BY_ATTR["table_name"].type.parse(app)
        except ValueError as exc:
            key, at = key_where("application_name")
            expected = f"{exc} (it names the lease table unless tableName is set)"
            raise _bad_value(key, app, at, expected) from None
    if not values["worker_id"]:
        origin = str(Path(path).resolve()) if path is not None else source
        values["worker_id"] = default_worker_id(values["application_name"], origin)
    for attr in ("dynamodb_region_name", "cloudwatch_region_name"):
        if values[attr] is None:
            values[attr] = values["region_name"]
    if path is not None:
        values["properties_path"] = str(Path(path).resolve())
    return Config(**values), warnings


def parse_stream_arn(arn: str) -> tuple[str, str, str]:
    """``(region, account_id, stream_name)`` of a Kinesis stream ARN; ``ValueError`` if not one."""
    match = _STREAM_ARN.fullmatch(arn)
    if match is None:
        raise ValueError(f"not a Kinesis stream ARN: {arn!r}")
    return match["region"], match["account"], match["name"]


def default_worker_id(application_name: str, origin: str) -> str:
    """``hostname:HASH``, stable for one host, properties file (``origin``) and application."""
    digest = hashlib.sha256(f"{origin}\0{application_name}".encode("utf-8", "surrogatepass"))
    return f"{socket.gethostname()}:{digest.hexdigest()[:8]}"


def resolve_executable(config: Config, cwd: str | Path | None = None) -> list[str]:
    """The child's argv, its program resolved to an absolute path.

    A program given with a path (``./app.py``, ``bin/app``) is looked up from
    the properties file's folder, then from ``cwd`` (default: the current
    directory); a bare name (``app.py``, ``python3``) also from those two
    folders, then on PATH. Raises ``ConfigError`` if it is not found or not
    executable. The program is never run through a shell.
    """
    try:
        argv = shlex.split(config.executable_name)
    except ValueError:
        argv = []
    if not argv:
        raise ConfigError(
            f"executableName {config.executable_name!r} is not a command line: "
            "write it like: python3 processor.py"
        )
    name = argv[0]
    program = os.path.expanduser(name)
    folders = [Path(cwd) if cwd is not None else Path.cwd()]
    if config.properties_path is not None:
        folders.insert(0, Path(config.properties_path).parent)
    candidates = [program] if os.path.isabs(program) else [str(f / program) for f in folders]
    if os.sep not in program:
        found = shutil.which(program)
        if found is not None:
            candidates.append(found)
    for candidate in candidates:
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return [os.path.abspath(candidate)] + argv[1:]
    for candidate in candidates:
        if os.path.isdir(candidate):
            raise ConfigError(
                f"executableName {name!r} is a folder ({os.path.abspath(candidate)}): "
                "name the program to run"
            )
        if os.path.isfile(candidate):
            full = os.path.abspath(candidate)
            raise ConfigError(
                f"executableName {name!r} is not executable: chmod +x {shlex.quote(full)} "
                f"(or start it with its interpreter, e.g. executableName = python3 {name})"
            )
    looked = ", ".join(dict.fromkeys(str(folder.absolute()) for folder in folders))
    if not os.path.isabs(program) and os.sep not in program:
        looked += " and PATH"
    raise ConfigError(
        f"executableName {name!r} not found: looked in {looked}; give an absolute path "
        "or one relative to the properties file's folder"
    )


def _bad_value(key: str, shown: str, where: str, expected: str) -> ConfigError:
    return ConfigError(f"{key} = {shown!r} in {where}: expected {expected}")


def _unknown_key_warning(key: str, where: str) -> str | None:
    if key in COMPATIBILITY_KEYS:
        return None
    if key in UNIMPLEMENTED_OFFICIAL_KEYS:
        return (
            f"key {key!r} in {where} is an official KCL setting that kcl-daemon does not "
            "implement; it is ignored"
        )
    lowered = key.lower()
    match = _KNOWN_BY_LOWER.get(lowered)
    if match is None:
        close = difflib.get_close_matches(lowered, _KNOWN_BY_LOWER, n=1, cutoff=0.75)
        match = _KNOWN_BY_LOWER[close[0]] if close else None
    if match is None:
        return f"unknown key {key!r} in {where}; it is ignored"
    return f"unknown key {key!r} in {where}; did you mean {match!r}?"


def _resolve_stream(
    values: dict[str, Any], key_where: _KeyWhere, source: str, warnings: list[str]
) -> None:
    arn = values["stream_arn"]
    if arn is None:
        if not values["stream_name"]:
            raise ConfigError(
                f"streamName is missing from {source}: set streamName (or streamArn) to the "
                "Kinesis stream to read"
            )
        return
    try:
        region, _account, name = parse_stream_arn(arn)
    except ValueError:
        key, where = key_where("stream_arn")
        raise _bad_value(
            key, arn, where, "arn:aws:kinesis:REGION:ACCOUNT_ID:stream/STREAM_NAME"
        ) from None
    if values["stream_name"] and values["stream_name"] != name:
        warnings.append(
            f"streamArn and streamName name different streams in {source}; "
            f"streamArn wins (stream {name!r})"
        )
    values["stream_name"] = name
    if values["region_name"] is None:
        values["region_name"] = region
    elif values["region_name"] != region:
        warnings.append(
            f"regionName {values['region_name']!r} differs from the region in streamArn "
            f"({region!r}) in {source}; the stream is read in {values['region_name']!r}"
        )


def _resolve_position(
    values: dict[str, Any], written: Mapping[str, object], key_where: _KeyWhere, warnings: list[str]
) -> None:
    position = values["initial_position_in_stream"]
    if values["initial_position_in_stream_extended"] is not None:
        if "initial_position_in_stream" in written and position != "AT_TIMESTAMP":
            key, where = key_where("initial_position_in_stream")
            warnings.append(
                f"{key} = {position!r} in {where} is ignored: "
                "initialPositionInStreamExtended is set, which selects AT_TIMESTAMP"
            )
        values["initial_position_in_stream"] = "AT_TIMESTAMP"
    elif position == "AT_TIMESTAMP":
        key, where = key_where("initial_position_in_stream")
        raise _bad_value(
            key,
            position,
            where,
            "TRIM_HORIZON or LATEST, or set initialPositionInStreamExtended to the start "
            "time in epoch seconds",
        )


def _check_dead_letter(values: dict[str, Any], key_where: _KeyWhere) -> None:
    if values["poison_record_policy"] != "DEAD_LETTER":
        return
    if values["dead_letter_table_name"] or values["dead_letter_stream_name"]:
        return
    key, where = key_where("poison_record_policy")
    raise ConfigError(
        f"{key} = DEAD_LETTER in {where} needs a destination: "
        "set deadLetterTableName or deadLetterStreamName"
    )


def _check_backoff(
    values: dict[str, Any], written: Mapping[str, object], key_where: _KeyWhere
) -> None:
    first = values["child_restart_backoff_millis"]
    longest = values["child_restart_max_backoff_millis"]
    if longest >= first:
        return
    if "child_restart_max_backoff_millis" in written:
        key, where = key_where("child_restart_max_backoff_millis")
        raise _bad_value(key, str(longest), where, f"at least childRestartBackoffMillis ({first})")
    key, where = key_where("child_restart_backoff_millis")
    raise _bad_value(key, str(first), where, f"at most childRestartMaxBackoffMillis ({longest})")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m daemon.config --markdown | --sample | --check FILE``."""
    parser = argparse.ArgumentParser(
        prog="python -m daemon.config", description="kcl-daemon settings reference and checker"
    )
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--markdown", action="store_true", help="print the settings table")
    group.add_argument("--sample", action="store_true", help="print a sample properties file")
    group.add_argument("--check", metavar="FILE", help="validate a properties file")
    group.add_argument(
        "--write-docs",
        action="store_true",
        help="regenerate README.md's settings table and deploy/app.properties.example",
    )
    args = parser.parse_args(argv)
    if args.write_docs:
        root = Path(__file__).resolve().parent.parent
        readme = root / "README.md"
        readme.write_text(
            readme_with_settings(readme.read_text(encoding="utf-8")), encoding="utf-8"
        )
        (root / "deploy" / "app.properties.example").write_text(
            render_sample_properties(), encoding="utf-8"
        )
        return 0
    if args.markdown:
        sys.stdout.write(render_settings_markdown())
        return 0
    if args.sample:
        sys.stdout.write(render_sample_properties())
        return 0
    try:
        config, warnings = load_config(args.check)
        child = resolve_executable(config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(
        f"ok: application {config.application_name!r}, stream {config.stream_name!r}, "
        f"worker {config.worker_id!r}, child {shlex.join(child)}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
