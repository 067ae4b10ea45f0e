"""The upgrade shell (deploy/upgrade.py and the apps' upgrade steps), run for real in a sandbox: the
server's paths moved under a temporary folder, `runuser`/`systemctl` stubbed (they log what they
were asked, and `occ upgrade` fails on demand). The guards' messages, the rollback point, the way
back, the runner's rolled-back status and `schoolctl rollback`'s refusals."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest

from schoolctl.config.loader import load
from schoolctl.deploy import etherpad, moodle, nextcloud, upgrade
from schoolctl.deploy.site import Site
from schoolctl.errors import ArtifactError
from schoolctl.secrets import Secret

from .conftest import SHIPPED, FakeSession, run_cli

SUMS = {
    "nextcloud-31.0.11.tar.bz2": "81078ba3a112c9ad116f8d2c438b2fe98ef5acd29e10ed9c94db60a63de34c01",
    "nextcloud-33.0.3.tar.bz2": "26db1860e281052d3d8ad41bddb10d4bfd24ab3ed9e653ba9f3153be1ddab4f9",
    "nextcloud-34.0.1.tar.bz2": "17a196e81eaf6b7db3ffc7627ec53d8effbabce7d989f294f7d4aab4ab884fac",
    "etherpad-lite-2.5.3.tar.gz": "2e310ef09ba9cfb857767ff112a439e83120f84c0b27d384800ee1ed9f8906d3",
    "etherpad-3.3.1.tar.gz": "3295e664a38b5df95bf1f6ece7a54d4e925ff3a341c200ffef0681bd0483ab09",
    "moodle-4.5.10.tgz": "ae9084fbb1968b21adf86d744997f52826bcdcf8567870d5c8b4156561f2e2ca",
    "moodle-5.0.6.tgz": "c381bbe8b77dfddb315215d1af38483dd0c36b8672a1cbf8e8b6dd6dd6581440",
    "node-v24.22.3-linux-x64.tar.xz": "123b24ac568ac6bedbced50d5b6e4fb1131c7620e3714103e2ac3d01c3879d54",
}
OLD = {"moodle": "4.5.10", "nextcloud": "33.0.3", "etherpad": "2.5.3"}
NEW = {"moodle": "5.0.6", "nextcloud": "34.0.1", "etherpad": "3.3.1"}


@pytest.fixture
def mirror(tmp_path: Path) -> str:
    folder = tmp_path / "mirror"
    folder.mkdir()
    (folder / "SHA256SUMS").write_text("".join(f"{h}  {n}\n" for n, h in SUMS.items()))
    return str(folder)


def make_site(mirror: str | None, versions: dict[str, str], node: bool = True) -> Site:
    school = load(SHIPPED).select(["demo"])[0]
    fleet = school.fleet
    if not node:
        fleet = fleet.model_copy(update={"artifacts": fleet.artifacts.model_copy(update={"node": None})})
    school = school.model_copy(update={"versions": {**school.versions, **versions}, "fleet": fleet})
    return Site(school=school, secret=lambda name, length=32: Secret(f"S3CRET-{name}"), mirror=mirror)


def steps(site: Site, module: Any) -> dict[str, Any]:
    layer = module.layer(site)
    return {s.name: s for s in [*layer.pre_steps, *layer.steps]}


def step(site: Site, module: Any, part: str) -> Any:
    return next(s for n, s in steps(site, module).items() if part in n)


@pytest.mark.parametrize("versions", [OLD, NEW])
def test_every_step_of_the_release_apps_parses(mirror: str, versions: dict[str, str]) -> None:
    site = make_site(mirror, versions)
    for module in (moodle, nextcloud, etherpad):
        for name, s in steps(site, module).items():
            for part in (s.check, s.apply):
                proc = subprocess.run(["sh", "-n", "-c", part], capture_output=True, text=True)
                assert proc.returncode == 0, f"{module.__name__}: {name}: {proc.stderr}"
    for app in (moodle.APP_UPGRADE, nextcloud.APP, etherpad.APP):
        for script in (upgrade.rollback_command(app), upgrade.describe_command(app)):
            assert subprocess.run(["sh", "-n", "-c", script]).returncode == 0


# --- the sandbox ---------------------------------------------------------------------------------

RUNUSER = r"""#!/bin/sh
echo "runuser $*" >> "$SANDBOX/log"
shift 3
case "$*" in
  *"occ upgrade"*) if [ -n "$FAIL_UPGRADE" ]; then echo "Exception: injected" >&2; exit 1; fi ;;
  *"upgrade.php"*) if [ -n "$FAIL_UPGRADE" ]; then echo "Exception: injected" >&2; exit 1; fi ;;
  pg_dump*) echo "DUMP of $3" ;;
  pg_restore*) cat > "$SANDBOX/restored"; [ -z "$FAIL_RESTORE" ] || exit 1 ;;
