"""Backups without hosts: the model (a school keeps fewer archives, never more; the data retention
cuts the span), the backup layer's files and keys, the backup host's commands, the server program's
syntax, the CLI's refusals, and the backup controls' verdicts on sample evidence."""

from __future__ import annotations

import json
import py_compile
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from schoolctl.config.loader import load
from schoolctl.config.model import Backup, Retention
from schoolctl.deploy import backup
from schoolctl.deploy.site import Site
from schoolctl.deploy.state import LAST
from schoolctl.errors import ConfigError
from schoolctl.secrets import Secret

SCHOOLS = Path(__file__).resolve().parents[2] / "schools"
TEMPLATES = Path(__file__).resolve().parents[2] / "templates"


def fleet_dir(tmp_path: Path, school_backup: dict[str, Any] | None = None, privacy: dict[str, Any] | None = None,
              fleet_backup: Any = "keep") -> Path:
    d = tmp_path / "schools"
    d.mkdir(parents=True)
    fleet = yaml.safe_load((SCHOOLS / "fleet.yaml").read_text())
    if fleet_backup != "keep":
        fleet["backup"] = fleet_backup
    (d / "fleet.yaml").write_text(yaml.safe_dump(fleet))
    school = yaml.safe_load((SCHOOLS / "demo.yaml").read_text())
    if school_backup is not None:
        school["backup"] = school_backup
    if privacy:
        school["privacy"] = {**school.get("privacy", {}), **privacy}
    (d / "demo.yaml").write_text(yaml.safe_dump(school, allow_unicode=True))
    return d


def test_the_shipped_fleet_backs_up_to_the_demos_lab_backup_host() -> None:
    b = load(SCHOOLS).schools["demo"].backup
    assert b is not None and b.host.address == "lab:backup" and b.retention.span_days <= 365


def test_a_school_may_keep_fewer_archives_never_more(tmp_path: Path) -> None:
    fewer = load(fleet_dir(tmp_path, {"retention": {"daily": 3, "monthly": 2}})).schools["demo"].backup
    assert (fewer.retention.daily, fewer.retention.weekly, fewer.retention.monthly) == (3, 4, 2)
    with pytest.raises(ConfigError) as e:
        load(fleet_dir(tmp_path / "more", {"retention": {"weekly": 9}}))
    text = str(e.value)
    assert "demo.yaml:" in text and "backup.retention.weekly: 9 keeps more archives than the fleet's 4" in text


def test_the_reach_of_the_retention_is_its_rules_added_up() -> None:
    # borg prune: a week (month) whose newest archive an earlier rule kept is not counted, so the weekly
    # archives reach beyond the daily ones and the monthly beyond both
    assert Retention(daily=7, weekly=4, monthly=6).span_days == 7 + 28 + 186  # max() said 186
    assert Retention(daily=7, weekly=0, monthly=0).span_days == 7
    assert Retention(daily=1, weekly=2, monthly=0).span_days == 15


@pytest.mark.parametrize(("days", "kept"), [
    (365, (7, 4, 6)),   # 221 days: fits
    (200, (7, 4, 5)),   # 221 > 200 (max() said 186: fits): one month less, 190
    (60, (7, 4, 0)),    # 7 + 28 + 31 = 66 > 60 (max() said 31): the months go first, 35
    (30, (7, 3, 0)),    # then the weeks: 7 + 21 = 28
])
def test_the_data_retention_cuts_the_archives_kept(tmp_path: Path, days: int, kept: tuple[int, int, int]) -> None:
    b = load(fleet_dir(tmp_path, privacy={"data_retention_days": days})).schools["demo"].backup
    assert (b.retention.daily, b.retention.weekly, b.retention.monthly) == kept
    assert b.retention.span_days <= days


def test_the_daily_count_is_cut_last(tmp_path: Path) -> None:
    fleet = yaml.safe_load((SCHOOLS / "fleet.yaml").read_text())["backup"]
    fleet["retention"] = {"daily": 45, "weekly": 4, "monthly": 6}
    b = load(fleet_dir(tmp_path, privacy={"data_retention_days": 30}, fleet_backup=fleet)).schools["demo"].backup
    assert (b.retention.daily, b.retention.weekly, b.retention.monthly) == (30, 0, 0)


