"""The Jitsi layer as data: a secure domain over LDAP, the school's own coturn only, and config.js /
interface_config.js overriding every upstream default that would reach a third party.

Upstream defaults cited below are from jitsi/jitsi-meet config.js (key comments there, e.g.
"If third party requests are disabled, no other server will be contacted ... // disableThirdPartyRequests:
false", p2p `stunServers: [{ urls: 'stun:meet-jit-si-turnrelay.jitsi.net:443' }]`) and
interface_config.js, and from jitsi-videobridge's debian/postinst (STUN mapping to
meet-jit-si-turnrelay.jitsi.net:443); see docs/PRIVACY-SETTINGS sections 4.1-4.4."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml
from pyinfra.api import Config, Inventory, State
from pyinfra.api.connect import connect_all
from pyinfra.api.deploy import add_deploy

from schoolctl.config.loader import load
from schoolctl.deploy import jitsi, ops
from schoolctl.deploy.apt_repo import APT_SCRIPT_SOURCE
from schoolctl.deploy.school import school_deploy
from schoolctl.deploy.site import Site
from schoolctl.deploy.state import APPS, Layer, merge
from schoolctl.secrets import Secret

SECRETS = {"turn_secret": "TurnSecret-0123456789", "ldap_apps": "AppsSecret-abcdef", "jitsi_focus": "Focus-secret-1",
           "jitsi_jvb": "Jvb-secret-22", "ldap_admin": "Admin-secret-333", "tls_internal_key": "x" * 64}
MEET = "meet.demo.escoles.bcn.example"


def _site(schools: Path, privacy: dict | None = None, repo: bool = True) -> Site:
    fleet = yaml.safe_load((schools / "fleet.yaml").read_text())
    if not repo:
        fleet["apt_repos"]["jitsi"] = None
    fleet["privacy"].update(privacy or {})     # the fleet's floors: the school inherits them
    (schools / "fleet.yaml").write_text(yaml.safe_dump(fleet))
    school = load(schools).schools["demo"]
    return Site(school=school, secret=lambda name, length=32: Secret(SECRETS[name]))


def _layer(site: Site) -> Layer:
    result = jitsi.layer(site)
    assert result is not None
    return result


def files(layer: Layer) -> dict[str, str]:
    return {f.path: f.data.decode() for f in layer.files}


def config_js(layer: Layer) -> str:
    return files(layer)[f"/etc/jitsi/meet/{MEET}-config.js"]


def code(js: str) -> str:
    """The JavaScript without its // comments (which cite upstream's defaults)."""
    return re.sub(r"(^|\s)//.*$", "", js, flags=re.M)


def foreign_hosts(js: str, domain: str) -> list[str]:
    """Every host named in a URL of the code that is not the school's own."""
    hosts = re.findall(r"(?:https?|wss?|stuns?|turns?):(?://)?([a-z0-9.-]+\.[a-z]{2,})", code(js), re.I)
    return [h for h in hosts if not (h == domain or h.endswith("." + domain))]


def js_value(text: str, key: str) -> str:
    m = re.search(rf"^\s*{re.escape(key)}:\s*(.+?),?\s*(//.*)?$", text, re.M)
    assert m, f"{key} not set"
    return m.group(1).rstrip(",")


def test_off_when_the_school_has_no_jitsi(schools: Path) -> None:
    demo = yaml.safe_load((schools / "demo.yaml").read_text())
    del demo["services"]["jitsi"]
    (schools / "demo.yaml").write_text(yaml.safe_dump(demo))
    assert jitsi.layer(_site(schools)) is None


def test_packages_and_services_with_the_upstream_repository(schools: Path) -> None:
    layer = _layer(_site(schools))
    assert layer.round == APPS
    assert layer.packages == ["prosody", "prosody-modules", "lua-ldap", "lua-unbound", "coturn",
                              "jitsi-videobridge2", "jicofo", "jitsi-meet-web", "jitsi-meet-prosody"]
    assert "jitsi-meet-web-config" not in layer.packages   # its postinst writes its own nginx site and certs
    assert [s.name for s in layer.services] == ["prosody", "coturn", "jicofo", "jitsi-videobridge2"]
    pre = {f.path: f.data.decode() for f in layer.pre_files}
    assert pre["/etc/schoolctl/apt/jitsi.sources"].splitlines()[1:] == [
        "Types: deb", "URIs: https://download.jitsi.org", "Suites: stable/",
        "Signed-By: /etc/apt/keyrings/schoolctl-jitsi.gpg"]   # flat repository: no Components line
    assert '"fingerprint": "66A9CD0595D6AFA247290D3BEF8B479E2DC1389C"' in pre["/etc/schoolctl/apt/jitsi.json"]
    assert pre["/usr/local/sbin/schoolctl-apt-repo"] == APT_SCRIPT_SOURCE.read_text()   # the script tested below
    names = [s.name for s in layer.pre_steps]
    assert names[0].startswith("apt repository jitsi") and names[1].startswith("debconf answers")
    assert "I want to use my own certificate" in layer.pre_steps[1].apply
    # the sources file reaches sources.list.d only through the verifying script
    assert not any(f.path.startswith("/etc/apt/sources.list.d/") for f in layer.pre_files)


