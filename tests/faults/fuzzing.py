"""Shared knobs for the fuzz tests (tests/unit/test_fuzz_*.py).

``examples(n)`` is the number of inputs a fuzz test tries: ``n`` times the float in the
environment variable KCL_FUZZ_SCALE (default 1; e.g. ``KCL_FUZZ_SCALE=50`` for a long run by
hand). ``FUZZ`` is the hypothesis settings they share: no deadline (the machine is shared and
timing is not what they test) and no too-slow health check for the larger inputs.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings


def scale() -> float:
    return float(os.environ.get("KCL_FUZZ_SCALE", "1") or 1)


def examples(count: int) -> int:
    return max(1, round(count * scale()))


def fuzz_settings(count: int) -> settings:
    """Settings for one fuzz test trying ``examples(count)`` inputs."""
    return settings(
        max_examples=examples(count),
        deadline=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
        ],
    )
