"""The run record on the server (schoolctl.server_record): its content (who, when, what, no secret),
its shell command run for real in a folder of its own (append, 0640, day files past the retention
pruned), the records started over ssh and waited for, and how the verbs write it: a deploy over its
own connection (cli/runner.py), the other verbs when they reached the server (cli/commands/log_cmd.py)."""

from __future__ import annotations

import json
import stat
import subprocess
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from schoolctl import server_record
from schoolctl.secrets import MASK, Secret
from tests.unit.conftest import run_cli

SECRET = Secret("record-s3cr3t-value-77")
DAY = date(2026, 12, 2)
# stands in for `ssh HOST`: the remote shell gets the command as one string, as sshd's shell does
LOCAL_SHELL = ["sh", "-c", 'eval "$0"']


@pytest.fixture
def logdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "var-log-schoolctl"
    monkeypatch.setattr(server_record, "DIR", str(folder))
    return folder


def run_command(record: dict, days: int, day: date = DAY) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-c", server_record.command(day, days)], input=server_record.line(record) + "\n",
                          capture_output=True, text=True, check=False)


def test_the_record_says_who_when_what_and_nothing_else(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUDO_USER", "ana")
    record = server_record.entry("users import", "demo", "changed", 12)
    assert set(record) == {"at", "run", "user", "sudo_user", "controller", "verb", "school", "result", "changes",
                           "schoolctl_version"}
    assert (record["verb"], record["school"], record["result"], record["changes"]) == ("users import", "demo",
                                                                                        "changed", 12)
    assert record["sudo_user"] == "ana" and record["user"] and record["schoolctl_version"]
    assert abs(datetime.fromisoformat(record["at"]) - datetime.now(UTC)) < timedelta(seconds=5)
    assert "\n" not in server_record.line(record)


def test_no_secret_reaches_the_record(logdir: Path) -> None:
    record = server_record.entry("deploy", "demo", f"failed: pw={SECRET.reveal()}\nsecond line", 1)
    assert SECRET.reveal() not in json.dumps(record) and MASK in record["result"]
    assert run_command(record, 14).returncode == 0
    text = (logdir / f"runs-{DAY.isoformat()}.jsonl").read_text()
    assert SECRET.reveal() not in text and len(text.splitlines()) == 1


def test_the_command_appends_one_line_per_run_to_the_days_file(logdir: Path) -> None:
    first = server_record.entry("audit", "demo", "pass", at=datetime(2026, 12, 2, 8, tzinfo=UTC))
    second = server_record.entry("deploy", "demo", "unchanged", at=datetime(2026, 12, 2, 9, tzinfo=UTC))
    for record in (first, second):
        done = run_command(record, 14)
        assert done.returncode == 0, done.stderr
    path = logdir / "runs-2026-12-02.jsonl"
    assert [json.loads(x) for x in path.read_text().splitlines()] == [first, second]
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert stat.S_IMODE(logdir.stat().st_mode) == 0o750


def test_day_files_older_than_the_retention_are_removed(logdir: Path) -> None:
    logdir.mkdir()
    for name in ("runs-2026-11-17.jsonl", "runs-2026-11-18.jsonl", "runs-2026-11-19.jsonl", "runs-2026-12-01.jsonl",
                 "runs-notes.jsonl", "other.log"):
        (logdir / name).write_text("{}\n")
    assert run_command(server_record.entry("audit", "demo", "pass"), 14).returncode == 0
    # 14 days: the files of 2026-11-19 .. 2026-12-02 stay (no line in them is older than 14 days)
    assert sorted(p.name for p in logdir.iterdir()) == ["other.log", "runs-2026-11-19.jsonl", "runs-2026-12-01.jsonl",
                                                        "runs-2026-12-02.jsonl", "runs-notes.jsonl"]
    assert run_command(server_record.entry("audit", "demo", "pass"), 1).returncode == 0
    assert sorted(p.name for p in logdir.iterdir()) == ["other.log", "runs-2026-12-02.jsonl", "runs-notes.jsonl"]


def test_a_record_that_cannot_be_written_fails_the_command_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) \
        -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setattr(server_record, "DIR", str(blocker / "schoolctl"))
    assert run_command(server_record.entry("audit", "demo", "pass"), 14).returncode != 0
    with pytest.raises(ValueError, match="at least 1"):
        server_record.command(DAY, 0)