esac
exit 0
"""


class Sandbox:
    """The server's folders under `root`; a script's absolute paths moved there before it runs."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.bin = root / "bin"
        self.bin.mkdir(parents=True)
        for name, body in {"runuser": RUNUSER, "systemctl": '#!/bin/sh\necho "systemctl $*" >> "$SANDBOX/log"\n',
                           "curl": "#!/bin/sh\nexit 0\n", "sleep": "#!/bin/sh\nexit 0\n"}.items():
            (self.bin / name).write_text(body)
            (self.bin / name).chmod(0o755)

    def path(self, server_path: str) -> Path:
        return Path(self.move(server_path))

    def move(self, text: str) -> str:
        for p in ("/srv/", "/var/lib/schoolctl/", "/var/backups/schoolctl", "/var/lib/moodle/"):
            text = text.replace(p, f"{self.root}{p}")
        return text

    def run(self, script: str, **env: str) -> subprocess.CompletedProcess[str]:
        full = {**os.environ, "PATH": f"{self.bin}:{os.environ['PATH']}", "SANDBOX": str(self.root), **env}
        return subprocess.run(["sh", "-ec", self.move(script)], capture_output=True, text=True, env=full, timeout=60)

    @property
    def log(self) -> list[str]:
        f = self.root / "log"
        return f.read_text().splitlines() if f.exists() else []

    def release(self, app: str, version: str, installed: bool = True) -> Path:
        rel = self.path(f"/srv/{app}/releases/{version}")
        (rel / "config").mkdir(parents=True, exist_ok=True)
        if installed and app == "nextcloud":
            (rel / "config" / "config.php").write_text(f"<?php $CONFIG = ['installed' => true, 'v' => '{version}'];")
        if app == "etherpad":
            (rel / ".schoolctl-built").write_text("sha\n")
        return rel

    def current(self, app: str, target: str) -> None:
        link = self.path(f"/srv/{app}/current")
        link.unlink(missing_ok=True)
        link.symlink_to(self.move(target) if target.startswith("/") else target)

    def readlink(self, app: str) -> str:
        return os.readlink(self.path(f"/srv/{app}/current")).replace(str(self.root), "")


@pytest.fixture
def box(tmp_path: Path) -> Sandbox:
    return Sandbox(tmp_path / "server")


