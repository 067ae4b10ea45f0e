"""The Nextcloud layer rendered for example schools: the settings JSON occ imports, quota, LDAP,
the nginx site, secrets only in secret files, and the leaver command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from schoolctl.config.loader import load
from schoolctl.deploy import nextcloud
from schoolctl.deploy.site import Site
from schoolctl.deploy.state import APPS, File
from schoolctl.secrets import Secret

SCHOOLS = Path(__file__).resolve().parents[2] / "schools"
MIRROR_SUMS = ("81078ba3a112c9ad116f8d2c438b2fe98ef5acd29e10ed9c94db60a63de34c01  nextcloud-31.0.11.tar.bz2\n"
               "2e310ef09ba9cfb857767ff112a439e83120f84c0b27d384800ee1ed9f8906d3  etherpad-lite-2.5.3.tar.gz\n")


def secret(name: str, length: int = 32) -> Secret:
    return Secret(f"S3CRET-{name}-xyzzy")


@pytest.fixture
def mirror(tmp_path: Path) -> str:
    (tmp_path / "SHA256SUMS").write_text(MIRROR_SUMS)
    return str(tmp_path)


def make_site(school_id: str, mirror: str | None = None, **updates: Any) -> Site:
    school = load(SCHOOLS).select([school_id])[0]
    school = school.model_copy(update={"versions": {**school.versions, "nextcloud": "31.0.11"}})
    if updates:
        school = school.model_copy(update=updates)
    return Site(school=school, secret=secret, mirror=mirror)


def files(site: Site) -> dict[str, File]:
    return {f.path: f for f in nextcloud.layer(site).files}


def wanted(site: Site) -> dict[str, Any]:
    return json.loads(files(site)[nextcloud.WANTED].data)


def test_off_without_nextcloud(mirror):
    site = make_site("demo", mirror)
    off = site.school.model_copy(update={"services": site.school.services.model_copy(update={"nextcloud": None})})
    assert nextcloud.layer(Site(school=off, secret=secret)) is None


def test_privacy_defaults_for_a_school(mirror):
    site = make_site("demo", mirror)
    system = wanted(site)["system"]
    assert system["has_internet_connection"] is False
    assert system["appstoreenabled"] is False and system["updatechecker"] is False
    assert system["upgrade.disable-web"] is True
    assert system["lookup_server"] == "" and system["gs.federation"] == "internal"
    assert system["skeletondirectory"] == "" and system["knowledgebaseenabled"] is False
    assert system["auth.bruteforce.protection.enabled"] is True
    assert system["simpleSignUpLink.shown"] is False
    assert system["trusted_domains"] == ["cloud.demo.escoles.bcn.example"]
    assert system["overwriteprotocol"] == "https"
    assert system["default_language"] == "ca" and system["default_phone_region"] == "ES"
    assert system["logfile"] == "/var/log/nextcloud/nextcloud.log" and system["log_rotate_size"] == 0
    assert system["loglevel"] == 2
    assert system["memcache.locking"] == "\\OC\\Memcache\\Redis"
    assert system["redis"]["host"] == "/run/redis/redis-server.sock"
    apps = wanted(site)["apps"]
    assert apps["files_sharing"]["lookupServerUploadEnabled"] == "no"
    assert apps["files_sharing"]["lookupServerEnabled"] == "no"
    assert apps["core"]["backgroundjobs_mode"] == "cron"
    assert "survey_client" in nextcloud.DISABLED_APPS and "weather_status" in nextcloud.DISABLED_APPS


def test_quota_and_language_per_school(mirror):
    assert wanted(make_site("demo", mirror))["apps"]["files"]["default_quota"] == "2 GB"
    school = load(SCHOOLS).select(["demo"])[0]
    services = school.services.model_copy(
        update={"nextcloud": school.services.nextcloud.model_copy(update={"default_quota": "10GB"})})
    site = make_site("demo", mirror, languages=["es", "ca"], services=services)
    w = wanted(site)
    assert w["apps"]["files"]["default_quota"] == "10 GB"
    assert w["system"]["default_language"] == "es" and w["system"]["default_locale"] == "es_ES"


def test_log_retention_follows_policy(mirror):
    site = make_site("demo", mirror)
    text = files(site)["/etc/logrotate.d/nextcloud"].data.decode()
    assert "rotate 7" in text and "maxage 7" in text and "/var/log/nextcloud/*.log" in text


def test_ldap_over_tls_with_uid_login(mirror):
    ldap = wanted(make_site("demo", mirror))["apps"]["user_ldap"]
    assert ldap["s01ldap_host"] == "ldaps://127.0.0.1" and ldap["s01ldap_port"] == "636"
    assert ldap["s01ldap_turn_off_cert_check"] == "0"
    assert ldap["s01ldap_dn"] == "cn=apps,dc=demo,dc=escoles,dc=bcn,dc=example"
    assert ldap["s01ldap_base_users"] == "ou=people,dc=demo,dc=escoles,dc=bcn,dc=example"
    # nobody logs in on the letter's password (pwdReset): Moodle makes them change it first
    assert ldap["s01ldap_login_filter"] == "(&(objectClass=inetOrgPerson)(!(pwdReset=TRUE))(uid=%uid))"
    assert ldap["s01ldap_expert_username_attr"] == "uid"
    assert ldap["s01ldap_configuration_active"] == "1"
    assert not any("password" in k for k in ldap)


def test_secrets_only_in_secret_files(mirror):
    site = make_site("demo", mirror)
    layer = nextcloud.layer(site)
    for f in layer.files:
        if "S3CRET-" in f.data.decode() or "UzNDUkVU" in f.data.decode():   # plain or base64
            assert f.secret and f.mode == "0600" and f.owner == "root", f.path
    for s in layer.steps:
        assert "S3CRET-" not in s.check + s.apply, s.name
    sec = json.loads(files(site)[nextcloud.SECRET_JSON].data)
    assert sec["system"]["dbpassword"] == "S3CRET-db_nextcloud-xyzzy"
    assert sec["apps"]["user_ldap"]["s01ldap_agent_password"] == "UzNDUkVULWxkYXBfYXBwcy14eXp6eQ=="


def test_layer_shape(mirror):
    site = make_site("demo", mirror)
    layer = nextcloud.layer(site)
    assert layer.round == APPS
    names = [s.name for s in layer.steps]
    assert names[0].startswith("nextcloud 31.0.11 release")
    assert any("maintenance:install" in n for n in names) and any("config:import" in n for n in names)
    install = next(s for s in layer.steps if "maintenance:install" in s.name)
    assert "'installed' => true" in install.check
    assert "--database pgsql" in install.apply and "$(cat /etc/schoolctl/secrets/db_nextcloud)" in install.apply
    dirs = {d.path: d for d in layer.directories}
    assert dirs["/var/lib/nextcloud/data"].mode == "0770" and dirs["/var/lib/nextcloud/data"].owner == "nextcloud"
    site_conf = files(site)["/etc/nginx/sites-enabled/schoolctl-nextcloud.conf"].data.decode()
    assert "server_name cloud.demo.escoles.bcn.example;" in site_conf
    assert "fastcgi_pass unix:/run/php/php8.4-fpm-nextcloud.sock;" in site_conf
    assert "location = /.well-known/caldav" in site_conf and "root /srv/nextcloud/current;" in site_conf
    timer = files(site)["/etc/systemd/system/nextcloud-cron.timer"].data.decode()
    assert "OnUnitActiveSec=5min" in timer
    script = files(site)[nextcloud.CONFIG_SCRIPT].data.decode()
    compile(script, "schoolctl-nextcloud-config", "exec")


def test_delete_user_command():
    site = make_site("demo")
    cmd = nextcloud.delete_user_command(site, "marta.puig")
    assert "occ user:delete marta.puig" in cmd and "ldap:check-user --force marta.puig" in cmd
    assert cmd.startswith("if ")
    with pytest.raises(ValueError):
        nextcloud.delete_user_command(site, "x; rm -rf /")


# --- the audit controls on canned host answers ---------------------------------------------------

class _Host:
    """A host answering the Nextcloud evidence commands with canned output."""

    def __init__(self, answers: dict[str, str]):
        self.answers = answers

    def run(self, command: str):
        from types import SimpleNamespace

        return SimpleNamespace(rc=0, stdout=self.answers.get(command, ""), stderr="")


def _audit(system: dict[str, Any], apps: dict[str, dict[str, str]] | None = None) -> dict[str, str]:
    from schoolctl.audit import host as h
    from schoolctl.audit import nextcloud as a
    from schoolctl.audit.catalogue import Context, Expect, load_all, run_control

    good = json.loads(json.dumps(wanted(make_site("demo"))))   # the values the deploy sets
    good["system"].update(system)
    for app, values in (apps or {}).items():
        good["apps"].setdefault(app, {}).update(values)
    answers = {a.STATE: json.dumps(good), a.DATA: "/var/lib/nextcloud/data\n770 nextcloud\nno-acl\n",
               h.LOGROTATE: "@@file /etc/logrotate.conf\ninclude /etc/logrotate.d\n@@file /etc/logrotate.d/nextcloud\n"
                            + files(make_site("demo"))["/etc/logrotate.d/nextcloud"].data.decode()}
    school = make_site("demo").school
    ctx = Context(_Host(answers), school, Expect())
    return {cid: run_control(c, ctx).status for cid, c in load_all().items()
            if c.check.__module__.endswith(".nextcloud")}


@pytest.fixture
def demo_mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo school's release from a mirror folder (no controller-side download)."""
    monkeypatch.setattr(nextcloud.artifacts, "release", lambda site, app: nextcloud.artifacts.Release(
        app, "31.0.11", "nextcloud-31.0.11.tar.bz2", "0" * 64, str(tmp_path / "x"), upload=True))