def test_without_the_repository_only_the_debian_side(schools: Path) -> None:
    layer = _layer(_site(schools, repo=False))
    assert layer.packages == ["prosody", "prosody-modules", "lua-ldap", "lua-unbound", "coturn"]
    assert [s.name for s in layer.services] == ["prosody", "coturn"]
    assert not layer.pre_files and not layer.pre_steps
    got = files(layer)
    assert "jitsi-meet-web must come from the city's own packages" in got[jitsi.NOTE_FILE]
    assert not any(p.startswith(("/etc/jitsi/jicofo", "/etc/jitsi/videobridge")) for p in got)
    prosody = got["/etc/prosody/prosody.cfg.lua"]
    assert "plugin_paths" not in prosody and "muc_lobby_rooms" not in prosody


def test_prosody_secure_domain_over_ldaps(schools: Path) -> None:
    layer = _layer(_site(schools))
    got = files(layer)
    conf = got["/etc/prosody/prosody.cfg.lua"]
    host = conf.split(f'VirtualHost "{MEET}"', 1)[1].split("VirtualHost", 1)[0]
    assert 'authentication = "ldap"' in host                       # Jitsi's template: "jitsi-anonymous"
    assert 'ldap_server = "ldaps://127.0.0.1:636"' in host and "ldap_tls = false" in host
    assert 'ldap_base = "ou=people,dc=demo,dc=escoles,dc=bcn,dc=example"' in host   # not ou=suspended
    assert 'ldap_mode = "bind"' in host
    assert 'ldap_password = FileLine("/etc/prosody/schoolctl/ldap_password")' in host
    assert 'VirtualHost "guest.' not in conf                      # privacy.guests: false
    assert '"muc_lobby_rooms"' in host                              # privacy.lobby: true
    assert 'c2s_interfaces = { "127.0.0.1" }' in conf and 'http_interfaces = { "127.0.0.1" }' in conf
    assert '"s2s"' in conf.split("modules_disabled", 1)[1].split("\n", 1)[0]
    # no secret in the config itself; the secret files are prosody-readable only
    assert SECRETS["ldap_apps"] not in conf and SECRETS["turn_secret"] not in conf
    by_path = {f.path: f for f in layer.files}
    for name in ("ldap_password", "turn_secret"):
        f = by_path[f"/etc/prosody/schoolctl/{name}"]
        assert (f.mode, f.owner, f.group, f.secret) == ("0640", "root", "prosody", True)
    assert by_path["/etc/prosody/prosody.cfg.lua"].check == "prosodyctl check config >/dev/null"


def test_guests_and_lobby_follow_the_policy(schools: Path) -> None:
    layer = _layer(_site(schools, {"guests": True}))
    conf = files(layer)["/etc/prosody/prosody.cfg.lua"]
    guest = conf.split(f'VirtualHost "guest.{MEET}"', 1)[1].split("VirtualHost", 1)[0]
    assert 'authentication = "jitsi-anonymous"' in guest
    assert f'lobby_muc = "lobby.{MEET}"' in guest
    js = config_js(layer)
    assert js_value(js, "anonymousdomain") == f'"guest.{MEET}"'
    assert js_value(js, "requireDisplayName") == "true"
    assert js_value(js, "disableInviteFunctions") == "false"


