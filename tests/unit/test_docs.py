"""Generated documentation stays in step with the settings declarations."""

from pathlib import Path

from daemon.settings_doc import readme_with_settings

ROOT = Path(__file__).resolve().parents[2]


def test_readme_settings_table_is_the_generated_one():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert readme == readme_with_settings(readme), (
        "README.md's settings table is stale: run python -m daemon.config --write-docs"
    )


def test_readme_names_both_commands():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "bin/test" in readme and "bin/demo" in readme
    for command in ("bin/test", "bin/demo"):
        assert (ROOT / command).stat().st_mode & 0o111, f"{command} must be executable"
