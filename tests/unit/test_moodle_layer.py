"""The Moodle layer rendered for a 5.0 and a 5.3 school: web root per release layout, settings derived
from the privacy policy, secrets only in secret files, the leaver command."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from schoolctl.config.loader import load
from schoolctl.deploy import moodle
from schoolctl.deploy.site import Site
from schoolctl.deploy.state import APPS
from schoolctl.secrets import Secret

SCHOOLS = Path(__file__).resolve().parents[2] / "schools"
NGINX = "/etc/nginx/sites-enabled/schoolctl-moodle.conf"


def make_site(school_id: str, mirror: str | None = None, privacy: dict[str, Any] | None = None,
              version: str | None = None) -> Site:
    school = load(SCHOOLS).select([school_id])[0]
    if privacy:
        school = school.model_copy(update={"privacy": school.privacy.model_copy(update=privacy)})
    if version:
        school = school.model_copy(update={"versions": {**school.versions, "moodle": version}})
    return Site(school=school, secret=lambda name, length=32: Secret(f"s3cr3t-{name}-value"), mirror=mirror)


@pytest.fixture
def mirror(tmp_path: Path) -> str:
    (tmp_path / "moodle-5.0.6.tgz").write_bytes(b"not a real tree")
    (tmp_path / "SHA256SUMS").write_text("c381bbe8b77dfddb315215d1af38483dd0c36b8672a1cbf8e8b6dd6dd6581440  "
                                         "moodle-5.0.6.tgz\n")
    return str(tmp_path)


def files(site: Site) -> dict[str, Any]:
    return {f.path: f for f in moodle.layer(site).files}


def wanted(site: Site) -> dict[str, Any]:
    text = files(site)[moodle.SETTINGS_SCRIPT].data.decode()
    return json.loads(re.search(r"<<<'JSON'\n(.*)\nJSON,", text, re.S).group(1))


def test_off_without_moodle() -> None:
    site = make_site("demo")
    site.school = site.school.model_copy(update={"services": site.school.services.model_copy(update={"moodle": None})})
    assert moodle.layer(site) is None


def test_5_0_serves_the_code_root(mirror: str) -> None:
    site = make_site("demo", mirror=mirror)
    layer = moodle.layer(site)
    assert layer.round == APPS
    f = files(site)
    nginx = f[NGINX].data.decode()
    assert "\n    root /srv/moodle/current;\n" in nginx and "/public" not in nginx
    assert "fastcgi_pass unix:/run/php/php8.4-fpm-moodle.sock;" in nginx
    assert "client_max_body_size 100M;" in nginx
    config = f["/srv/moodle/releases/5.0.6/config.php"]
    assert "require_once(__DIR__ . '/lib/setup.php');" in config.data.decode()
    fetch = layer.pre_steps[1]   # after the upgrade guard (deploy/upgrade.py)
    assert fetch.upload and fetch.upload[0].endswith("moodle-5.0.6.tgz")
    steps = {s.name: s for s in layer.steps}
    assert "/srv/moodle/current/admin/cli/upgrade.php" in next(s.apply for n, s in steps.items() if "matches" in n)
    assert any(s.check == '[ "$(readlink /srv/moodle/current)" = releases/5.0.6 ]' for s in layer.steps)


def test_5_3_serves_public() -> None:
    site = make_site("institut-mar")
    assert site.school.versions["moodle"] == "5.3"
    f = files(site)
    assert "root /srv/moodle/current/public;" in f[NGINX].data.decode()
    assert "client_max_body_size 200M;" in f[NGINX].data.decode()
    assert "require_once(__DIR__ . '/public/lib/setup.php');" in f["/srv/moodle/releases/5.3/config.php"].data.decode()
    cron = f["/etc/systemd/system/moodle-cron.service"].data.decode()
    assert "ExecStart=/usr/bin/php8.4 /srv/moodle/current/public/admin/cli/cron.php" in cron
    install = next(s for s in moodle.layer(site).steps if "installed" in s.name)
    assert "/srv/moodle/current/public/admin/cli/install_database.php" in install.apply
    assert "mdl_config" in install.check


def test_config_php_is_secret_and_complete(mirror: str) -> None:
    site = make_site("demo", mirror=mirror)
    config = files(site)["/srv/moodle/releases/5.0.6/config.php"]
    assert (config.mode, config.owner, config.group, config.secret) == ("0640", "root", "moodle", True)
    text = config.data.decode()
    for line in ("$CFG->dbtype    = 'pgsql';", "$CFG->wwwroot   = 'https://moodle.demo.escoles.bcn.example';",
                 "$CFG->dataroot  = '/var/lib/moodle/data';", "$CFG->preventexecpath = true;",
                 "$CFG->disableupdatenotifications = true;", "$CFG->disableupdateautodeploy = true;",
                 "$CFG->site_is_public = false;", "$CFG->session_handler_class = '\\core\\session\\redis';",
                 "$CFG->session_redis_host = '/run/redis/redis-server.sock';",
                 "$CFG->dbpass    = 's3cr3t-db_moodle-value';", "'bind_pw' => 's3cr3t-ldap_moodle-value',",
                 "'host_url' => 'ldaps://127.0.0.1:636',", "'removeuser' => 1,",
                 "'contexts' => 'ou=people,dc=demo,dc=escoles,dc=bcn,dc=example',"):
        assert line in text, line


def test_no_secret_outside_secret_files(mirror: str) -> None:
    for site in (make_site("demo", mirror=mirror), make_site("institut-mar")):
        layer = moodle.layer(site)
        for f in layer.files:
            if not f.secret:
                assert "s3cr3t" not in f.data.decode(), f.path
        for s in [*layer.pre_steps, *layer.steps]:
            assert "s3cr3t" not in s.check + s.apply, s.name
        admin = files(site)[moodle.ADMIN_SECRET]
        assert (admin.mode, admin.secret, admin.data) == ("0600", True, b"s3cr3t-moodle_admin-value")


def test_settings_follow_the_policy(mirror: str) -> None:
    strict = wanted(make_site("demo", mirror=mirror))
    core = strict["config"]["core"]
    assert (core["forcelogin"], core["opentowebcrawlers"], core["allowindexing"]) == (1, 0, 2)
    assert core["loglifetime"] == 7 and strict["config"]["logstore_standard"]["loglifetime"] == 7
    assert (core["enableanalytics"], core["enablestats"], core["enablegravatar"], core["cookiesecure"]) == (0, 0, 0, 1)
    assert core["registrationpending"] == 0 and core["geopluginapikey"] == "" and core["timezone"] == "Europe/Madrid"
    assert strict["config"]["tool_dataprivacy"]["contactdataprotectionofficer"] == 1
    assert strict["retention"]["period"] == "P365D" and strict["lang"] == "ca"
    assert strict["dpo"]["email"] == "dpd@bcn.example"
    lax = wanted(make_site("demo", mirror=mirror, privacy={"require_login": False, "search_indexing": True,
                                                          "log_retention_days": 30, "data_retention_days": 90}))
    core = lax["config"]["core"]
    assert (core["forcelogin"], core["opentowebcrawlers"], core["allowindexing"]) == (0, 1, 1)
    assert lax["config"]["logstore_standard"]["loglifetime"] == 30 and lax["retention"]["period"] == "P90D"


def test_settings_is_the_extension_point(mirror: str) -> None:
    site = make_site("demo", mirror=mirror)
    extra = moodle.settings(site)
    assert set(extra) >= {"core", "logstore_standard", "tool_dataprivacy"}
    step = next(s for s in moodle.layer(site).steps if "settings" in s.name)
    assert step.check == "runuser -u moodle -- /usr/bin/php8.4 /srv/moodle/schoolctl/settings.php --check"


def test_delete_user_command_quotes_the_uid(mirror: str) -> None:
    cmd = moodle.delete_user_command(make_site("demo", mirror=mirror), "o'brien; rm -rf /")
    assert "delete_user.php 'o'\"'\"'brien; rm -rf /'" in cmd
    assert cmd.startswith("if [ -e /var/lib/moodle/installed ]")


def test_php_literal() -> None:
    assert moodle.php("a'b\\c") == "'a\\'b\\\\c'"
    assert (moodle.php(True), moodle.php(3)) == ("true", "3")


def test_bigbluebutton_settings_plain_in_script_secret_in_config() -> None:
    site = make_site("institut-mar")
    f = files(site)
    core = wanted(site)["config"]["core"]
    assert core["bigbluebuttonbn_server_url"].startswith("https://") and core["bigbluebuttonbn_checksum_algorithm"]
    assert "bigbluebuttonbn_shared_secret" not in core
    assert "$CFG->bigbluebuttonbn_shared_secret = 's3cr3t-bbb_secret-value';" in \
        f["/srv/moodle/releases/5.3/config.php"].data.decode()


def test_etherpad_pads_plugin_in_the_release_with_its_key_forced(mirror: str) -> None:
    site = make_site("demo", mirror=mirror)
    f = files(site)
    plugin = "/srv/moodle/releases/5.0.6/local/schoolpads"
    assert {f"{plugin}/{name}" for name in ("version.php", "lib.php", "index.php", "db/access.php",
                                            "classes/etherpad.php", "lang/en/local_schoolpads.php")} <= set(f)
    assert all(not f[p].secret and "s3cr3t" not in f[p].data.decode() for p in f if p.startswith(plugin))
    dirs = {d.path: d.mode for d in moodle.layer(site).directories if d.path.startswith(plugin)}
    assert dirs[plugin] == dirs[f"{plugin}/classes/privacy"] == dirs[f"{plugin}/lang/ca"] == "0755"
    config = f["/srv/moodle/releases/5.0.6/config.php"].data.decode()
    assert "'local_schoolpads' => [" in config and "'apikey' => 's3cr3t-etherpad_api-value'," in config
    assert "'padurl' => 'https://pad.demo.escoles.bcn.example'," in config
    assert "'cookiedomain' => 'demo.escoles.bcn.example'," in config
    upgrade = next(s for s in moodle.layer(site).steps if s.name.startswith("moodle database matches"))
    assert "mdl_config_plugins" in upgrade.check and "local_schoolpads" in upgrade.check
    assert f" = {moodle.etherpad.moodle_plugin_version()} ]" in upgrade.check


def test_links_and_teachers_as_course_creators(mirror: str) -> None:
    site = make_site("demo", mirror=mirror)
    core = wanted(site)["config"]["core"]
    assert core["custommenuitems"] == ("Etherpad|/local/schoolpads/index.php?id=1\n"
                                       "Nextcloud|https://cloud.demo.escoles.bcn.example")
    config = files(site)["/srv/moodle/releases/5.0.6/config.php"].data.decode()
    assert "'coursecreatorcontext' => 'cn=teachers,ou=groups,dc=demo,dc=escoles,dc=bcn,dc=example'," in config


def test_no_pads_plugin_without_etherpad(mirror: str) -> None:
    site = make_site("demo", mirror=mirror)
    services = site.school.services.model_copy(update={"etherpad": None})
    site.school = site.school.model_copy(update={"services": services})
    assert not [p for p in files(site) if "schoolpads" in p]
    assert "'local_schoolpads' => [" not in files(site)["/srv/moodle/releases/5.0.6/config.php"].data.decode()
    assert wanted(site)["config"]["core"]["custommenuitems"] == "Nextcloud|https://cloud.demo.escoles.bcn.example"


def test_an_upgrade_dumps_the_database_first(mirror: str) -> None:
    from schoolctl.deploy import nextcloud
    from schoolctl.deploy.database import backup_command

    upgrade = next(s for s in moodle.layer(make_site("demo", mirror=mirror)).steps if "database matches" in s.name)
    assert upgrade.apply.startswith(backup_command("moodle") + " && ")
    assert upgrade.apply.index("pg_dump") < upgrade.apply.index("upgrade.php")
    dump = backup_command("moodle")
    assert "umask 077" in dump and "/var/backups/schoolctl/moodle-" in dump and "tail -n +4" in dump
    # a release change (deploy/upgrade.py): dumped before the switch and before upgrade.php / occ upgrade
    switch = next(s for s in moodle.layer(make_site("demo", mirror=mirror)).steps if "current ->" in s.name).apply
    assert switch.index(dump) < switch.index("ln -sfn releases/5.0.6") < switch.index("upgrade.php --non-interactive")
    nc = next(s for s in nextcloud.layer(make_site("institut-mar")).steps if " in use " in s.name).apply
    assert nc.index(backup_command("nextcloud")) < nc.index("occ upgrade -n")
    repair = next(s for s in nextcloud.layer(make_site("institut-mar")).steps if "occ upgrade" in s.name)
    assert repair.apply.index(backup_command("nextcloud")) < repair.apply.index("occ upgrade -n")


# --- language packs: from the mirror, offline, the site language the school's first ---------------

def _langpack_mirror(tmp_path: Path, packs: dict[str, bytes]) -> str:
    """A mirror folder with Moodle 5.0.6 and the given `langpack/<branch>/<lang>.zip` files."""
    import hashlib

    lines = ["c381bbe8b77dfddb315215d1af38483dd0c36b8672a1cbf8e8b6dd6dd6581440  moodle-5.0.6.tgz"]
    (tmp_path / "moodle-5.0.6.tgz").write_bytes(b"not a real tree")
    for name, data in packs.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
        lines.append(f"{hashlib.sha256(data).hexdigest()}  {name}")
    (tmp_path / "SHA256SUMS").write_text("\n".join(lines) + "\n")
    return str(tmp_path)


def _pack_steps(site: Site) -> dict[str, Any]:
    return {s.name.split()[3]: s for s in moodle.layer(site).steps if s.name.startswith("moodle language pack")}


def test_older_branch_packs_are_installed_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    mirror = _langpack_mirror(tmp_path, {"langpack/4.5/ca.zip": b"ca pack", "langpack/4.5/es.zip": b"es pack",
                                         "langpack/5.3/ca.zip": b"newer than the release: never used"})
    site = make_site("demo", mirror=mirror, version="5.0.6")
    with caplog.at_level("WARNING", logger="schoolctl.deploy.moodle"):
        steps = _pack_steps(site)
    assert sorted(steps) == ["ca", "es"]              # English is built in: no pack
    ca = steps["ca"]
    assert ca.upload == (str(tmp_path / "langpack/4.5/ca.zip"), "/var/lib/moodle/.langpack-ca.zip")
    assert "sha256sum --check" in ca.apply and "python3 -m zipfile -e" in ca.apply
    assert f"{moodle.LANGDIR}/ca" in ca.apply and "purge_caches.php" in ca.apply
    assert "curl" not in ca.apply                     # nothing downloaded by the server
    warnings = [r.getMessage() for r in caplog.records]
    assert any("ca language pack of 4.5" in w and "show in English" in w for w in warnings), warnings
    # the settings step waits for every pack, then sets the first language, the others selectable
    settings = next(s for s in moodle.layer(site).steps if s.name.startswith("moodle settings"))
    assert f"{moodle.LANGDIR}/ca/.schoolctl-sha256" in settings.check
    assert f"{moodle.LANGDIR}/es/.schoolctl-sha256" in settings.check
    assert wanted(site)["lang"] == "ca" and wanted(site)["langs"] == ["ca", "es", "en"]


def test_the_release_branch_pack_wins_without_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    mirror = _langpack_mirror(tmp_path, {"langpack/4.5/ca.zip": b"old", "langpack/5.0/ca.zip": b"own branch"})
    site = make_site("demo", mirror=mirror, version="5.0.6")
    with caplog.at_level("WARNING", logger="schoolctl.deploy.moodle"):
        steps = _pack_steps(site)
    assert steps["ca"].upload[0] == str(tmp_path / "langpack/5.0/ca.zip")
    assert not [r for r in caplog.records if "language pack of" in r.getMessage()]
    # es has no pack at all: Moodle stays English for it, and plan says so
    assert "es" not in steps
    assert any("no Moodle language pack langpack/5.0/es.zip" in r.getMessage() for r in caplog.records)


def test_a_pack_must_match_the_fleet_pin(tmp_path: Path) -> None:
    from schoolctl.errors import ArtifactError

    mirror = _langpack_mirror(tmp_path, {"langpack/4.5/ca.zip": b"ca pack"})
    site = make_site("demo", mirror=mirror, version="5.0.6")
    fleet = site.school.fleet
    arts = fleet.artifacts.model_copy(update={"langpacks": fleet.artifacts.langpacks.model_copy(
        update={"sha256": {"4.5/ca": "f" * 64}})})
    site.school = site.school.model_copy(update={"fleet": fleet.model_copy(update={"artifacts": arts})})
    with pytest.raises(ArtifactError, match=r"langpack/4\.5/ca\.zip.*fleet pins"):
        moodle.layer(site)


def test_a_symlinked_pack_is_refused(tmp_path: Path) -> None:
    from schoolctl.errors import ArtifactError

    mirror = _langpack_mirror(tmp_path, {"langpack/4.5/ca.zip": b"ca pack"})
    (tmp_path / "elsewhere.zip").write_bytes(b"ca pack")
    (tmp_path / "langpack/4.5/ca.zip").unlink()
    (tmp_path / "langpack/4.5/ca.zip").symlink_to(tmp_path / "elsewhere.zip")
    with pytest.raises(ArtifactError, match="symlink"):
        moodle.layer(make_site("demo", mirror=mirror, version="5.0.6"))


def test_the_language_control_reads_moodles_own_setting() -> None:
    from types import SimpleNamespace

    from schoolctl.audit import moodle as a
    from schoolctl.audit.catalogue import Context, Expect, load_all, run_control

    school = make_site("demo").school
    control = load_all()["MOODLE-LANGUAGE"]

    def status(lang: str, installed: list[str]) -> str:
        answer = json.dumps({"settings": {"core/lang": lang}, "translations": installed})
        host = SimpleNamespace(run=lambda cmd: SimpleNamespace(rc=0, stdout=answer if cmd == a.STATE else "",
                                                               stderr=""))
        return run_control(control, Context(host, school, Expect())).status

    assert status("ca", ["ca", "en", "es"]) == "pass"
    assert status("en", ["en"]) == "fail"          # no pack: the fallback to English is caught
    assert status("ca", ["en"]) == "fail"


def test_classes_and_the_first_login(mirror: str) -> None:
    """Moodle binds as cn=moodle, forces a new password on new accounts and writes it to the directory
    through its own change page; cohort leavers keep their work; the import's classes script is installed
    and does nothing before Moodle is."""
    site = make_site("demo", mirror=mirror)
    ldap = moodle.ldap_config(site)
    assert ldap["bind_dn"] == "cn=moodle,dc=demo,dc=escoles,dc=bcn,dc=example"
    assert (ldap["stdchangepassword"], ldap["forcechangepassword"], ldap["passtype"]) == (1, 1, "plaintext")
    config = files(site)["/srv/moodle/releases/5.0.6/config.php"].data.decode()
    assert "$CFG->auth_ldap_forcechangepassword = true;" in config
    assert config.index("auth_ldap_forcechangepassword") < config.index("require_once(__DIR__")
    assert wanted(site)["config"]["enrol_cohort"] == {"unenrolaction": 3}   # ENROL_EXT_REMOVED_SUSPENDNOROLES
    script = files(site)[moodle.CLASSES_SCRIPT]
    text = script.data.decode()
    assert script.mode == "0644" and not script.secret and "require '/srv/moodle/current/config.php';" in text
    assert "cohort_add_member" in text and "cohort_remove_member" in text and "$prefix = 'schoolctl-';" in text
    assert "cohort_delete_cohort" not in text   # a class gone from the roster leaves an empty cohort
    command = moodle.classes_command()
    assert command.startswith(f"if [ -e {moodle.INSTALLED} ] && [ -f {moodle.CLASSES_SCRIPT} ]; then runuser")
    assert '"not installed yet (deploy the school)"' in command