def test_coturn_own_secret_no_private_peers(schools: Path) -> None:
    layer = _layer(_site(schools))
    f = {x.path: x for x in layer.files}["/etc/turnserver.conf"]
    assert (f.mode, f.owner, f.group, f.secret, f.restart) == ("0640", "root", "turnserver", True, ("coturn",))
    conf = f.data.decode().splitlines()
    for line in ("listening-port=3478", f"realm={MEET}", "use-auth-secret",
                 f"static-auth-secret={SECRETS['turn_secret']}", "no-cli", "no-tcp-relay", "no-multicast-peers"):
        assert line in conf
    denied = [x.split("=", 1)[1] for x in conf if x.startswith("denied-peer-ip=")]
    for net in ("10.0.0.0-10.255.255.255", "172.16.0.0-172.31.255.255", "192.168.0.0-192.168.255.255",
                "127.0.0.0-127.255.255.255", "169.254.0.0-169.254.255.255", "100.64.0.0-100.127.255.255",
                "::1", "fc00::-fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"):
        assert net in denied


def test_config_js_overrides_upstream_defaults(schools: Path) -> None:
    js = config_js(_layer(_site(schools)))
    expected = {
        "disableThirdPartyRequests": "true",        # upstream: false
        "gravatar": "{ disabled: true }",           # upstream: gravatar on
        "analytics": "{ disabled: true, rtcstatsEnabled: false }",
        "disableDeepLinking": "true",               # upstream: false
        "deeplinking": "{ disabled: true }",
        "recordingService": "{ enabled: false, sharingEnabled: false }",
        "fileRecordingsEnabled": "false",
        "liveStreaming": "{ enabled: false }",
        "localRecording": "{ disable: true, notifyAllParticipants: true }",
        "transcription": "{ enabled: false }",
        "doNotStoreRoom": "true",
        "prejoinConfig": "{ enabled: true }",
        "requireDisplayName": "false",
        "disableInviteFunctions": "true",
        "defaultLanguage": '"ca"',
        "giphy": "{ enabled: false }",
        "startWithVideoMuted": "true",
    }
    for key, value in expected.items():
        assert js_value(js, key) == value, key
    assert "enabled: false," in js.split("p2p:", 1)[1].split("}", 1)[0]   # upstream: p2p on
    assert f'stunServers: [ {{ urls: "stun:{MEET}:3478" }} ]' in js       # upstream: meet-jit-si-turnrelay
    assert "anonymousdomain" not in js
    assert "callStatsID" not in js and not foreign_hosts(js, "demo.escoles.bcn.example")
    assert 'bosh: "https://meet.demo.escoles.bcn.example/http-bind"' in js


def test_the_foreign_host_finder_finds_upstream_defaults() -> None:
    upstream = "p2p: {\n    stunServers: [\n        { urls: 'stun:meet-jit-si-turnrelay.jitsi.net:443' }\n    ],\n},"
    assert foreign_hosts(upstream, "demo.escoles.bcn.example") == ["meet-jit-si-turnrelay.jitsi.net"]
    assert foreign_hosts("// { urls: 'stun:stun.l.google.com:19302' }", "demo.escoles.bcn.example") == []


def test_recordings_allowed_still_no_jitsi_recording(schools: Path) -> None:
    js = config_js(_layer(_site(schools, {"recordings": True, "recording_retention_days": 3})))
    js_allowed = config_js(_layer(_site(schools, {})))
    assert js == js_allowed
    assert js_value(js, "localRecording") == "{ disable: true, notifyAllParticipants: true }"


def test_interface_config_has_no_promotion(schools: Path) -> None:
    text = files(_layer(_site(schools)))[f"/etc/jitsi/meet/{MEET}-interface_config.js"]
    for key, value in {"MOBILE_APP_PROMO": "false", "SHOW_JITSI_WATERMARK": "false", "SHOW_POWERED_BY": "false",
                       "SHOW_CHROME_EXTENSION_BANNER": "false", "RECENT_LIST_ENABLED": "false",
                       "JITSI_WATERMARK_LINK": "''"}.items():
        assert js_value(text, key) == value, key
    assert not foreign_hosts(text, "demo.escoles.bcn.example") and "https://demo.escoles" in text


def test_jvb_and_jicofo_configs(schools: Path) -> None:
    layer = _layer(_site(schools))
    by_path = {f.path: f for f in layer.files}
    jvb = by_path["/etc/jitsi/videobridge/jvb.conf"].data.decode()
    assert "stun { addresses = [ ] }" in jvb and "meet-jit-si" not in jvb.split("#")[0]
    assert not re.search(r"^[^#]*jitsi\.net", jvb, re.M)
    assert 'host = "127.0.0.1"' in jvb and "rest { enabled = false }" in jvb
    props = by_path["/etc/jitsi/videobridge/sip-communicator.properties"].data.decode()
    assert "STUN_MAPPING_HARVESTER_ADDRESSES" not in "".join(x for x in props.splitlines() if not x.startswith("#"))
    jicofo = by_path["/etc/jitsi/jicofo/jicofo.conf"].data.decode()
    assert f'login-url = "{MEET}"' in jicofo and "enabled = true" in jicofo
    for path in ("/etc/jitsi/videobridge/jvb.conf", "/etc/jitsi/jicofo/jicofo.conf"):
        assert by_path[path].secret and by_path[path].mode == "0640"


