"""The promises the README makes to a newcomer: its first commands exist and CI runs the
same test command."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).parent.parent


def readme_commands() -> list[str]:
    lines = (ROOT / "README.md").read_text().splitlines()
    start = lines.index("```sh")
    end = lines.index("```", start + 1)
    return [line for line in lines[start + 1:end] if line.strip()]


def test_readme_opens_with_run_and_test_commands() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    assert lines.index("```sh") < 8, "the two commands come first"
    run, test = readme_commands()[:2]
    assert "medbft run scenarios/baseline.yaml" in run
    assert (ROOT / "scenarios" / "baseline.yaml").exists()
    assert "pytest" in test


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    test = readme_commands()[1]
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test in ci
