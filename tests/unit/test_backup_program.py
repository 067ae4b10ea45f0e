"""The school server's backup program (templates/backup/schoolctl-backup.py) without a server: a damaged
archive is refused before the restore stops a unit or touches data (and the controller's restore and
drill say which archive), archive times are UTC whatever the server's time zone, and the program takes
the same maintenance lock as the apps' upgrades (one constant, passed in its config.json)."""

from __future__ import annotations

import datetime
import hashlib
import importlib.util
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any, ClassVar

import pytest

from schoolctl.config.loader import load
from schoolctl.config.model import Retention, Server
from schoolctl.errors import BackupError, SchoolctlError

from .test_backup import TEMPLATES, _site, fleet_dir

PROGRAM = TEMPLATES / "backup" / "schoolctl-backup.py"
ARCHIVE = "demo-2026-12-02T023001Z"


def _program() -> ModuleType:
    spec = importlib.util.spec_from_file_location("schoolctl_backup_program", PROGRAM)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def zone(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Set the process's time zone (POSIX TZ strings: no tzdata needed), as a school server's may be."""
    def set_zone(tz: str) -> None:
        monkeypatch.setenv("TZ", tz)
        time.tzset()
    yield set_zone
    monkeypatch.undo()
    time.tzset()


# --- a damaged archive ------------------------------------------------------------------------------

class FakeServer:
    """The program's borg, commands and systemctl, recorded; borg finds the data damaged (as `borg
    extract` does, in the dry run of the whole archive and in a real extract of the files), while the
    staging folder (manifest, dumps) reads back whole."""

    def __init__(self, tmp: Path, mod: ModuleType) -> None:
        self.mod, self.calls, self.stopped = mod, [], []
        self.data = tmp / "srv-data"
        (self.data / "filedir").mkdir(parents=True)
        (self.data / "filedir" / "work.bin").write_bytes(b"the pupil's work")
        self.ldap = tmp / "ldap"
        self.ldap.mkdir()
        (self.ldap / "data.mdb").write_bytes(b"the directory")
        self.cfg = {
            "school": "demo", "state": str(tmp / "state"), "databases": ["moodle"], "current": {},
            "ldap_base": "dc=demo", "ldap_db": str(self.ldap), "data_paths": [str(self.data)],
            "stop_units": ["moodle-cron.timer", "php8.4-fpm"], "start_units": ["php8.4-fpm", "moodle-cron.timer"],
            "restore_configs": {}, "config_owners": {}, "maintenance_lock": str(tmp / "maintenance.lock"),
            "repository": "ssh://borg@10.0.0.9:22/srv/schoolctl-backups/demo",
        }

    def borg(self, cfg: dict, *args: str, **kw: Any) -> str:
        self.calls.append(("borg", *args))
        staged = str(Path(cfg["state"]) / "staging").lstrip("/")
        if args[0] == "extract" and "--dry-run" in args:
            raise self.mod.Failure("borg extract failed (exit 1): Data integrity error: Segment entry checksum")
        if args[0] == "extract" and staged in args:
            folder = Path(kw["cwd"]) / staged
            folder.mkdir(parents=True)
            (folder / "moodle.dump").write_bytes(b"PGDMP")
            files = {"moodle.dump": {"sha256": hashlib.sha256(b"PGDMP").hexdigest(), "bytes": 5}}
            (folder / "manifest.json").write_text(json.dumps({"school": "demo", "versions": {}, "counts": {},
                                                              "files": files}))
            return ""
        if args[0] == "extract":
            raise self.mod.Failure("borg extract failed (exit 1): Data integrity error")
        return ""

    def run(self, argv: list[str], **kw: Any) -> str:
        self.calls.append(tuple(argv))
        return ""

    def systemctl(self, argv: list[str], **kw: Any) -> Any:
        self.stopped.append(tuple(argv))
        return SimpleNamespace(returncode=0)


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeServer:
    mod = _program()
    fake = FakeServer(tmp_path, mod)
    monkeypatch.setattr(mod, "borg", fake.borg)
    monkeypatch.setattr(mod, "run", fake.run)
    monkeypatch.setattr(mod, "psql", lambda db, sql: fake.calls.append(("psql", db, sql)) or "")
    monkeypatch.setattr(mod, "subprocess", SimpleNamespace(run=fake.systemctl, DEVNULL=subprocess.DEVNULL,
                                                           PIPE=subprocess.PIPE,
                                                           SubprocessError=subprocess.SubprocessError))
    monkeypatch.setattr(mod, "load_config", lambda: fake.cfg)
    return fake


def test_a_damaged_archive_is_refused_before_the_restore_stops_a_unit_or_touches_data(
        server: FakeServer, capsys: pytest.CaptureFixture[str]) -> None:
    mod = server.mod
    with pytest.raises(mod.Refused) as e:
        mod.cmd_restore(server.cfg, ARCHIVE)
    why = str(e.value)
    assert ARCHIVE in why and "damaged" in why and "nothing on this server was changed" in why
    assert server.stopped == []  # no unit stopped (nor started)
    assert not [c for c in server.calls if c[0] in ("psql", "runuser", "slapadd", "systemctl")], server.calls
    assert ("borg", "extract", "--dry-run", f"::{ARCHIVE}") in server.calls
    assert (server.data / "filedir" / "work.bin").read_bytes() == b"the pupil's work"
    assert (server.ldap / "data.mdb").read_bytes() == b"the directory"
    assert not (Path(server.cfg["state"]) / "replaced").exists()
    # the answer the controller reads says nothing was changed
    assert mod.main(["restore", ARCHIVE]) == 1
    answer = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert answer["status"] == "failed" and answer["changed"] is False and ARCHIVE in answer["error"]


def test_check_names_the_damaged_archive(server: FakeServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert server.mod.main(["check", ARCHIVE]) == 1
    answer = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert answer["status"] == "failed" and f"archive {ARCHIVE} is damaged" in answer["error"]


BORG_FAILED = """\
Data integrity error: Segment entry checksum mismatch [segment 5, offset 1841225]
Traceback (most recent call last):
  File "/usr/lib/python3/dist-packages/borg/archiver.py", line 5391, in main
    exit_code = archiver.run(args)
  File "/usr/lib/python3/dist-packages/borg/repository.py", line 1524, in get
    raise IntegrityError(f'Segment entry checksum mismatch [segment {segment}, offset {offset}]')
borg.helpers.errors.IntegrityError: Data integrity error: Segment entry checksum mismatch [segment 5, offset 1841225]

Platform: Linux b-2 6.18.44 #1 SMP PREEMPT_DYNAMIC @0 x86_64
Linux: Unknown Linux
Borg: 1.4.0  Python: CPython 3.13.5 msgpack: 1.0.3 fuse: None [pyfuse3,llfuse]
PID: 26437  CWD: /root
sys.argv: ['/usr/bin/borg', 'extract', '--dry-run', '::bk-2026-12-06T213317Z']
SSH_ORIGINAL_COMMAND: None
"""


def test_a_failure_says_borgs_reason_not_its_traceback_nor_platform(server: FakeServer) -> None:
    assert server.mod.reason(BORG_FAILED) == ["Data integrity error: Segment entry checksum mismatch [segment 5, "
                                              "offset 1841225]"]
    assert server.mod.reason("Remote: Repository /x does not exist.\n") == ["Repository /x does not exist."]
    assert server.mod.reason("pg_dump: error: connection failed\n") == ["pg_dump: error: connection failed"]


def _school(tmp_path: Path) -> Any:
    return load(fleet_dir(tmp_path)).schools["demo"]


class FakeSession:
    """connect.Session on the restore target: HOLDS_DATA answers `found`; every command recorded."""

    ran: ClassVar[list[str]] = []
    found = "data: database:moodle"

    def __init__(self, *args: Any) -> None:
        pass

    def __enter__(self) -> FakeSession:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def run(self, command: str, **kw: Any) -> tuple[bool, str, str]:
        FakeSession.ran.append(command)
        return True, (self.found + "\n") if command.startswith("if pgrep") else "", ""


@pytest.mark.parametrize(("found", "answer", "unmarked"), [
    ("data: database:moodle /var/lib/nextcloud/data", {"changed": False}, True),   # forced over live data
    ("data:", {"changed": False}, False),       # a fresh server: the marker lets the next try through
    ("data: database:moodle", {}, False),       # refused after data was touched: the marker must stay
])
def test_a_refused_restore_names_the_archive_and_leaves_no_marker_on_live_data(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, found: str, answer: dict, unmarked: bool) -> None:
    from schoolctl.cli.backup import restore as r
    from schoolctl.cli.backup.school import ProgramError

    def program(server: Server, label: str, *args: str, **kw: Any) -> dict[str, Any]:
        assert args == ("restore", ARCHIVE)
        error = f"archive {ARCHIVE} is damaged or unreadable: borg extract failed; refusing it"
        raise ProgramError(f"{label}: {error}", {"status": "failed", "error": error, **answer})

    FakeSession.ran, FakeSession.found = [], found
    monkeypatch.setattr(r, "Session", FakeSession)
    monkeypatch.setattr(r, "latest_archive", lambda school, store, wanted: ARCHIVE)
    monkeypatch.setattr(r, "_deploy", lambda school, store, what, restoring=False: None)
    monkeypatch.setattr(r, "program", program)
    with pytest.raises(BackupError) as e:
        r.restore(_school(tmp_path), Server(address="lab:b-2"), store=None, force=True)  # type: ignore[arg-type]
    assert ARCHIVE in e.value.message and e.value.exit_code == 1
    assert (f"rm -f {r.MARKER}" in FakeSession.ran) == unmarked, FakeSession.ran


def test_the_drill_of_a_damaged_archive_names_it_in_its_failure_and_record(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import schoolctl.lab
    from schoolctl.cli.backup import drill as d

    recorded: list[dict[str, Any]] = []

    def program(server: Server, label: str, *args: str, stdin: str | None = None, **kw: Any) -> dict[str, Any]:
        if args[0] == "check":
            raise BackupError(f"{label}: archive {args[1]} is damaged or unreadable: borg extract failed; refusing it")
        assert args[0] == "record-drill" and stdin
        recorded.append(json.loads(stdin))
        return {"status": "ok"}

    class FakeLab:
        def down(self, names: list[str]) -> None:
            pass

        def up(self, names: list[str], timeout: int = 0) -> None:
            raise AssertionError("no scratch host for an archive that fails its check")

        def host(self, name: str) -> Any:
            raise SchoolctlError("no such lab host")

    monkeypatch.setattr(d, "latest_archive", lambda school, store, wanted: ARCHIVE)
    monkeypatch.setattr(d, "program", program)
    monkeypatch.setattr(schoolctl.lab, "Lab", FakeLab)
    with pytest.raises(BackupError) as e:
        d.drill(_school(tmp_path), store=None)  # type: ignore[arg-type]
    assert f"the restore drill failed on archive {ARCHIVE}" in e.value.message
    [drill] = recorded
    assert drill["status"] == "failed" and drill["archive"] == ARCHIVE and ARCHIVE in drill["error"]


# --- time zones ---------------------------------------------------------------------------------------

def _borg_local(stamp: datetime.datetime) -> str:
    """An archive's start as borg 1.x prints it in JSON: the server's local time, without its offset."""
    return datetime.datetime(*time.localtime(stamp.timestamp())[:6]).isoformat(timespec="microseconds")


def _name(stamp: datetime.datetime) -> str:
    return f"demo-{stamp:%Y-%m-%dT%H%M%S}Z"


@pytest.mark.parametrize("tz", ["<+14>-14", "<-10>10", "CET-1CEST,M3.5.0,M10.5.0/3"])
def test_the_program_lists_archive_times_in_utc_whatever_the_servers_zone(
        server: FakeServer, zone: Any, tz: str) -> None:
    zone(tz)
    taken = datetime.datetime(2026, 7, 1, 2, 30, 1, tzinfo=datetime.UTC)
    manual = datetime.datetime(2026, 7, 3, 23, 15, 0, tzinfo=datetime.UTC)
    info = {"encryption": {"mode": "repokey-blake2"}, "archives": [
        {"name": _name(taken), "start": _borg_local(taken), "comment": "", "stats": {}},
        {"name": _name(taken) + ".checkpoint", "start": _borg_local(taken), "comment": "", "stats": {}},
        {"name": "demo-by-hand", "start": _borg_local(manual), "comment": "", "stats": {}},
    ]}
    server.mod.borg = lambda cfg, *args, **kw: json.dumps(info)
    listed = server.mod.cmd_list(server.cfg)
    times = {a["name"]: a["time"] for a in listed["archives"]}
    assert times == {_name(taken): "2026-07-01T02:30:01Z", _name(taken) + ".checkpoint": "2026-07-01T02:30:01Z",
                     "demo-by-hand": "2026-07-03T23:15:00Z"}


@pytest.mark.parametrize(("tz", "hours_old", "status"), [
    ("<+14>-14", 80, "fail"),   # too old for two days (+1 of slack, 72 h): its local time looked 66 h old
    ("<-10>10", 64, "pass"),    # within them: its local time looked 74 h old
])
def test_the_retention_control_ages_archives_by_their_utc_stamp(monkeypatch: pytest.MonkeyPatch, zone: Any,
                                                                tz: str, hours_old: int, status: str) -> None:
    from schoolctl.audit import backup as audit
    from schoolctl.audit.catalogue import Context, Expect, load_all, run_control

    zone(tz)  # the server's zone, where borg printed the times
    now = datetime.datetime(2026, 7, 10, 12, 0, 0, tzinfo=datetime.UTC)
    taken = now - datetime.timedelta(hours=hours_old)
    # as a program before this fix listed them: borg's local start time as "time"
    listing = {"status": "ok", "encryption": "repokey-blake2", "archives": [
        {"name": _name(taken), "time": _borg_local(taken)},
        {"name": _name(now - datetime.timedelta(hours=2)), "time": _borg_local(now - datetime.timedelta(hours=2))}]}
    monkeypatch.setattr(audit, "_state", lambda ctx: {"list": listing})
    monkeypatch.setattr(audit, "_now", lambda: now)
    school = SimpleNamespace(id="demo", backup=SimpleNamespace(retention=Retention(daily=2, weekly=0, monthly=0)))
    found = run_control(load_all()["BACKUP-RETENTION"], Context(None, school, Expect()))
    assert found.status == status, found.observed
    assert f"the oldest {hours_old / 24:.1f} days old (UTC)" in found.observed


def test_an_archive_time_without_its_zone_is_never_read_as_utc() -> None:
    from schoolctl.audit.backup import archive_time

    utc = datetime.UTC
    assert archive_time({"name": "demo-2026-07-01T023001Z", "time": "2026-07-01T16:30:01"}) == \
        datetime.datetime(2026, 7, 1, 2, 30, 1, tzinfo=utc)
    assert archive_time({"name": "demo-2026-07-01T023001Z.checkpoint.1"}) == datetime.datetime(2026, 7, 1, 2, 30, 1,
                                                                                                  tzinfo=utc)
    assert archive_time({"name": "by-hand", "time": "2026-07-01T02:30:01Z"}) == datetime.datetime(2026, 7, 1, 2, 30, 1,
                                                                                                   tzinfo=utc)
    assert archive_time({"name": "by-hand", "time": "2026-07-01T04:30:01+02:00"}) == \
        datetime.datetime(2026, 7, 1, 2, 30, 1, tzinfo=utc)
    assert archive_time({"name": "by-hand", "time": "2026-07-01T04:30:01.000000"}) is None


# --- the maintenance lock -----------------------------------------------------------------------------

def test_the_program_takes_the_upgrades_maintenance_lock_from_its_config(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from schoolctl.deploy import backup, upgrade

    assert backup.config(_site(tmp_path / "a"))["maintenance_lock"] == upgrade.MAINTENANCE_LOCK
    assert upgrade.MAINTENANCE_LOCK not in PROGRAM.read_text()  # no second copy of the path
    # the one constant moved: the config and so the program follow, and an upgrade's lock holds the backup off
    lock = str(tmp_path / "maintenance.lock")
    monkeypatch.setattr(upgrade, "MAINTENANCE_LOCK", lock)
    cfg = backup.config(_site(tmp_path / "b"))
    assert cfg["maintenance_lock"] == lock
    mod = _program()
    monkeypatch.setattr(mod, "MAINTENANCE_WAIT", 0)
    monkeypatch.setattr(mod.time, "sleep", lambda s: None)
    shell = upgrade.maintenance_lock(upgrade.App(name="nextcloud", title="Nextcloud")) + "\necho held\nsleep 60\n"
    holder = subprocess.Popen(["bash", "-c", shell], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout and holder.stdout.readline().strip() == "held"
        with pytest.raises(mod.Failure, match="an upgrade held the maintenance lock"):
            mod._maintenance_lock(cfg)
    finally:
        holder.kill()
        holder.wait()
    mod._maintenance_lock(cfg).close()  # free again once the upgrade is gone


# --- the drill's person ---------------------------------------------------------------------------

def test_the_drill_logs_in_as_an_active_pupil_with_a_throwaway_password(monkeypatch: pytest.MonkeyPatch,
                                                                        tmp_path: Path) -> None:
    """The drill picks an active person of the restored directory (a pupil first, never a suspended
    one), gives them a fresh {SSHA} password on the scratch host through LDIF on stdin (never on a
    command line), clears the must-change flag, and hands the password to the logins only."""
    import base64
    import hashlib

    import schoolctl.connect
    from schoolctl.cli.backup import drill as d

    from .conftest import FakeSession as Canned

    school = _school(tmp_path)
    base = school.ldap_base

    def person(uid: str, role: str, ou: str = "people") -> str:
        return (f"dn: uid={uid},ou={ou},{base}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}\nsn: {uid}\n"
                f"employeeNumber: p-{uid}\nemployeeType: {role}\n"
                + ("description: suspended 2026-07-01\n" if ou == "suspended" else "") + "pwdReset: TRUE\n\n")

    ldif = (person("anna.teacher", "teacher") + person("bet.gone", "student", "suspended")
            + person("pau.vidal", "student"))
    Canned.answers = [(True, ldif, ""), (True, "modifying entry\n", "")]
    Canned.commands, Canned.stdins = [], []
    monkeypatch.setattr(schoolctl.connect, "Session", Canned)
    uid, password = d.person(school, school.server)
    assert uid == "pau.vidal" and len(password) >= 20
    (_, modify), (_, change) = Canned.commands, Canned.stdins
    assert modify.startswith("ldapmodify") and password not in modify and change is not None
    assert change.startswith(f"dn: uid=pau.vidal,ou=people,{base}\nchangetype: modify\nreplace: userPassword\n")
    assert "replace: pwdReset\n-\n" in change and password not in change
    value = next(line.split(": ", 1)[1] for line in change.splitlines() if line.startswith("userPassword: "))
    raw = base64.b64decode(value.removeprefix("{SSHA}"))
    assert value.startswith("{SSHA}") and hashlib.sha1(password.encode() + raw[20:]).digest() == raw[:20]