def test_every_data_retention_bounds_the_archives_reach(tmp_path: Path) -> None:
    from schoolctl.config.loader import _backup

    school = load(fleet_dir(tmp_path)).schools["demo"]
    fleet = school.fleet.model_copy(update={"backup": school.fleet.backup.model_copy(
        update={"retention": Retention(daily=90, weekly=104, monthly=60)})})
    for days in range(30, 3651, 7):
        own = SimpleNamespace(backup=SimpleNamespace(retention=SimpleNamespace(model_dump=lambda: {})),
                              privacy=SimpleNamespace(data_retention_days=days))
        r = _backup(own, fleet).retention  # type: ignore[arg-type]
        assert r.span_days <= days, (days, r)
        if r.monthly < 60:  # cut as little as fits: the months first, then the weeks, then the days
            if r.weekly == 104:
                assert days - r.span_days < 31, (days, r)
            elif r.daily == 90:
                assert r.monthly == 0 and days - r.span_days < 7, (days, r)
            else:
                assert (r.daily, r.weekly, r.monthly) == (days, 0, 0), (days, r)


def test_a_school_backup_setting_without_a_fleet_backup_host_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="the fleet names no backup host"):
        load(fleet_dir(tmp_path, {"retention": {"daily": 3}}, fleet_backup=None))


def test_the_freshness_limit_must_cover_a_day_and_the_delay() -> None:
    with pytest.raises(ValueError, match="shorter than a day plus the randomized delay"):
        Backup(host="lab:backup", max_age_hours=24, randomized_delay_minutes=90)
    with pytest.raises(ValueError):
        Backup(host="bad host;rm -rf /")
    with pytest.raises(ValueError):
        Backup(host="lab:backup", at="25:00")


