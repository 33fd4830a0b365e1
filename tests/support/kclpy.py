"""Where the official amazon_kclpy lives for the tests, and how a child process gets to import it.

bin/_env.sh unpacks the sdist from PyPI (never installs it: its setup.py downloads jars) into
vendor/kclpy-<version>/ (the amazon_kclpy package alone, for PYTHONPATH) and
vendor/amazon_kclpy-<version>/ (the whole sdist: samples/, test/), and exports
KCL_TEST_KCLPY_PATH and KCL_TEST_KCLPY_SDIST. Run bin/fetch-kclpy to get it without the tests.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

KCLPY_VERSION = "3.2.0"
_VENDOR = Path(__file__).resolve().parents[2] / "vendor"


def kclpy_path() -> Path | None:
    """The folder that contains the `amazon_kclpy` package, or None if it was not fetched."""
    configured = os.environ.get("KCL_TEST_KCLPY_PATH")
    path = Path(configured) if configured else _VENDOR / f"kclpy-{KCLPY_VERSION}"
    return path if (path / "amazon_kclpy" / "kcl.py").is_file() else None


def kclpy_sdist() -> Path | None:
    """The unpacked sdist (with samples/sample_kclpy_app.py), or None if it was not fetched."""
    configured = os.environ.get("KCL_TEST_KCLPY_SDIST")
    path = Path(configured) if configured else _VENDOR / f"amazon_kclpy-{KCLPY_VERSION}"
    return path if (path / "amazon_kclpy" / "kcl.py").is_file() else None


def with_kclpy_on_path(env: Mapping[str, str], path: Path) -> dict[str, str]:
    """A copy of `env` whose PYTHONPATH starts with `path`."""
    result = dict(env)
    current = result.get("PYTHONPATH")
    result["PYTHONPATH"] = os.pathsep.join([str(path), current] if current else [str(path)])
    return result
