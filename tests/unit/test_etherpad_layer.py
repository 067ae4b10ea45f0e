"""The Etherpad layer rendered for example schools: settings.json, npm settings, the hardened unit,
the nginx site, and secrets only in secret files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from schoolctl.config.loader import load
from schoolctl.deploy import etherpad
from schoolctl.deploy.site import Site
from schoolctl.deploy.state import APPS, File
from schoolctl.secrets import Secret

SCHOOLS = Path(__file__).resolve().parents[2] / "schools"
SUMS = "2e310ef09ba9cfb857767ff112a439e83120f84c0b27d384800ee1ed9f8906d3  etherpad-lite-2.5.3.tar.gz\n"


def secret(name: str, length: int = 32) -> Secret:
    return Secret(f"S3CRET-{name}-xyzzy")


@pytest.fixture
def site(tmp_path: Path) -> Site:
    (tmp_path / "SHA256SUMS").write_text(SUMS)
    school = load(SCHOOLS).select(["demo"])[0]  # on Etherpad 2.5.3 (Debian's Node.js): the 3.x steps are in
    school = school.model_copy(update={"versions": {**school.versions, "etherpad": "2.5.3"}})  # test_upgrade_steps
    return Site(school=school, secret=secret, mirror=str(tmp_path), proxy="http://10.213.0.1:8888")


def files(site: Site) -> dict[str, File]:
    return {f.path: f for f in etherpad.layer(site).files}


def settings(site: Site) -> dict[str, Any]:
    return json.loads(files(site)[etherpad.SETTINGS].data)


def test_settings_for_a_school(site):
    s = settings(site)
    assert s["ip"] == "127.0.0.1" and s["port"] == 9001 and s["trustProxy"] is True
    assert s["disableIPlogging"] is True and s["loglevel"] == "WARN"
    assert s["authenticationMethod"] == "apikey"
    assert s["requireSession"] is True and s["editOnly"] is True
    assert s["showSettingsInAdminPage"] is False and s["enableMetrics"] is False
    assert s["updateServer"].startswith("http://127.0.0.1:")
    assert s["suppressErrorsInPadText"] is True and s["minify"] is True and s["skinName"] == "colibris"
    assert s["socketTransportProtocols"] == ["websocket", "polling"]
    assert s["dbType"] == "postgres"
    assert s["dbSettings"] == {"user": "etherpad", "host": "127.0.0.1", "port": 5432,
                               "password": "S3CRET-db_etherpad-xyzzy", "database": "etherpad"}
    assert s["users"] == {"admin": {"password": "S3CRET-etherpad_admin-xyzzy", "is_admin": True}}
    assert s["sso"]["clients"] == []
    assert "etherpad.org" not in s["defaultPadText"] and s["padOptions"]["lang"] == "ca"


def test_secrets_only_in_secret_files(site):
    layer = etherpad.layer(site)
    for f in layer.files:
        if "S3CRET-" in f.data.decode():
            assert f.secret and f.mode == "0600", f.path
    assert files(site)[etherpad.APIKEY].data == b"S3CRET-etherpad_api-xyzzy"
    for s in [*layer.steps, *layer.pre_steps]:
        assert "S3CRET-" not in s.check + s.apply, s.name


def test_npm_goes_through_the_proxy_with_the_system_cas(site):
    rc = files(site)["/etc/npmrc"].data.decode()
    assert "proxy=http://10.213.0.1:8888" in rc and "https-proxy=http://10.213.0.1:8888" in rc
    assert "cafile=/etc/ssl/certs/ca-certificates.crt" in rc
    assert "registry=" not in rc
    assert files(site)["/var/lib/etherpad/.npmrc"].data.decode() == rc


def test_unit_is_hardened(site):
    unit = files(site)["/etc/systemd/system/etherpad.service"].data.decode()
    for line in ("User=etherpad", "NoNewPrivileges=true", "ProtectSystem=strict", "ProtectHome=true",
                 "PrivateTmp=true", "Environment=NODE_ENV=production", "Environment=SCARF_ANALYTICS=false",
                 "WorkingDirectory=/srv/etherpad/current",
                 "ExecStart=/usr/local/lib/schoolctl/etherpad-start --settings /etc/etherpad/settings.json "
                 "--apikey /etc/etherpad/APIKEY.txt",
                 "ReadWritePaths=/srv/etherpad/current/var /var/lib/etherpad"):
        assert line in unit.splitlines(), line


def test_steps_and_site(site):
    layer = etherpad.layer(site)
    assert layer.round == APPS and {"nodejs", "npm"} <= set(layer.packages)
    names = [s.name for s in layer.steps]
    assert names == ["pnpm 10.20.0", names[1], "etherpad 2.5.3 built (pnpm install, build:etherpad)",
                     "etherpad 2.5.3 in use (an upgrade: dumped first, rolled back on failure)", "etherpad running"]
    build = layer.steps[2]
    assert "--frozen-lockfile" in build.apply and "build:etherpad" in build.apply
    assert "SCARF_ANALYTICS=false" in build.apply
    conf = files(site)["/etc/nginx/sites-enabled/schoolctl-etherpad.conf"].data.decode()
    assert "server_name pad.demo.escoles.bcn.example;" in conf and "proxy_pass http://127.0.0.1:9001;" in conf
    assert "proxy_set_header Upgrade $http_upgrade;" in conf
    assert "frame-ancestors 'self' https://moodle.demo.escoles.bcn.example https://cloud.demo.escoles.bcn.example" \
        in conf
    assert "map $http_upgrade $etherpad_connection" in files(site)[etherpad.WS_MAP].data.decode()


def test_no_proxy_no_proxy_lines(site):
    site.proxy = None
    settings_lines = [ln for ln in files(site)["/etc/npmrc"].data.decode().splitlines() if not ln.startswith("#")]
    assert not [ln for ln in settings_lines if "proxy" in ln]


# --- the audit controls on canned host answers ---------------------------------------------------

def _summary(**changes: Any) -> dict[str, Any]:
    s = {"unit": True, "settings_file": etherpad.SETTINGS, "apikey_file": etherpad.APIKEY,
         "environment": "NODE_ENV=production SCARF_ANALYTICS=false HOME=/var/lib/etherpad",
         "ip": "127.0.0.1", "port": 9001, "disableIPlogging": True, "authenticationMethod": "apikey",
         "showSettingsInAdminPage": False, "updateServer": etherpad.UPDATE_SERVER, "requireSession": True,
         "requireAuthentication": False, "editOnly": True, "enableMetrics": False, "loglevel": "WARN",
         "trustProxy": True, "users": {"admin": {"is_admin": True, "password_set": True, "weak": False,
                                                 "short": False}},
         "sso_clients": [], "apikey": {"mode": "0o600", "owner": "etherpad", "length": 32}, "pad_lang": "ca"}
    s.update(changes)
    return s


def _statuses(summary: dict[str, Any], listen: str = "LISTEN 0 511 127.0.0.1:9001 0.0.0.0:* users:((\"node\"))") \
        -> dict[str, str]:
    from types import SimpleNamespace

    from schoolctl.audit import etherpad as a
    from schoolctl.audit.catalogue import Context, Expect, load_all, run_control

    answers = {a.STATE: json.dumps(summary), a.LISTEN: listen}
    host = SimpleNamespace(run=lambda cmd: SimpleNamespace(rc=0, stdout=answers.get(cmd, ""), stderr=""))
    school = load(SCHOOLS).select(["demo"])[0]
    ctx = Context(host, school, Expect())
    return {cid: run_control(c, ctx).status for cid, c in load_all().items()
            if c.check.__module__.endswith(".etherpad")}


def test_controls_pass_on_the_deployed_values():
    statuses = _statuses(_summary())
    assert statuses and set(statuses.values()) == {"pass"}, statuses


@pytest.mark.parametrize(("changes", "listen", "cid"), [
    ({"disableIPlogging": False}, None, "ETHERPAD-NO-IP-LOGGING"),
    ({"loglevel": "INFO"}, None, "ETHERPAD-LOGLEVEL"),
    ({"authenticationMethod": "sso"}, None, "ETHERPAD-API-KEY"),
    ({"apikey": {"mode": "0o644", "owner": "etherpad", "length": 32}}, None, "ETHERPAD-API-KEY"),
    ({"sso_clients": [{"id": "admin_client", "weak_secret": True}]}, None, "ETHERPAD-API-KEY"),
    ({"users": {"admin": {"is_admin": True, "password_set": True, "weak": True, "short": True}}}, None,
     "ETHERPAD-ADMIN-PROTECTED"),
    ({"showSettingsInAdminPage": True}, None, "ETHERPAD-SETTINGS-HIDDEN"),
    ({"requireSession": False}, None, "ETHERPAD-PADS-NEED-SESSION"),
    ({"enableMetrics": True}, None, "ETHERPAD-NO-METRICS"),
    ({"updateServer": "https://static.etherpad.org"}, None, "ETHERPAD-NO-UPDATE-CHECK"),
    ({"environment": "NODE_ENV=production"}, None, "ETHERPAD-NO-UPDATE-CHECK"),
    ({"ip": "0.0.0.0"}, "LISTEN 0 511 0.0.0.0:9001 0.0.0.0:* users:((\"node\"))", "ETHERPAD-LOOPBACK-ONLY"),
    ({"pad_lang": "en"}, None, "ETHERPAD-LANGUAGE"),
])
def test_each_control_fails_alone_on_its_value(changes, listen, cid):
    statuses = _statuses(_summary(**changes), *([listen] if listen else []))
    assert sorted(k for k, v in statuses.items() if v != "pass") == [cid]


def test_leaver_loses_their_author_name_key_never_on_argv(site):
    from schoolctl.deploy import etherpad

    cmd = etherpad.delete_user_command(site, "marta.puig")
    assert "printf 'apikey=%s&%s' \"$(cat /etc/etherpad/APIKEY.txt)\" 'authorMapper=moodle-marta.puig&name=" in cmd
    assert "--data @- http://127.0.0.1:9001/api/1.3.0/createAuthorIfNotExistsFor" in cmd
    with pytest.raises(ValueError):
        etherpad.delete_user_command(site, "o'brien; rm -rf /")
