"""The crash-injection plan: its format, and that it stays off unless asked (the kill itself is
exercised by the integration tests, where it SIGKILLs real children)."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.errors import ConfigError
from processors.tweets.faults import (
    FAULT_DIR_VARIABLE,
    FAULTS_VARIABLE,
    FaultPlan,
    parse_faults,
)


def test_a_plan_names_stages_and_batches() -> None:
    assert parse_faults("claims:2, counts:3,") == {("claims", 2), ("counts", 3)}
    assert parse_faults("") == frozenset()


@pytest.mark.parametrize("text", ["claims", "claims:0", "claims:x", "written:1", ":1"])
def test_a_malformed_plan_is_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_faults(text)


def test_faults_need_a_marker_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        FaultPlan.from_environment({FAULTS_VARIABLE: "claims:1"})
    plan = FaultPlan.from_environment(
        {FAULTS_VARIABLE: "claims:1", FAULT_DIR_VARIABLE: str(tmp_path)}
    )
    assert plan.faults == {("claims", 1)} and plan.marker_dir == tmp_path


def test_no_plan_never_fires(tmp_path: Path) -> None:
    plan = FaultPlan.from_environment({})
    for stage in ("prepared", "claims", "counts", "progress"):
        plan.at(stage, 1)  # returns: this process is still alive


def test_a_fault_already_fired_for_the_shard_does_not_fire_again(tmp_path: Path) -> None:
    plan = FaultPlan(frozenset({("counts", 2)}), tmp_path)
    plan.shard_id = "shardId-000000000001"
    (tmp_path / "shardId-000000000001.counts.2").touch()
    plan.at("counts", 2)  # the marker exists: no kill
    plan.at("counts", 1)  # not planned: no kill
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shardId-000000000001.counts.2"]