def test_controls_pass_on_the_deployed_values(demo_mirror):
    statuses = _audit({})
    assert statuses and set(statuses.values()) == {"pass"}, statuses


@pytest.mark.parametrize(("system", "apps", "cid"), [
    ({"has_internet_connection": True}, None, "NEXTCLOUD-NO-INTERNET"),
    ({"appstoreenabled": True}, None, "NEXTCLOUD-NO-APPSTORE"),
    ({"updatechecker": True}, None, "NEXTCLOUD-NO-UPDATE-CHECK"),
    ({}, {"survey_client": {"enabled": "yes"}}, "NEXTCLOUD-NO-SURVEY"),
    ({}, {"files_sharing": {"lookupServerUploadEnabled": "yes"}}, "NEXTCLOUD-NO-LOOKUP-SERVER"),
    ({"skeletondirectory": "/srv/nextcloud/current/core/skeleton"}, None, "NEXTCLOUD-EMPTY-SKELETON"),
    ({"knowledgebaseenabled": True}, None, "NEXTCLOUD-NO-KNOWLEDGEBASE"),
    ({}, {"weather_status": {"enabled": "yes"}}, "NEXTCLOUD-NO-THIRD-PARTY-APPS"),
    ({"auth.bruteforce.protection.enabled": False}, None, "NEXTCLOUD-BRUTEFORCE"),
    ({"loglevel": 0}, None, "NEXTCLOUD-LOGLEVEL"),
    ({"log_rotate_size": 104857600}, None, "NEXTCLOUD-LOG-RETENTION"),
    ({}, {"user_ldap": {"s01ldap_host": "ldap://127.0.0.1"}}, "NEXTCLOUD-LDAP-TLS"),
    ({"default_language": "en", "default_locale": "en_GB"}, None, "NEXTCLOUD-LANGUAGE"),
])
def test_each_control_fails_alone_on_its_value(demo_mirror, system, apps, cid):
    failing = sorted(k for k, v in _audit(system, apps).items() if v != "pass")
    assert failing == [cid]