def test_nginx_site(schools: Path) -> None:
    f = {x.path: x for x in _layer(_site(schools)).files}["/etc/nginx/sites-enabled/schoolctl-jitsi.conf"]
    text = f.data.decode()
    assert f"server_name {MEET};" in text
    assert f"alias /etc/jitsi/meet/{MEET}-config.js;" in text
    assert "proxy_pass http://127.0.0.1:5280/http-bind;" in text
    assert "proxy_pass http://127.0.0.1:5280/xmpp-websocket;" in text
    assert "proxy_pass http://127.0.0.1:9090/colibri-ws/" in text
    assert f"connect-src 'self' wss://{MEET}" in text and "camera=(self)" in text
    assert "X-Forwarded-For" not in text    # prosody never sees pupils' addresses


def test_apt_key_script_checks_the_fingerprint(tmp_path: Path) -> None:
    """The script's fingerprint parser on a real v4 key made here with gpg (skipped without gpg)."""
    import importlib.util
    import shutil

    if not shutil.which("gpg"):
        pytest.skip("gpg not installed")
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    env = {"GNUPGHOME": str(home), "PATH": "/usr/bin:/bin"}
    for uid in ("a <a@example.org>", "b <b@example.org>"):
        subprocess.run(["gpg", "--batch", "--passphrase", "", "--quick-gen-key", uid, "rsa2048", "sign", "never"],
                       env=env, check=True, capture_output=True)
    listing = subprocess.run(["gpg", "--with-colons", "--list-keys"], env=env, check=True, capture_output=True,
                             text=True).stdout
    fprs = [line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:")]
    one = subprocess.run(["gpg", "--armor", "--export", "a@example.org"], env=env, check=True,
                         capture_output=True).stdout
    both = subprocess.run(["gpg", "--export"], env=env, check=True, capture_output=True).stdout
    spec = importlib.util.spec_from_file_location("apt_repo_script", APT_SCRIPT_SOURCE)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    key = mod.dearmor(one)
    assert mod.primary_fingerprints(key) == [fprs[0]]
    assert mod.verified(key, fprs[0]) and not mod.verified(key, fprs[1])
    assert not mod.verified(both, fprs[0])    # a second, unpinned key in the file is refused


@pytest.mark.parametrize("privacy", [{}, {"guests": True, "lobby": False}])
def test_whole_plan_merges_with_the_platform(schools: Path, privacy: dict) -> None:
    """base + firewall + identity + web + jitsi merge without contradictions, and pyinfra builds the
    operations against a fake host (no connection)."""
    from schoolctl.deploy import base, firewall, identity, web

    site = _site(schools, privacy)
    site.acme_directory = "https://acme.invalid/dir"
    layers = [base.layer(site), firewall.layer(site), identity.layer(site), web.layer(site), jitsi.layer(site)]
    rounds = merge([x for x in layers if x is not None])
    assert [r.number for r in rounds] == [0, 1]
    inbound = {(r.proto, r.port) for r in firewall.inbound(site)}
    assert {("udp", 10000), ("udp", 3478), ("tcp", 3478)} <= inbound
    inventory = Inventory(([("@fake/demo", {"fake_delay": 0, "fake_delay_jitter": 0})], {}))
    state = State(inventory=inventory, config=Config(), check_for_changes=True)
    connect_all(state)
    host = inventory.get_host("@fake/demo")
    ops.reset_changes(host.name)
    add_deploy(state, school_deploy, rounds)
    found = ops.changes(host.name)
    paths = {c["what"] for c in found if c["kind"] == "file"}
    assert {"/etc/prosody/prosody.cfg.lua", "/etc/turnserver.conf", f"/etc/jitsi/meet/{MEET}-config.js",
            "/etc/nginx/sites-enabled/schoolctl-jitsi.conf", "/etc/jitsi/videobridge/jvb.conf"} <= paths
    steps = {c["what"] for c in found if c["kind"] == "step"}
    assert any(s.startswith("apt repository jitsi") for s in steps)
    executed = " ".join(str(c) for c in host.connector.executed_commands)
    assert not any(v in executed for v in SECRETS.values())