def test_records_over_ssh_are_started_at_once_and_waited_for(logdir: Path) -> None:
    pending = server_record.Pending()
    for school in ("a", "b"):
        pending.start(LOCAL_SHELL, school, server_record.entry("audit", school, "pass"), 14)
    pending.start(["sh", "-c", "echo 'ssh: connect to host x port 22: Connection refused' >&2; exit 255"], "c",
                  server_record.entry("audit", "c", "error"), 14)
    notes = pending.wait()
    assert notes == [f"c: run record not written on the server ({logdir}): ssh: connect to host x port 22: "
                     "Connection refused"]
    today = datetime.now(UTC).date().isoformat()
    lines = (logdir / f"runs-{today}.jsonl").read_text().splitlines()
    assert sorted(json.loads(x)["school"] for x in lines) == ["a", "b"]


class _Output:
    stderr_lines = ("sh: 1: cannot create /var/log/schoolctl/runs.jsonl: Read-only file system",)


class _Host:
    name = "demo"

    def __init__(self, answer: object) -> None:
        self.answer, self.calls = answer, []

    def run_shell_command(self, command: object, **kwargs: object) -> object:
        self.calls.append((str(command), kwargs))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def test_a_record_over_the_deploys_connection_sends_the_line_on_stdin() -> None:
    record = server_record.entry("deploy", "demo", "unchanged")
    host = _Host((True, _Output()))
    assert server_record.write_pyinfra(host, record, 14) is None
    [(command, kwargs)] = host.calls
    assert "runs-" in command and json.loads(str(kwargs["_stdin"])) == record
    assert server_record.line(record) not in command  # the line travels on stdin, not the command line


@pytest.mark.parametrize("answer", [(False, _Output()), OSError("Socket is closed")])
def test_a_record_the_server_refuses_is_a_note(answer: object) -> None:
    note = server_record.write_pyinfra(_Host(answer), server_record.entry("deploy", "demo", "changed", 3), 14)
    assert note is not None and note.startswith("run record not written on the server")


def test_a_deploy_leaves_its_record_over_its_own_connection(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A deploy through pyinfra's @fake connector: the record is the last command before the
    connection closes, with the result and the number of changes, and no new connection."""
    from schoolctl.cli import runner
    from schoolctl.deploy.school import school_rounds
    from tests.unit.test_deploy_ops import _site

    site = _site("escola-pins", tmp_path)
    fake = {"fake_delay": 0, "fake_delay_jitter": 0}
    monkeypatch.setattr(runner, "build_site", lambda school, store, readonly: site)
    monkeypatch.setattr(runner, "_targets", lambda school, s: [("@fake/escola-pins", "fake", fake, school_rounds(s))])
    seen: list[tuple[str, str, int, int]] = []
    real = runner._record

    def spy(host, school, result, changes, days, notes):
        seen.append((school, result, changes, days))
        real(host, school, result, changes, days, notes)
        executed = host.connector.executed_commands
        assert "runs-" in executed[-1] and "IFS= read -r record" in executed[-1]

    monkeypatch.setattr(runner, "_record", spy)
    result = runner.run_school(site.school, store=None, plan=False, progress=lambda *a: None)
    assert result.status == "changed", result.error
    assert seen == [("escola-pins", "changed", len(result.changes), site.school.privacy.log_retention_days)]
    seen.clear()
    assert runner.run_school(site.school, store=None, plan=True, progress=lambda *a: None).status == "planned"
    assert seen == []  # a plan leaves no record


def test_other_verbs_record_on_the_servers_they_reached(schools: Path, logdir: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import schoolctl.audit.runner as audit_runner
    from schoolctl import connect
    from schoolctl.audit.runner import SchoolAudit
    from schoolctl.cli.commands import log_cmd

    monkeypatch.setattr(audit_runner, "audit_all", lambda schools, **kw: [SchoolAudit(s.id, s.name) for s in schools])
    monkeypatch.setattr(connect, "ssh_argv", lambda server: LOCAL_SHELL)
    from schoolctl.config.loader import load

    pins = load(schools, ["escola-pins"]).schools["escola-pins"]
    monkeypatch.setattr(connect, "_reached", {pins.server.address})
    run = run_cli("--schools-dir", "schools", "audit", "institut-mar", "escola-pins", "--format", "json")
    assert run.code in (0, 1), run.stderr
    log_cmd.server_records_done()
    assert "run record" not in run.stderr, run.stderr
    today = datetime.now(UTC).date().isoformat()
    [line] = (logdir / f"runs-{today}.jsonl").read_text().splitlines()
    record = json.loads(line)
    # institut-mar's server was never reached: no record is attempted for it
    assert (record["verb"], record["school"], record["result"]) == ("audit", "escola-pins", "n/a")
    assert not [n for n in run.stderr.splitlines() if "institut-mar" in n]
