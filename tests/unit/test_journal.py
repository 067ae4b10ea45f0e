"""The run journal (schoolctl.journal) and `schoolctl log`: 0600, locked appends, `--since`, no secret."""

from __future__ import annotations

import fcntl
import json
import os
import stat
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from schoolctl import journal
from schoolctl.secrets import MASK, Secret
from tests.unit.conftest import run_cli

SECRET = Secret("journal-s3cr3t-value-42")


def test_record_writes_one_private_line_with_who_when_what(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUDO_USER", "ana")
    entry = journal.record("deploy", "demo", "changed", changes=["file: /etc/a", "service: nginx"],
                           detail={"layers": "base"}, seconds=1.234)
    path = tmp_path / "journal.jsonl"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    [line] = path.read_text().splitlines()
    assert json.loads(line) == entry
    assert (entry["verb"], entry["school"], entry["result"], entry["changes"]) == ("deploy", "demo", "changed", 2)
    assert entry["changed"] == ["file: /etc/a", "service: nginx"] and entry["sudo_user"] == "ana"
    assert entry["user"] and entry["schoolctl_version"] and entry["seconds"] == 1.23
    assert abs(datetime.fromisoformat(entry["at"]) - datetime.now(UTC)) < timedelta(seconds=5)


def test_an_existing_journal_with_wider_mode_becomes_0600(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    path.write_text("")
    path.chmod(0o644)
    journal.record("audit", "demo", "pass")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_the_default_place_and_its_private_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SCHOOLCTL_JOURNAL")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    journal.record("audit", "demo", "pass")
    path = tmp_path / "home" / ".local/state/schoolctl/journal.jsonl"
    assert journal.path() == path and path.exists()
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_no_secret_reaches_the_journal(tmp_path: Path) -> None:
    journal.record("deploy", "demo", f"failed: {SECRET.reveal()}", changes=[f"file: {SECRET.reveal()}"],
                   detail={"error": f"pw={SECRET.reveal()}"})
    text = (tmp_path / "journal.jsonl").read_text()
    assert SECRET.reveal() not in text and MASK in text
    run = run_cli("log", "--json")
    assert SECRET.reveal() not in run.stdout


def test_appends_wait_for_the_lock(tmp_path: Path) -> None:
    """A writer holding the lock (another schoolctl) keeps the append waiting; nothing interleaves."""
    journal.record("audit", "a", "pass")
    path = tmp_path / "journal.jsonl"
    done = threading.Event()
    with path.open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        t = threading.Thread(target=lambda: (journal.record("audit", "b", "pass"), done.set()))
        t.start()
        time.sleep(0.3)
        assert not done.is_set()  # blocked by the lock
        held.write(json.dumps({"at": datetime.now(UTC).isoformat(), "school": "held", "verb": "x"}) + "\n")
        held.flush()
        fcntl.flock(held, fcntl.LOCK_UN)
    t.join(5)
    assert done.is_set()
    assert [e["school"] for e in journal.read()] == ["a", "held", "b"]


def test_many_writers_at_once_leave_whole_lines(tmp_path: Path) -> None:
    threads = [threading.Thread(target=lambda n=n: [journal.record("deploy", f"s{n}", "unchanged",
                                                                   changes=["x" * 3000]) for _ in range(20)])
               for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = (tmp_path / "journal.jsonl").read_text().splitlines()
    assert len(lines) == 80 and all(json.loads(line)["changed"] == ["x" * 3000] for line in lines)


def test_since_parsing() -> None:
    now = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    assert journal.parse_since("7d", now) == now - timedelta(days=7)
    assert journal.parse_since("12h", now) == now - timedelta(hours=12)
    assert journal.parse_since("30m", now) == now - timedelta(minutes=30)
    assert journal.parse_since("2026-11-01", now) == datetime(2026, 11, 1, tzinfo=UTC)
    for bad in ("yesterday", "7", "-3d", "2026-13-01", "7w", ""):
        with pytest.raises(ValueError, match="neither a date"):
            journal.parse_since(bad, now)


def _write(tmp_path: Path, *entries: tuple[str, str, str]) -> None:
    with (tmp_path / "journal.jsonl").open("a") as f:
        for at, school, verb in entries:
            f.write(json.dumps({"at": at, "school": school, "verb": verb, "result": "changed", "user": "jordi",
                                "sudo_user": None, "changes": 1, "changed": ["file: /etc/x"],
                                "schoolctl_version": "1.0"}) + "\n")
        f.write("not json\n")


def test_read_filters_by_school_and_since(tmp_path: Path) -> None:
    _write(tmp_path, ("2026-10-30T10:00:00+00:00", "demo", "deploy"), ("2026-11-02T10:00:00+00:00", "demo", "audit"),
           ("2026-11-03T10:00:00+00:00", "escola-pins", "deploy"))
    since = datetime(2026, 11, 1, tzinfo=UTC)
    assert [e["verb"] for e in journal.read("demo")] == ["deploy", "audit"]
    assert [e["school"] for e in journal.read(since=since)] == ["demo", "escola-pins"]
    assert [e["verb"] for e in journal.read("demo", since)] == ["audit"]


def test_the_log_verb(tmp_path: Path) -> None:
    _write(tmp_path, ("2026-10-30T10:00:00+00:00", "demo", "deploy"), ("2026-11-02T10:00:00+00:00", "escola-pins",
                                                                        "audit"))
    run = run_cli("log")
    assert run.code == 0, run.stderr
    assert "demo" in run.stdout and "escola-pins" in run.stdout and "jordi" in run.stdout
    run = run_cli("log", "demo", "--json")
    data = json.loads(run.stdout)
    assert data["schema"] == "schoolctl-log/1" and [e["school"] for e in data["entries"]] == ["demo"]
    data = json.loads(run_cli("log", "--since", "2026-11-01", "--json").stdout)
    assert [e["school"] for e in data["entries"]] == ["escola-pins"]
    assert "no runs recorded for nowhere" in run_cli("log", "nowhere").stdout
    bad = run_cli("log", "--since", "last week")
    assert bad.code == 2 and bad.stdout == ""
    assert bad.lines == ["error: --since: 'last week' is neither a date (2026-11-01) nor an age (7d, 12h, 30m)"]


def test_the_log_verb_takes_limit(schools: Path, tmp_path: Path) -> None:
    """`--limit` chooses from the fleet as every verb does (a school gone from it is not chosen) and
    narrows an ID."""
    _write(tmp_path, ("2026-10-30T10:00:00+00:00", "demo", "deploy"), ("2026-11-02T10:00:00+00:00", "escola-pins",
                                                                        "audit"),
           ("2026-11-03T10:00:00+00:00", "institut-mar", "deploy"), ("2026-11-04T10:00:00+00:00", "gone", "deploy"))

    def shown(*args: str) -> list[str]:
        run = run_cli("--schools-dir", "schools", "log", "--json", *args)
        assert run.code == 0, run.stderr
        return [e["school"] for e in json.loads(run.stdout)["entries"]]

    assert shown() == ["demo", "escola-pins", "institut-mar", "gone"]
    assert shown("--limit", "district=sant-marti") == ["institut-mar"]
    assert shown("-l", "escola-*,demo") == ["demo", "escola-pins"]
    assert shown("-l", "!demo") == ["escola-pins", "institut-mar"]
    assert shown("-l", "service=jitsi", "--since", "2026-11-01") == ["institut-mar"]
    assert shown("institut-mar", "-l", "district=sant-marti") == ["institut-mar"]
    narrowed = run_cli("--schools-dir", "schools", "log", "demo", "-l", "district=sant-marti")
    assert narrowed.code == 2
    assert narrowed.lines[0] == "error: --limit district=sant-marti matches no school of those named"
    unknown = run_cli("--schools-dir", "schools", "log", "-l", "nowhere")  # as every verb: the fleet says so
    assert unknown.code == 2 and "no school 'nowhere' in schools/" in unknown.stderr and unknown.stdout == ""
    (tmp_path / "journal.jsonl").unlink()
    assert run_cli("--schools-dir", "schools", "log", "-l", "demo").stdout.startswith(
        "no runs recorded for --limit demo in ")


def test_an_unwritable_journal_warns_and_the_verb_goes_on(schools: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import schoolctl.audit.runner as runner
    from schoolctl.audit.runner import SchoolAudit

    monkeypatch.setattr(runner, "audit_all", lambda schools, **kw: [SchoolAudit(s.id, s.name) for s in schools])
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("SCHOOLCTL_JOURNAL", str(blocker / "journal.jsonl"))
    run = run_cli("--schools-dir", "schools", "audit", "escola-pins")
    assert run.code == 0, run.stderr
    assert any(line.startswith("warning: the run journal ") for line in run.lines)


def test_an_audit_through_the_cli_is_journaled(schools: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import schoolctl.audit.runner as runner
    from schoolctl.audit.runner import SchoolAudit

    monkeypatch.setattr(runner, "audit_all", lambda schools, **kw: [SchoolAudit(s.id, s.name, error="down")
                                                                    for s in schools])
    monkeypatch.setattr("schoolctl.cli.context.lab_problems", lambda schools: [])  # no lab host: the audit is faked
    assert run_cli("--schools-dir", "schools", "audit", "demo", "escola-pins", "--format", "json").code == 1
    entries = journal.read()
    assert [(e["verb"], e["school"], e["result"]) for e in entries] == [("audit", "demo", "error"),
                                                                        ("audit", "escola-pins", "error")]
    assert entries[0]["run"] == entries[1]["run"] and entries[0]["detail"]["format"] == "json"
    assert os.environ["SCHOOLCTL_JOURNAL"] == str(tmp_path / "journal.jsonl")