def test_after_install_the_admin_overview_is_clean(demo_mirror):
    """Indices and mimetype migrations once per release, after the settings; upstream's two headers."""
    layer = nextcloud.layer(make_site("demo"))
    names = [s.name for s in layer.steps]
    tidy = layer.steps[-1]
    assert names.index(tidy.name) > next(i for i, n in enumerate(names) if "config:import" in n)
    assert "db:add-missing-indices" in tidy.apply and "maintenance:repair --include-expensive" in tidy.apply
    assert tidy.check == "grep -qxF 31.0.11 /var/lib/schoolctl/nextcloud/tidied"
    conf = {f.path: f for f in layer.files}["/etc/nginx/sites-enabled/schoolctl-nextcloud.conf"].data.decode()
    assert 'add_header X-Frame-Options "SAMEORIGIN" always;' in conf
    assert 'add_header X-Permitted-Cross-Domain-Policies "none" always;' in conf
    assert "fastcgi_hide_header X-Frame-Options;" in conf   # one header, not Nextcloud's and nginx's both


def test_class_folders_script(mirror):
    """Installed root-only; talks to this server's own name, pinned to its own certificate, admin password
    from its file (never in the script); nothing before Nextcloud is installed."""
    from schoolctl.deploy.web import CERT

    f = files(make_site("demo", mirror))[nextcloud.CLASSES_SCRIPT]
    text = f.data.decode()
    assert f.mode == "0700" and 'BASE = "https://cloud.demo.escoles.bcn.example"' in text
    assert f"CERT = {json.dumps(CERT)}" in text and "VERIFY_X509_PARTIAL_CHAIN" in text
    assert 'PASSWORD_FILE = "/etc/schoolctl/secrets/nextcloud_admin"' in text and 'FOLDER = "Classes"' in text
    assert "ProxyHandler({})" in text and "PERMISSIONS = 15" in text
    compile(text, nextcloud.CLASSES_SCRIPT, "exec")
    assert nextcloud.classes_command().startswith("if [ -f /srv/nextcloud/current/config/config.php ]")
