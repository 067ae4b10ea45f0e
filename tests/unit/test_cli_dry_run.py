"""`deploy --dry-run` is `plan`: the same code path, output and exit code, and it asks nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.unit.conftest import Run, run_cli


@pytest.fixture
def runs(schools: Path, monkeypatch: pytest.MonkeyPatch) -> list[tuple[list[str], bool]]:
    """cli/runner.run replaced: each call's schools and `plan` flag; escola-pins has nothing to
    change, institut-mar fails (a plan's exit 1)."""
    import schoolctl.cli.runner as runner
    from schoolctl.cli.runner import Result

    calls: list[tuple[list[str], bool]] = []

    def fake_run(schools, plan, progress=None, store=None, parallel=20):
        calls.append(([s.id for s in schools], plan))
        return [Result(s.id, "planned") if s.id == "escola-pins" else
                Result(s.id, "failed", error="cannot connect to 10.20.42.20 port 22 over SSH: connection refused")
                for s in schools]

    monkeypatch.setattr(runner, "run", fake_run)
    return calls


def _both(*args: str) -> tuple[Run, Run]:
    common = ["escola-pins", "institut-mar", *args]
    return run_cli("--schools-dir", "schools", "plan", *common), run_cli("--schools-dir", "schools", "deploy",
                                                                        "--dry-run", *common)


@pytest.mark.parametrize("args", [[], ["--json"], ["--limit", "escola-*"]])
def test_deploy_dry_run_is_plan(runs: list[tuple[list[str], bool]], tmp_path: Path, args: list[str]) -> None:
    plan, dry = _both(*args)
    assert plan.code == dry.code == (1 if "--limit" not in args else 0), plan.stderr + dry.stderr
    assert dry.stdout == plan.stdout and dry.stderr == plan.stderr
    if "--json" in args:
        assert json.loads(plan.stdout)["schema"] == "schoolctl-plan/1"
    else:
        assert plan.stdout.startswith("escola-pins: no changes\n")
    assert len(runs) == 2 and runs[0] == runs[1] and runs[0][1] is True  # plan=True: nothing applied
    assert not (tmp_path / "journal.jsonl").exists()  # a plan is no deploy: no journal line


def test_deploy_dry_run_asks_nothing_but_deploy_does(runs: list[tuple[list[str], bool]]) -> None:
    """No terminal on stdin: `deploy` refuses without --yes (exit 2, nothing run); `--dry-run` runs."""
    refused = run_cli("--schools-dir", "schools", "deploy", "escola-pins")
    assert refused.code == 2 and runs == []
    dry = run_cli("--schools-dir", "schools", "deploy", "--dry-run", "escola-pins")
    assert dry.code == 0 and runs == [(["escola-pins"], True)], dry.stderr
    assert dry.stdout.startswith("escola-pins: no changes")