# --- guards --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("running", "wanted", "message"), [
    (None, "33.0.3", ""),
    ("33.0.3", "33.0.3", ""),
    ("33.0.3", "34.0.1", ""),
    ("33.0.3", "33.0.4", ""),
    ("31.0.11", "33.0.3", "Nextcloud 31.0.11 -> 33.0.3 skips 32; upgrade to 32.x first (Nextcloud upgrades one "
                          "major version at a time: 31 -> 32 -> 33)"),
    ("30.0.2", "33.0.3", "Nextcloud 30.0.2 -> 33.0.3 skips 31, 32; upgrade to 31.x first (Nextcloud upgrades one "
                         "major version at a time: 30 -> 31 -> 32 -> 33)"),
    ("34.0.1", "33.0.3", "Nextcloud 34.0.1 -> 33.0.3 is a downgrade; refusing it (the last upgrade can be undone "
                         "with schoolctl rollback demo nextcloud, while its rollback point and dump last)"),
    ("33.0.10", "33.0.9", "is a downgrade"),
])
def test_the_nextcloud_guard(box: Sandbox, running: str | None, wanted: str, message: str) -> None:
    guard = upgrade.guard_step(nextcloud.APP, wanted, "demo", one_major=True)
    assert upgrade.is_guard(guard)
    if running:
        box.release("nextcloud", running)
        box.current("nextcloud", f"/srv/nextcloud/releases/{running}")
    check, apply = box.run(guard.check), box.run(guard.apply)
    assert apply.returncode == 1   # the apply never succeeds: it is only run when the check failed
    if message:
        assert check.returncode != 0 and message in apply.stderr, apply.stderr
    else:
        assert check.returncode == 0, apply.stderr


@pytest.mark.parametrize("count", [1, 2])
def test_the_read_ahead_hears_a_refusing_guard_under_dash(box: Sandbox, count: int) -> None:
    """The deploy's first command (cli/runner.py: _read_ahead) runs under `sh`: the guard's reason
    must come back on stdout with the fact sections after it, else plan and deploy go ahead."""
    from schoolctl.deploy import ops

    guard = upgrade.guard_step(nextcloud.APP, "33.0.3", "demo", one_major=True)
    box.release("nextcloud", "31.0.11")
    box.current("nextcloud", "/srv/nextcloud/releases/31.0.11")
    token = "--schoolctl-fact-0123456789abcdef"
    script = box.move(ops.prefetch_script(ops.guard_script([guard] * count), ["echo fact"], token))
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=60)  # as pyinfra runs it
    before, facts = ops.parse_prefetch(out.stdout.splitlines(), ["echo fact"], token)
    assert before == ["Nextcloud 31.0.11 -> 33.0.3 skips 32; upgrade to 32.x first (Nextcloud upgrades one "
                      "major version at a time: 31 -> 32 -> 33)"] * count, out
    assert facts == {"echo fact": ["fact"]} and out.stderr == ""


@pytest.mark.parametrize(("module", "app", "running", "wanted", "refused"), [
    (etherpad, "etherpad", "/srv/etherpad/releases/3.3.1", "2.5.3", True),
    (etherpad, "etherpad", "/srv/etherpad/releases/2.5.3", "3.3.1", False),
    (moodle, "moodle", "releases/5.0.6", "4.5.10", True),
    (moodle, "moodle", "releases/4.5.10", "5.0.6", False),
    (moodle, "moodle", "releases/4.1.2", "5.0.6", False),   # no skip rule for Moodle: upgrade.php decides
])
def test_the_guards_of_moodle_and_etherpad_refuse_downgrades(box: Sandbox, mirror: str, module: Any, app: str,
                                                            running: str, wanted: str, refused: bool) -> None:
    guard = next(s for s in module.layer(make_site(mirror, {app: wanted})).pre_steps if upgrade.is_guard(s))
    box.path(f"/srv/{app}/releases").mkdir(parents=True)
    box.current(app, running)
    check = box.run(guard.check)
    assert (check.returncode != 0) is refused
    if refused:
        title = {"moodle": "Moodle", "etherpad": "Etherpad"}[app]
        assert f"{title} {running.rsplit('/', 1)[1]} -> {wanted} is a downgrade" in box.run(guard.apply).stderr


def test_each_release_app_guards_first(mirror: str) -> None:
    site = make_site(mirror, NEW)
    for module, first in ((moodle, "moodle 5.0.6"), (nextcloud, "nextcloud 34.0.1"), (etherpad, "etherpad 3.3.1")):
        guard = module.layer(site).pre_steps[0]
        assert guard.name.startswith(upgrade.GUARD + first), guard.name


