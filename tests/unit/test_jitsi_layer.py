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
           "jitsi_jvb": "Jvb-secret-22", "ldap_admin": "Admin-secret-333", "tls_internal_key": "x" * 64,
           "ldap_moodle": "Moodle-secret-4444"}
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
    # jicofo and the videobridge are enabled, and started by the steps only after their XMPP accounts
    # exist (before, both retry their login without pause for the rest of the round)
    assert [s.start for s in layer.services] == [True, True, False, False]
    names = [s.name for s in layer.steps]
    assert names.index("XMPP accounts focus and jvb on auth.meet.demo.escoles.bcn.example") \
        < names.index("jicofo runs with its current configuration") \
        < names.index("jitsi-videobridge2 runs with its current configuration")
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
    # both http servers on loopback: colibri-ws through nginx, the REST API (/colibri/stats) local only
    assert jvb.count('host = "127.0.0.1"') == 2 and "rest { enabled = true }" in jvb
    assert "sctp { enabled = false }" in jvb and "udp { port = 10000 }" in jvb
    assert f'domains = [ "{MEET}:443" ]' in jvb and 'server-id = "default-id"' in jvb
    props = by_path["/etc/jitsi/videobridge/sip-communicator.properties"].data.decode()
    assert "STUN_MAPPING_HARVESTER_ADDRESSES" not in "".join(x for x in props.splitlines() if not x.startswith("#"))
    jicofo = by_path["/etc/jitsi/jicofo/jicofo.conf"].data.decode()
    assert f'login-url = "{MEET}"' in jicofo and "enabled = true" in jicofo
    assert re.search(r"sctp \{\s+#[^\n]*\n\s+enabled = false", jicofo)
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


# --- the second source: the city's own tarballs in the mirror's jitsi/ folder --------------------------

WEB = "1.0.8438-528-g566b3ba2d"
TARBALLS = {"jitsi-videobridge2": "2.3-307-g4bb0aead1", "jicofo": "1.0-1189", "jitsi-meet-web": WEB,
            "jitsi-meet-prosody": WEB, "jitsi-meet-web-config": WEB}


def _mirror(tmp: Path, extra: str = "") -> Path:
    mirror = tmp / "mirror"
    (mirror / "jitsi").mkdir(parents=True)
    lines = []
    for i, (package, version) in enumerate(TARBALLS.items()):
        (mirror / "jitsi" / f"{package}-{version}.tar.gz").write_bytes(b"x")
        lines.append(f"{i:064x}  jitsi/{package}-{version}.tar.gz")
    (mirror / "SHA256SUMS").write_text("\n".join(lines) + "\n" + extra)
    return mirror


def test_the_mirror_source_when_the_apt_repository_is_out_of_reach(schools: Path, tmp_path: Path) -> None:
    site = _site(schools)
    site.upstream_apt, site.mirror = False, str(_mirror(tmp_path))
    layer = _layer(site)
    assert layer.packages == ["prosody", "prosody-modules", "lua-ldap", "lua-unbound", "coturn",
                              "openjdk-21-jre-headless", "libssl3t64", "procps", "uuid-runtime",
                              "openssl", "lua-sec", "lua-basexx", "lua-luaossl", "lua-cjson", "lua-inspect"]
    assert [s.name for s in layer.services] == ["prosody", "coturn", "jicofo", "jitsi-videobridge2"]
    assert not layer.pre_files    # no apt repository, no debconf
    users, *installs = layer.pre_steps
    assert "useradd -r -g jitsi" in users.apply and "groupadd --system jitsi" in users.apply
    assert [s.name.split(" from ")[0] for s in installs] == [
        "jitsi-videobridge2 2.3-307-g4bb0aead1", "jicofo 1.0-1189", "jitsi-meet-web 1.0.8438-528-g566b3ba2d",
        "jitsi-meet-prosody 1.0.8438-528-g566b3ba2d"]
    jvb = installs[0]
    assert jvb.upload and jvb.upload[0].endswith("/jitsi/jitsi-videobridge2-2.3-307-g4bb0aead1.tar.gz")
    assert f"{0:064x}" in jvb.check and "sha256sum --check" in jvb.apply
    assert "tar -xzf /root/.schoolctl-download-jitsi-videobridge2.tar.gz -C / --no-same-owner --no-overwrite-dir" \
        in jvb.apply and "sysctl --system" in jvb.apply and "comm -23" in jvb.apply
    got = files(layer)
    assert "-Dconfig.file=/etc/jitsi/videobridge/jvb.conf " in got["/etc/jitsi/videobridge/config"]
    assert "-Dconfig.file=/etc/jitsi/jicofo/jicofo.conf " in got["/etc/jitsi/jicofo/config"]
    unit = got["/usr/lib/systemd/system/jicofo.service"]
    assert "User=jicofo" in unit and "EnvironmentFile=/etc/jitsi/jicofo/config" in unit
    assert 'plugin_paths = { "/usr/share/jitsi-meet/prosody-plugins/" }' in got["/etc/prosody/prosody.cfg.lua"]
    assert "component_admins_as_room_owners = true" in got["/etc/prosody/prosody.cfg.lua"]
    assert jitsi.NOTE_FILE not in got
    dirs = {d.path: d for d in layer.directories}
    assert (dirs["/var/log/jitsi"].mode, dirs["/var/log/jitsi"].owner) == ("0770", "jvb")


