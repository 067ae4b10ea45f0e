"""The run record on the server itself, for real on lab host t-rec-1 (layers base, firewall and
identity): every deploy, users import and audit leaves one JSON line in
/var/log/schoolctl/runs-<UTC day>.jsonl (root:adm 0640 in a 0750 folder) saying when, who, the
verb, the result, the number of changes and schoolctl's version, and no secret of the school; a
no-op deploy still reports `unchanged`; day files older than the school's log_retention_days go at
the next run; a record that cannot be written is a note of the deploy, never its failure.
Needs root and the lab. SCHOOLCTL_KEEP_LAB=1 keeps the host.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from .support import SchoolEnv, booted, skip_reason

pytestmark = pytest.mark.lab

HOST = "t-rec-1"
SID = "t-rec"
LAYERS = "base,firewall,identity"
DIR = "/var/log/schoolctl"
RETENTION = 3


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SchoolEnv]:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    with booted(HOST, fresh=True) as lab:
        yield SchoolEnv(lab, tmp_path_factory.mktemp("rec"), HOST, SID, LAYERS, services={},
                        privacy={"log_retention_days": RETENTION})


def today() -> str:
    return datetime.datetime.now(datetime.UTC).date().isoformat()


def records(env: SchoolEnv) -> list[dict]:
    text = env.ok(f"cat {DIR}/runs-{today()}.jsonl")
    return [json.loads(line) for line in text.splitlines()]


def test_deploys_users_import_and_audit_leave_their_lines(env: SchoolEnv) -> None:
    first = env.deploy("first deploy")
    assert first["status"] == "changed", first
    [line] = records(env)
    assert (line["verb"], line["school"], line["result"], line["changes"]) == ("deploy", SID, "changed",
                                                                               len(first["changes"]))
    assert line["user"] == "root" and line["schoolctl_version"] and "sudo_user" in line and line["controller"]
    assert abs(datetime.datetime.fromisoformat(line["at"]) - datetime.datetime.now(datetime.UTC)) \
        < datetime.timedelta(minutes=30)

    again = env.deploy("no-op deploy")
    assert again["status"] == "unchanged" and again["changes"] == [], again  # the record is no change
    assert [(r["verb"], r["result"], r["changes"]) for r in records(env)][-1] == ("deploy", "unchanged", 0)

    env.import_roster([["Aina", "Puig", "student", "1A", ""], ["Pau", "Vila", "teacher", "1A", ""]])
    audit = env.cli("audit", SID, "--format", "json")
    assert audit.returncode in (0, 1), audit.stderr
    assert "run record" not in audit.stderr, audit.stderr
    found = records(env)
    assert [r["verb"] for r in found] == ["deploy", "deploy", "users import", "audit"]
    assert found[2]["changes"] == 2 and found[3]["result"] == json.loads(audit.stdout)["schools"][0]["status"]
    assert len({r["run"] for r in found}) == 4  # one line per run

    text = env.ok(f"cat {DIR}/runs-{today()}.jsonl")
    for person in env.people:  # no person and no password
        assert person["password"] not in text and person["uid"] not in text and person["family_name"] not in text
    secrets = env.ok("cat /etc/schoolctl/secrets/* 2>/dev/null || true").split()
    assert secrets and not [s for s in secrets if len(s) >= 12 and s in text]
    assert env.ok(f"stat -c '%a %U %G' {DIR} {DIR}/runs-{today()}.jsonl").split("\n")[:2] == ["750 root adm",
                                                                                              "640 root adm"]


def test_day_files_past_the_retention_go_at_the_next_run(env: SchoolEnv) -> None:
    day = datetime.datetime.now(datetime.UTC).date()
    old, kept = (f"{DIR}/runs-{(day - datetime.timedelta(days=n)).isoformat()}.jsonl" for n in (RETENTION, 2))
    env.ok(f"printf '{{}}\\n' > {old}; printf '{{}}\\n' > {kept}")
    assert env.deploy("no-op deploy, pruning")["status"] == "unchanged"
    left = env.ok(f"ls {DIR}").split()
    assert Path(old).name not in left and Path(kept).name in left and f"runs-{today()}.jsonl" in left


def test_a_record_that_cannot_be_written_is_a_note(env: SchoolEnv) -> None:
    env.ok(f"mv {DIR} {DIR}.saved && touch {DIR}")  # a file where the folder should be
    try:
        result = env.deploy("no-op deploy, no record")
        assert result["status"] == "unchanged", result
        assert any("run record not written on the server" in n for n in result["notes"]), result
    finally:
        env.ok(f"rm -f {DIR} && mv {DIR}.saved {DIR}")