# --- the Nextcloud upgrade and its way back ------------------------------------------------------

def _nc_upgrade(box: Sandbox, mirror: str, **env: str) -> subprocess.CompletedProcess[str]:
    box.release("nextcloud", "33.0.3")
    box.release("nextcloud", "34.0.1", installed=False)
    box.current("nextcloud", "/srv/nextcloud/releases/33.0.3")
    current = step(make_site(mirror, {"nextcloud": "34.0.1"}), nextcloud, "nextcloud 34.0.1 in use")
    return box.run(current.apply, **env)


def test_a_nextcloud_upgrade_dumps_and_writes_its_point_before_the_switch(box: Sandbox, mirror: str) -> None:
    done = _nc_upgrade(box, mirror)
    assert done.returncode == 0, done.stderr
    assert box.readlink("nextcloud") == "/srv/nextcloud/releases/34.0.1"
    log = box.log
    order = [next(i for i, line in enumerate(log) if word in line)
             for word in ("maintenance:mode --on", "pg_dump", "occ upgrade", "maintenance:mode --off")]
    assert order == sorted(order), log
    assert "releases/33.0.3 && runuser" not in "".join(log)   # the runuser log has no cwd; the order says it
    point = dict(line.split("=", 1) for line in box.path(upgrade.POINTS + "/nextcloud").read_text().splitlines())
    assert (point["app"], point["from"], point["to"]) == ("nextcloud", "33.0.3", "34.0.1")
    assert point["previous"].endswith("/srv/nextcloud/releases/33.0.3")
    assert point["dump"].startswith(f"{box.root}/var/backups/schoolctl/nextcloud-") and point["dump"].endswith(".dump")
    assert Path(point["dump"]).read_text() == "DUMP of nextcloud\n"
    # the new release got the old one's config.php, the old one kept its own
    new_conf = box.path("/srv/nextcloud/releases/34.0.1/config/config.php").read_text()
    assert "'v' => '33.0.3'" in new_conf
    assert "schoolctl-rolled-back" not in done.stderr


def test_a_failed_occ_upgrade_rolls_back(box: Sandbox, mirror: str) -> None:
    failed = _nc_upgrade(box, mirror, FAIL_UPGRADE="1")
    assert failed.returncode == 1
    last = failed.stderr.strip().splitlines()[-1]
    assert last == "schoolctl-rolled-back: nextcloud 33.0.3", failed.stderr
    assert upgrade.rolled_back(failed.stderr) == ("nextcloud", "33.0.3")
    assert "Exception: injected" in failed.stderr and "occ upgrade to 34.0.1 failed; rolling back" in failed.stderr
    assert box.readlink("nextcloud") == "/srv/nextcloud/releases/33.0.3"
    # the dump went into a fresh database, on stdin, no connection left to the old one
    restore = next(line for line in box.log if "pg_restore" in line)
    assert "--clean" in restore and "--create" in restore and "--exit-on-error" in restore
    assert (box.root / "restored").read_text() == "DUMP of nextcloud\n"
    assert any("ALLOW_CONNECTIONS false" in line and "pg_terminate_backend" in line for line in box.log)
    # maintenance off after the restore, FPM restarted; the point used up
    log = box.log
    assert log.index(restore) < max(i for i, line in enumerate(log) if "maintenance:mode --off" in line)
    assert any("try-restart php8.4-fpm.service" in line for line in log[log.index(restore):])
    assert not box.path(upgrade.POINTS + "/nextcloud").exists()
    assert [p.name.split("-")[0] for p in box.path(upgrade.POINTS).iterdir()] == ["nextcloud.used"]


def test_a_failed_restore_says_so_and_fails(box: Sandbox, mirror: str) -> None:
    failed = _nc_upgrade(box, mirror, FAIL_UPGRADE="1", FAIL_RESTORE="1")
    assert failed.returncode == 1
    assert "restoring the database from" in failed.stderr and "THE ROLLBACK FAILED TOO" in failed.stderr
    assert upgrade.rolled_back(failed.stderr) is None
    assert box.path(upgrade.POINTS + "/nextcloud").exists()   # kept: the rollback can be tried again