def _site(tmp_path: Path) -> Site:
    eff = load(fleet_dir(tmp_path)).schools["demo"]
    return Site(school=eff, secret=lambda name, length=32: Secret(f"{name}-secret-value"),
                backup_address="10.77.0.9", backup_host_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKey")


def test_the_layer_pins_the_host_key_and_installs_the_timer_and_program(tmp_path: Path) -> None:
    s = _site(tmp_path)
    layer = backup.layer(s)
    files = {f.path: f for f in layer.files}
    assert files[backup.KNOWN_HOSTS].data.decode() == "[10.77.0.9]:22 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKey\n"
    assert files[backup.SSH_KEY].secret and files[backup.SSH_KEY].mode == "0600"
    assert files[backup.PASSPHRASE].secret and files[backup.PASSPHRASE].mode == "0600"
    timer = files["/etc/systemd/system/schoolctl-backup.timer"].data.decode()
    assert "OnCalendar=*-*-* 02:30:00" in timer and "RandomizedDelaySec=60min" in timer and "Persistent=true" in timer
    config = json.loads(files[backup.CONFIG].data)
    assert config["repository"] == "ssh://borg@10.77.0.9:22/srv/schoolctl-backups/demo"
    assert set(config["databases"]) == {"moodle", "nextcloud", "etherpad"}
    assert "/var/lib/moodle/data/cache" in config["excludes"]
    for f in layer.files:  # no secret in a file that is not marked secret
        if not f.secret:
            assert "passphrase-secret-value" not in f.data.decode(errors="replace")


def test_no_backup_layer_without_a_reachable_backup_host(tmp_path: Path) -> None:
    s = _site(tmp_path)
    s.backup_address = ""
    assert backup.layer(s) is None


def test_the_key_is_stable_and_restricted_to_the_schools_own_repository(tmp_path: Path) -> None:
    s = _site(tmp_path)
    private, public = backup.ssh_key(s)
    assert backup.ssh_key(s) == (private, public)
    assert private.startswith("-----BEGIN OPENSSH PRIVATE KEY-----") and public.startswith("ssh-ed25519 ")
    line = backup.authorized_line(s)
    assert line.startswith('command="borg serve --append-only --restrict-to-repository /srv/schoolctl-backups/demo",'
                           'restrict ssh-ed25519 ')
    assert line.endswith(" schoolctl-backup:demo")


def test_the_backup_host_commands_quote_and_keep_the_passphrase_off_the_command_line(tmp_path: Path) -> None:
    s = _site(tmp_path)
    enrol = backup.enroll_command(s)
    assert "useradd --system" in enrol and "cat /etc/ssh/ssh_host_ed25519_key.pub" in enrol
    init = backup.init_command(s)
    assert "init --encryption=repokey-blake2" in init and "BORG_PASSPHRASE_FD=0" in init
    assert "secret-value" not in enrol + init
    assert shutil.which("sh") and __import__("subprocess").run(["sh", "-n", "-c", enrol + "\n" + init]).returncode == 0


def test_the_server_program_compiles_and_refuses_unknown_subcommands(tmp_path: Path) -> None:
    py_compile.compile(str(TEMPLATES / "backup" / "schoolctl-backup.py"), doraise=True)


def test_backup_verbs_refuse_a_fleet_without_backup_host_and_bad_names(tmp_path: Path) -> None:
    from schoolctl.cli.main import app

    d = fleet_dir(tmp_path, fleet_backup=None)
    r = CliRunner().invoke(app, ["--schools-dir", str(d), "backup", "demo"])
    assert r.exit_code == 2 and "names no backup host for demo" in r.output
    d2 = fleet_dir(tmp_path / "b")
    r = CliRunner().invoke(app, ["--schools-dir", str(d2), "restore", "demo", "--to", "bad host;rm", "--yes"])
    assert r.exit_code == 2 and "--to bad host;rm" in r.output
    r = CliRunner().invoke(app, ["--schools-dir", str(d2), "backup", "list"])
    assert r.exit_code == 2


def test_archive_names_are_checked() -> None:
    from schoolctl.cli.backup.school import checked_archive
    from schoolctl.errors import BackupError

    assert checked_archive("demo-2026-12-02T023001Z") == "demo-2026-12-02T023001Z"
    for bad in ("demo", "../x", "demo-2026-12-02T023001Z;rm", "-x-2026-12-02T023001Z"):
        with pytest.raises(BackupError) as e:
            checked_archive(bad)
        assert e.value.exit_code == 2


def test_a_failed_backup_is_journaled_and_exits_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from schoolctl import journal
    from schoolctl.cli.backup import school as program_module
    from schoolctl.cli.main import app
    from schoolctl.errors import BackupError

    def unreachable(*args: Any, **kw: Any) -> dict[str, Any]:
        raise BackupError("demo: borg create failed: Connection refused")

    monkeypatch.setattr(program_module, "program", unreachable)
    folder = fleet_dir(tmp_path)
    demo = folder / "demo.yaml"  # a server's failure: a lab:NAME without its lab host is refused first (exit 2)
    demo.write_text(demo.read_text().replace("server: lab:demo", "server: 127.0.0.1"))
    r = CliRunner().invoke(app, ["--schools-dir", str(folder), "backup", "demo", "--json"])
    assert r.exit_code == 1, r.output
    assert json.loads(r.stdout)["schools"][0]["error"].endswith("Connection refused")
    [entry] = [e for e in journal.read("demo") if e["verb"] == "backup"][-1:]
    assert entry["result"] == "failed" and "Connection refused" in entry["detail"]["error"]


def test_prune_asks_first_and_without_a_terminal_refuses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from schoolctl.cli.backup import host
    from schoolctl.cli.main import app

    pruned: list[str] = []
    monkeypatch.setattr(host, "prune", lambda site, store: pruned.append(site.id) or {"school": site.id, "kept": 3,
                                                                                     "pruned": ["x"]})
    folder = fleet_dir(tmp_path)
    demo = folder / "demo.yaml"
    demo.write_text(demo.read_text().replace("server: lab:demo", "server: 127.0.0.1"))
    r = CliRunner().invoke(app, ["--schools-dir", str(folder), "backup", "prune", "demo"])
    assert r.exit_code == 2 and "not confirmed (stdin is not a terminal)" in r.output and not pruned
    assert "--yes" in r.output
    r = CliRunner().invoke(app, ["--schools-dir", str(folder), "backup", "prune", "demo", "--yes"])
    assert r.exit_code == 0 and pruned == ["demo"] and "demo: 3 archives kept, 1 pruned" in r.output, r.output


def test_a_restores_first_deploy_runs_no_app_installer(tmp_path: Path) -> None:
    """Moodle's and Nextcloud's installers (minutes) and their database steps are left to the restore's
    second deploy: the archive's databases replace whatever they would install. The same code and
    configuration files are deployed, and no round checks that the apps answer yet."""
    from schoolctl.deploy.obtain import needed
    from schoolctl.deploy.school import school_rounds

    from .rendered import commands, files

    s = _site(tmp_path)
    fleet = s.school.fleet
    (tmp_path / "SHA256SUMS").write_text("".join(  # every app's release "in the mirror": none is left out
        f"{'e' * 64}  {getattr(fleet.artifacts, name).file_name(version)}\n"
        for app in ("moodle", "nextcloud", "etherpad") for name, version in needed(s, app)))
    s.mirror = str(tmp_path)
    whole = school_rounds(s)
    assert not s.skipped
    s.restoring = True
    first = school_rounds(s)

    def names(rounds: list) -> list[str]:
        return [step.name for r in rounds for step in (*r.pre_steps, *r.steps)]

    left = [n for n in names(whole) if n not in names(first)]
    assert left and all(n.startswith(("moodle ", "nextcloud ", "the landing page")) for n in left), left
    for wanted in ("moodle database installed", "moodle database matches", "moodle settings",
                   "nextcloud installed (occ maintenance:install)", "nextcloud settings"):
        assert any(n.startswith(wanted) for n in left), (wanted, left)
    assert set(names(first)) < set(names(whole))
    assert [c for c in commands(first) if "install_database.php" in c or "maintenance:install" in c] == []
    assert files(first) == files(whole)
    assert [r.number for r in whole][-1] == LAST and LAST not in [r.number for r in first]