def test_the_apt_repository_wins_where_it_is_reachable(schools: Path, tmp_path: Path) -> None:
    site = _site(schools)
    site.mirror = str(_mirror(tmp_path))
    layer = _layer(site)
    assert "jicofo" in layer.packages and "openjdk-21-jre-headless" not in layer.packages
    assert "/usr/lib/systemd/system/jicofo.service" not in files(layer)


def test_two_builds_in_the_mirror_are_refused(schools: Path, tmp_path: Path) -> None:
    from schoolctl.errors import ArtifactError

    site = _site(schools)
    site.upstream_apt, site.mirror = False, str(_mirror(tmp_path, f"{'f' * 64}  jitsi/jicofo-1.0-1200.tar.gz\n"))
    with pytest.raises(ArtifactError, match="a second jicofo"):
        jitsi.layer(site)


def test_an_incomplete_mirror_gives_the_debian_side_only(schools: Path, tmp_path: Path) -> None:
    site = _site(schools)
    mirror = _mirror(tmp_path)
    (mirror / "SHA256SUMS").write_text("".join(x + "\n" for x in (mirror / "SHA256SUMS").read_text().splitlines()
                                               if "jicofo" not in x))
    site.upstream_apt, site.mirror = False, str(mirror)
    assert jitsi.NOTE_FILE in files(_layer(site))


def test_no_rendered_jitsi_file_names_a_third_party_host(schools: Path, tmp_path: Path) -> None:
    from schoolctl.audit.jitsi import config_hosts

    site = _site(schools)
    site.upstream_apt, site.mirror = False, str(_mirror(tmp_path))
    rendered = {p: t for p, t in files(_layer(site)).items() if p.startswith("/etc/jitsi/")}
    assert len(rendered) == 7
    assert {p: config_hosts(t, site.school.domain) for p, t in rendered.items()} == {p: [] for p in rendered}
    assert config_hosts('stun { addresses = [ "meet-jit-si-turnrelay.jitsi.net:443" ] }', site.school.domain) \
        == ["meet-jit-si-turnrelay.jitsi.net"]


def test_the_mirror_step_merges_one_build_idempotently(tmp_path: Path) -> None:
    import hashlib
    import importlib.util

    script = Path(__file__).parents[2] / "bench" / "jitsi_mirror.py"
    spec = importlib.util.spec_from_file_location("jitsi_mirror", script)
    assert spec and spec.loader
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)

    def build(folder: Path, version: str) -> Path:
        folder.mkdir()
        names = {f"jicofo-{version}.tar.gz": version.encode(), "jitsi-lab-build-info.txt": b"info " + version.encode()}
        for name, data in names.items():
            (folder / name).write_bytes(data)
        (folder / "SHA256SUMS").write_text("".join(f"{hashlib.sha256(d).hexdigest()}  {n}\n" for n, d in names.items()))
        return folder

    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "SHA256SUMS").write_text(f"{'a' * 64}  moodle-5.0.6.tgz\n")
    assert tool.merge(build(tmp_path / "one", "1.0-1"), mirror) is True
    assert tool.merge(tmp_path / "one", mirror) is False          # the second run changes nothing
    assert tool.merge(build(tmp_path / "two", "1.0-2"), mirror) is True
    assert sorted(p.name for p in (mirror / "jitsi").iterdir()) == ["jicofo-1.0-2.tar.gz", "jitsi-lab-build-info.txt"]
    sums = (mirror / "SHA256SUMS").read_text().splitlines()
    assert f"{'a' * 64}  moodle-5.0.6.tgz" in sums and len(sums) == 3
    assert any(x.endswith("  jitsi/jicofo-1.0-2.tar.gz") for x in sums) and "1.0-1" not in "".join(sums)
    (tmp_path / "two" / "jicofo-1.0-2.tar.gz").write_bytes(b"tampered")
    with pytest.raises(SystemExit) as e:
        tool.merge(tmp_path / "two", mirror)
    assert e.value.code == 2