def test_a_first_install_only_switches(box: Sandbox, mirror: str) -> None:
    box.release("nextcloud", "34.0.1", installed=False)
    current = step(make_site(mirror, {"nextcloud": "34.0.1"}), nextcloud, "nextcloud 34.0.1 in use")
    assert box.run(current.apply).returncode == 0
    assert box.readlink("nextcloud") == "/srv/nextcloud/releases/34.0.1"
    assert not any("pg_dump" in line for line in box.log) and not box.path(upgrade.POINTS).exists()


# --- rollback by hand ----------------------------------------------------------------------------

def _point(box: Sandbox, app: str, previous: str, frm: str, to: str, dump: bool = True) -> None:
    box.path(upgrade.POINTS).mkdir(parents=True, exist_ok=True)
    dump_path = box.path(f"/var/backups/schoolctl/{app}-20261202T010000Z.dump")
    if dump:
        dump_path.parent.mkdir(parents=True, exist_ok=True)
        dump_path.write_text(f"DUMP of {app}\n")
    box.path(f"{upgrade.POINTS}/{app}").write_text(
        f"app={app}\nfrom={frm}\nto={to}\nprevious={box.move(previous)}\ndump={dump_path}\nat=2026-12-02T01:00:00Z\n")


@pytest.mark.parametrize("app", [nextcloud.APP, etherpad.APP, moodle.APP_UPGRADE])
def test_rollback_by_hand_and_its_refusals(box: Sandbox, app: upgrade.App) -> None:
    old, new = OLD[app.name], NEW[app.name]
    for v in (old, new):
        box.release(app.name, v)
    absolute = not app.relative_link
    prev = f"/srv/{app.name}/releases/{old}" if absolute else f"releases/{old}"
    box.current(app.name, f"/srv/{app.name}/releases/{new}" if absolute else f"releases/{new}")

    def rc(script: str) -> tuple[int | None, subprocess.CompletedProcess[str]]:
        proc = box.run(script)
        assert proc.returncode == 0, proc.stderr    # the code is in the text
        return upgrade.result_code(proc.stdout), proc

    code, proc = rc(upgrade.describe_command(app))
    assert code == upgrade.NO_POINT and "no rollback point" in proc.stderr
    _point(box, app.name, prev, old, new, dump=False)
    code, proc = rc(upgrade.describe_command(app))
    assert code == upgrade.NO_DUMP and "is gone; not rolling back" in proc.stderr
    _point(box, app.name, prev, old, "9.9.9")
    code, proc = rc(upgrade.describe_command(app))
    assert code == upgrade.NO_POINT and "but the rollback point is for the upgrade" in proc.stderr
    _point(box, app.name, prev, old, new)
    code, proc = rc(upgrade.describe_command(app))
    assert code == 0 and f"from={old}" in proc.stdout and f"to={new}" in proc.stdout
    code, proc = rc(upgrade.rollback_command(app))
    assert code == 0 and proc.stderr.strip().splitlines()[-1] == f"{upgrade.MARKER} {app.name} {old}", proc.stderr
    assert box.readlink(app.name) == (f"/srv/{app.name}/releases/{old}" if absolute else f"releases/{old}")
    assert (box.root / "restored").read_text() == f"DUMP of {app.name}\n"
    code, proc = rc(upgrade.rollback_command(app))   # once only
    assert code == upgrade.NO_POINT


def test_etherpad_and_moodle_put_their_services_back(box: Sandbox) -> None:
    for app, v in ((etherpad.APP, "2.5.3"), (moodle.APP_UPGRADE, "4.5.10")):
        new = NEW[app.name]
        box.release(app.name, v)
        box.release(app.name, new)
        def link(x: str, a: upgrade.App = app) -> str:
            return f"releases/{x}" if a.relative_link else f"/srv/{a.name}/releases/{x}"
        box.current(app.name, link(new))
        _point(box, app.name, link(v), v, new)
        assert upgrade.result_code(box.run(upgrade.rollback_command(app)).stdout) == 0
    log = "\n".join(box.log)
    assert "systemctl stop etherpad" in log and "systemctl restart etherpad" in log
    assert "purge_caches.php" in log and "maintenance.php --disable" in log and "reload php8.4-fpm.service" in log


# --- the other apps' upgrade steps ---------------------------------------------------------------

def test_etherpad_upgrade_stops_dumps_switches_and_checks_health(mirror: str) -> None:
    s = step(make_site(mirror, NEW), etherpad, "etherpad 3.3.1 in use").apply
    s = s[s.index("etherpad: upgrading"):]
    stop, dump, point = s.index("systemctl stop etherpad\n"), s.index("pg_dump"), s.index("> /var/lib/schoolctl/")
    switch = s.index("ln -sfn /srv/etherpad/releases/3.3.1 /srv/etherpad/current.new")
    assert stop < dump < point < switch < s.index("etherpad_up; }; then")
    assert "starting 3.3.1 failed; rolling back" in s and "schoolctl_rollback" in s


def test_moodle_upgrade_in_maintenance_dumped_first(mirror: str) -> None:
    s = step(make_site(mirror, NEW), moodle, "moodle current -> releases/5.0.6").apply
    assert "schoolctl_rollback() {" in s
    s = s[s.index("moodle: upgrading"):]   # the upgrade itself, after the rollback's definition
    order = [s.index(w) for w in ("maintenance.php\" --enable", "pg_dump", "> /var/lib/schoolctl/rollback/moodle.part",
                                  "ln -sfn releases/5.0.6", "upgrade.php --non-interactive", "settings.php")]
    assert order == sorted(order) and s.rindex("maintenance.php\" --disable") > order[-1]
    assert "upgrade.php to 5.0.6 failed; rolling back" in s


def test_a_moodle_upgrade_that_fails_rolls_back(box: Sandbox, mirror: str) -> None:
    box.release("moodle", "4.5.10")
    box.release("moodle", "5.0.6")
    box.current("moodle", "releases/4.5.10")
    box.path("/var/lib/moodle/installed").parent.mkdir(parents=True)
    box.path("/var/lib/moodle/installed").touch()
    switch = step(make_site(mirror, NEW), moodle, "moodle current -> releases/5.0.6")
    # the stubbed psql answers nothing: has_config is false; make it true
    script = switch.apply.replace(" | grep -qx mdl_config", " | true")
    failed = box.run(script, FAIL_UPGRADE="1")
    assert failed.returncode == 1 and failed.stderr.strip().splitlines()[-1] == \
        "schoolctl-rolled-back: moodle 4.5.10", failed.stderr
    assert box.readlink("moodle") == "releases/4.5.10"
    ok = box.run(script)
    assert ok.returncode == 0 and box.readlink("moodle") == "releases/5.0.6", ok.stderr


# --- Etherpad 3.x on Node.js 24 ------------------------------------------------------------------

def test_etherpad_3_gets_node_24_and_pnpm_11(mirror: str) -> None:
    site = make_site(mirror, NEW)
    layer = etherpad.layer(site)
    names = [s.name for s in layer.steps]
    assert names[0].startswith("node 24.22.3 release") and names[1] == "pnpm 11.1.2 (run by Node.js 24.22.3)"
    build = step(site, etherpad, "built")
    path = "/usr/local/lib/pnpm-11.1.2/bin:/srv/node/releases/24.22.3/bin:/usr/bin:/bin"
    assert f"PATH={path}" in build.apply
    assert f"echo {path} > /srv/etherpad/releases/3.3.1/.schoolctl-path" in build.apply
    assert "npm install --global --prefix /usr/local/lib/pnpm-11.1.2" in layer.steps[1].apply
    assert "xz-utils" in layer.packages
    settings = __import__("json").loads(next(f for f in layer.files if f.path == etherpad.SETTINGS).data)
    assert settings["updates"] == {"tier": "off"} and settings["privacy"] == {"updateCheck": False,
                                                                             "pluginCatalog": False}


def test_etherpad_2_stays_on_debians_node(mirror: str) -> None:
    site = make_site(mirror, OLD)
    layer = etherpad.layer(site)
    assert layer.steps[0].name == f"pnpm {etherpad.PNPM_VERSION}"
    assert not any(s.name.startswith("node ") for s in layer.steps)
    assert "PATH=/usr/local/bin:/usr/bin:/bin" in step(site, etherpad, "built").apply
    settings = __import__("json").loads(next(f for f in layer.files if f.path == etherpad.SETTINGS).data)
    assert "updates" not in settings and "privacy" not in settings


def test_one_unit_for_every_release_through_the_launcher(mirror: str) -> None:
    units = {}
    for versions in (OLD, NEW):
        files = {f.path: f for f in etherpad.layer(make_site(mirror, versions)).files}
        units[versions["etherpad"]] = files["/etc/systemd/system/etherpad.service"].data
        launcher = files[etherpad.LAUNCHER].data.decode()
    assert units["2.5.3"] == units["3.3.1"]
    unit = units["3.3.1"].decode()
    assert "WorkingDirectory=/srv/etherpad/current" in unit
    assert f"ExecStart={etherpad.LAUNCHER} --settings /etc/etherpad/settings.json " \
           "--apikey /etc/etherpad/APIKEY.txt" in unit
    assert 'exec node --require tsx/cjs node/server.ts "$@"' in launcher
    assert "cd /srv/etherpad/current/src" in launcher and "PATH=$(cat ../.schoolctl-path)" in launcher
    assert subprocess.run(["sh", "-n", "-c", launcher]).returncode == 0


def test_etherpad_3_without_a_node_artifact_says_so(mirror: str) -> None:
    with pytest.raises(ArtifactError, match=r"fleet\.yaml sets no artifacts\.node.*Etherpad 3\.x needs Node\.js >= 24"):
        etherpad.layer(make_site(mirror, NEW, node=False))
    assert etherpad.layer(make_site(mirror, OLD, node=False)) is not None


def test_nextcloud_32_and_later_set_user_ldaps_configuration_list(mirror: str) -> None:
    assert nextcloud.array_config(make_site(mirror, NEW)) == {"user_ldap": {"configuration_prefixes": ["s01"]}}
    assert nextcloud.array_config(make_site(mirror, {"nextcloud": "31.0.11"})) == {}
    script = next(f for f in nextcloud.layer(make_site(mirror, NEW)).files if f.path == nextcloud.CONFIG_SCRIPT)
    text = script.data.decode()
    assert 'ARRAYS = {"user_ldap": {"configuration_prefixes": ["s01"]}}' in text and '"--type=array"' in text
    compile(text, "config", "exec")


# --- the runner's status and the verb ------------------------------------------------------------

def test_a_rolled_back_school_is_failed_with_the_version() -> None:
    from schoolctl.cli.runner import Result

    text = "round 1: steps failed on x:\nnextcloud: occ upgrade failed\nschoolctl-rolled-back: nextcloud 33.0.3"
    app, version = upgrade.rolled_back(text)
    r = Result("x", "failed", error=text, rolled_back=version)
    assert (app, r.status, r.status_text) == ("nextcloud", "failed", "failed (rolled back to 33.0.3)")
    assert r.as_json()["rolled_back"] == "33.0.3" and r.as_json()["result"] == "failed (rolled back to 33.0.3)"
    assert Result("y", "changed").status_text == "changed"


@pytest.fixture
def session(monkeypatch: pytest.MonkeyPatch) -> type[FakeSession]:
    import schoolctl.connect

    FakeSession.answers, FakeSession.commands = [], []
    monkeypatch.setattr(schoolctl.connect, "Session", FakeSession)
    monkeypatch.setattr("schoolctl.cli.context.lab_problems", lambda schools: [])  # no lab host: the session is faked
    return FakeSession


POINT = ("from=33.0.3\nto=34.0.1\nprevious=/srv/nextcloud/releases/33.0.3\n"
         "dump=/var/backups/schoolctl/nextcloud-20261202T010000Z.dump\nat=2026-12-02T01:00:00Z\n")


def test_rollback_refuses_without_a_point_or_a_dump(schools: Path, session: type[FakeSession]) -> None:
    session.answers = [(True, "schoolctl-rc=3\n", "nextcloud: no rollback point (/var/lib/schoolctl/rollback/"
                                                  "nextcloud): no upgrade of Nextcloud by schoolctl here\n")]
    run = run_cli("rollback", "demo", "nextcloud", "--yes")
    assert run.code == 2 and "no rollback point" in run.stderr and len(session.commands) == 1
    session.answers = [(True, "schoolctl-rc=4\n", "nextcloud: the dump of before the upgrade to 34.0.1 "
                                                  "('/var/backups/x.dump') is gone; not rolling back\n")]
    run = run_cli("rollback", "demo", "nextcloud", "--yes")
    assert run.code == 2 and "is gone; not rolling back" in run.stderr
    assert "schoolctl_rollback_point" in session.commands[-1] and "pg_restore" in session.commands[-1]


def test_rollback_refuses_an_unknown_app_or_one_the_school_lacks(schools: Path, session: type[FakeSession]) -> None:
    run = run_cli("rollback", "demo", "jitsi", "--yes")
    assert run.code == 2 and "is not an app schoolctl upgrades" in run.stderr
    text = (schools / "escola-pins.yaml").read_text()
    if "etherpad" not in text:
        run = run_cli("rollback", "escola-pins", "etherpad", "--yes")
        assert run.code == 2 and "has no etherpad" in run.stderr
    assert session.commands == []


def test_rollback_says_what_it_restored(schools: Path, session: type[FakeSession]) -> None:
    session.answers = [(True, POINT + "schoolctl-rc=0\n", ""),
                       (True, "schoolctl-rc=0\n", "nextcloud: rolling back 34.0.1 -> 33.0.3 (...)\n"
                                                  "nextcloud: restored release 33.0.3\n"
                                                  "schoolctl-rolled-back: nextcloud 33.0.3\n")]
    run = run_cli("rollback", "demo", "nextcloud", "--yes")
    assert run.code == 0, run.stderr
    assert "nextcloud 34.0.1 -> 33.0.3: release /srv/nextcloud/releases/33.0.3, database from " \
           "/var/backups/schoolctl/nextcloud-20261202T010000Z.dump" in run.stdout
    assert "demo: nextcloud rolled back to 33.0.3" in run.stdout
    configured = load(schools).select(["demo"])[0].versions["nextcloud"]
    if configured != "33.0.3":
        assert f"still asks for nextcloud {configured}" in run.stderr
    assert "schoolctl_rollback\n" in session.commands[-1] or session.commands[-1].rstrip().endswith("exit 0")


def test_rollback_without_yes_asks(schools: Path, session: type[FakeSession]) -> None:
    session.answers = [(True, POINT + "schoolctl-rc=0\n", "")]
    run = run_cli("rollback", "demo", "nextcloud")   # no input: the confirmation says no
    assert run.code == 1 and len(session.commands) == 1


def test_a_guard_is_run_as_shell_words(mirror: str) -> None:
    """The configured version reaches the guard as one quoted word (validated by the model too)."""
    guard = upgrade.guard_step(nextcloud.APP, "34.0.1", "demo", one_major=True)
    assert "want=34.0.1" in guard.check and shlex.split("want=34.0.1") == ["want=34.0.1"]
    with pytest.raises(ValueError):
        upgrade.guard_step(nextcloud.APP, "34.0.1;reboot", "demo")
