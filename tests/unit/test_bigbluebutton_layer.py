"""The BigBlueButton host as data: the OS check comes first, the school's policy lands in BBB's own
override files, recordings are off or deleted on schedule, and Moodle gets the URL and secret.

Upstream defaults cited (bigbluebutton/bigbluebutton bigbluebutton-web/grails-app/conf/
bigbluebutton.properties, bigbluebutton-html5/private/config/settings.yml, bigbluebutton-web/.../
spring/turn-stun-servers.xml, bigbluebutton-config/cron.daily/bigbluebutton; docs/UPSTREAM-PINS.md
section 5 and PRIVACY-SETTINGS section 3): defaultGuestPolicy=ALWAYS_ACCEPT, disableRecordingDefault=false,
allowStartStopRecording=true, learningDashboardCleanupDelayInMinutes=2, securitySalt placeholder
330a8b08c3b4c61533e1d0c5ce1ac88f, audioCaptions provider webspeech, externalVideoPlayer enabled,
stunServers stun:stun.freeswitch.org, history=5, unrecorded_days=14, published_days=14 with
remove_raw_of_published_recordings commented out."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from pyinfra.api import Config, Inventory, State
from pyinfra.api.connect import connect_all
from pyinfra.api.deploy import add_deploy

from schoolctl.config.loader import load
from schoolctl.deploy import bbb_host, bigbluebutton, ops
from schoolctl.deploy.school import school_deploy
from schoolctl.deploy.site import Site
from schoolctl.deploy.state import Layer
from schoolctl.secrets import Secret

SECRETS = {"turn_secret": "TurnSecret-0123456789", "bbb_secret": "BbbApiSecret-9876543210",
           "bbb_turn_secret": "BbbTurnSecret-13579"}
MEET = "meet.institutmar.escoles.bcn.example"
BBB = "bbb.institutmar.escoles.bcn.example"


def _site(schools: Path, privacy: dict | None = None, jitsi: bool = True, pool: bool = False) -> Site:
    fleet = yaml.safe_load((schools / "fleet.yaml").read_text())
    fleet["privacy"].update(privacy or {})
    if pool:
        fleet["bbb_pool"] = {"url": "https://bbb.bcn.example/bigbluebutton/"}
    (schools / "fleet.yaml").write_text(yaml.safe_dump(fleet))
    mar = yaml.safe_load((schools / "institut-mar.yaml").read_text())
    mar["privacy"] = {k: v for k, v in mar["privacy"].items() if k not in (privacy or {})}
    if not jitsi:
        del mar["services"]["jitsi"]
    if pool:
        mar["services"]["bigbluebutton"] = {"pool": True}
    (schools / "institut-mar.yaml").write_text(yaml.safe_dump(mar))
    school = load(schools).schools["institut-mar"]
    site = Site(school=school, secret=lambda name, length=32: Secret(SECRETS[name]))
    site.fleet_secret = lambda name: Secret(f"pool-secret-{name}")  # type: ignore[attr-defined]
    return site


def _layer(site: Site) -> Layer:
    result = bigbluebutton.layer(site)
    assert result is not None
    return result


def files(layer: Layer) -> dict[str, str]:
    return {f.path: f.data.decode() for f in layer.files}


def props(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "=" in line:
            k, _, v = line.partition("=")
            out[k] = v
    return out


def test_the_os_check_runs_before_anything(schools: Path) -> None:
    rounds = bbb_host.bbb_rounds(_site(schools))
    first = rounds[0]
    assert first.number == bigbluebutton.PREFLIGHT < rounds[1].number
    assert not first.pre_files and not first.packages and not first.files
    [step] = first.pre_steps
    assert step.check == bigbluebutton.OS_CHECK
    for os_release, ok in (('ID=ubuntu\nVERSION_ID="24.04"\n', True), ('ID=debian\nVERSION_ID="13"\n', False),
                           ('ID=ubuntu\nVERSION_ID="22.04"\n', False)):
        check = step.check.replace("/etc/os-release", "/dev/stdin")
        assert (subprocess.run(["sh", "-c", check], input=os_release, text=True).returncode == 0) is ok
    msg = subprocess.run(["sh", "-c", step.apply.replace("/etc/os-release", "/dev/null")], capture_output=True,
                         text=True)
    assert msg.returncode == 1 and "refusing to install BigBlueButton 4.0" in msg.stderr


def test_repository_and_packages(schools: Path) -> None:
    layer = _layer(_site(schools))
    pre = {f.path: f.data.decode() for f in layer.pre_files}
    assert pre["/etc/schoolctl/apt/bigbluebutton.sources"].splitlines()[1:] == [
        "Types: deb", "URIs: https://ubuntu.bigbluebutton.org/noble-400", "Suites: bigbluebutton-noble",
        "Components: main", "Signed-By: /etc/apt/keyrings/schoolctl-bigbluebutton.gpg"]
    assert '"fingerprint": "770C4267C5E63474D171B60937B5DD5EFAB46452"' in pre["/etc/schoolctl/apt/bigbluebutton.json"]
    assert layer.packages[-2:] == ["bigbluebutton", "coturn"]
    assert not any("certbot" in p or "haproxy" in p or "ufw" in p for p in layer.packages)


def test_recordings_off(schools: Path) -> None:
    layer = _layer(_site(schools))
    got = files(layer)
    p = props(got[bigbluebutton.WEB_PROPERTIES])
    assert p["disableRecordingDefault"] == "true"        # upstream: false
    assert p["allowStartStopRecording"] == "false"       # upstream: true
    assert p["autoStartRecording"] == "false" and p["recordFullDurationMedia"] == "false"
    assert p["defaultGuestPolicy"] == "ALWAYS_DENY"      # upstream: ALWAYS_ACCEPT; privacy.guests false
    assert p["learningDashboardEnabled"] == "false" and "learningDashboard" in p["disabledFeatures"].split(",")
    assert "externalVideos" in p["disabledFeatures"].split(",")
    assert p["securitySalt"] == SECRETS["bbb_secret"] != "330a8b08c3b4c61533e1d0c5ce1ac88f"
    assert "sha1" not in p["supportedChecksumAlgorithms"].split(",")
    assert p["allowFetchAllRecordings"] == "false" and p["bigbluebutton.web.serverURL"] == f"https://{BBB}"
    assert "bigbluebutton.org" not in p["defaultWelcomeMessage"]
    cron = props(got[bigbluebutton.CRON_CONFIG])
    assert cron == {"history": "1", "unrecorded_days": "1", "published_days": "1", "log_history": "14"}
    assert "days=0\n" in got[bigbluebutton.RETENTION]
    assert not any("remove_raw_of_published" in s.name for s in layer.steps)


def test_recordings_allowed_for_7_days(schools: Path) -> None:
    layer = _layer(_site(schools, {"recordings": True, "recording_retention_days": 7, "guests": True,
                                   "learning_dashboard_retention_days": 2}))
    got = files(layer)
    p = props(got[bigbluebutton.WEB_PROPERTIES])
    assert (p["disableRecordingDefault"], p["allowStartStopRecording"], p["autoStartRecording"]) == (
        "false", "true", "false")
    assert p["defaultGuestPolicy"] == "ASK_MODERATOR"
    assert p["learningDashboardEnabled"] == "true" and p["learningDashboardCleanupDelayInMinutes"] == str(2 * 1440)
    assert "learningDashboard" not in p["disabledFeatures"].split(",")
    cron = props(got[bigbluebutton.CRON_CONFIG])
    assert cron == {"history": "5", "unrecorded_days": "1", "published_days": "7", "log_history": "14"}
    assert "days=7\n" in got[bigbluebutton.RETENTION]
    [raw] = [s for s in layer.steps if "raw data of published" in s.name]
    assert "remove_raw_of_published_recordings" in raw.check


def test_retention_script_deletes_old_recordings(tmp_path: Path) -> None:
    """The rendered daily script against a fake /var/bigbluebutton: old ones go, recent ones stay."""
    from schoolctl.deploy.render import render

    base = tmp_path / "var"
    for kind, rid, age in (("published/presentation", "old-1", 10), ("published/presentation", "new-1", 1),
                           ("recording/raw", "old-2", 9), ("unpublished/presentation", "old-3", 30)):
        d = base / kind / rid
        d.mkdir(parents=True)
        subprocess.run(["touch", "-d", f"{age} days ago", str(d)], check=True)
    (base / "deleted" / "x").mkdir(parents=True)
    for days, left in ((7, {"new-1"}), (0, set())):
        script = render("bigbluebutton/retention.sh.j2", days=days).replace("/var/bigbluebutton", str(base))
        subprocess.run(["sh", "-c", script], check=True, env={"PATH": "/usr/bin:/bin"})
        remaining = {p.name for p in base.glob("*/*/*")} | {p.name for p in (base / "recording" / "raw").glob("*")}
        assert remaining == left, days
        assert not list((base / "deleted").iterdir())


def test_html5_and_turn(schools: Path) -> None:
    layer = _layer(_site(schools))
    got = files(layer)
    html5 = yaml.safe_load(got[bigbluebutton.HTML5_YML])["public"]
    assert html5["app"]["audioCaptions"]["enabled"] is False      # Web Speech: voices to third parties
    assert html5["externalVideoPlayer"]["enabled"] is False
    assert html5["media"]["fallbackStunServer"] == ""
    assert html5["clientLog"]["external"]["enabled"] is False
    xml = got[bigbluebutton.TURN_XML]
    assert f"stun:{BBB}:3478" in xml and f"turn:{BBB}:3478" in xml and "freeswitch" not in xml.split("-->", 1)[1]
    assert SECRETS["bbb_turn_secret"] in xml and SECRETS["turn_secret"] not in xml
    by_path = {f.path: f for f in layer.files}
    for path in (bigbluebutton.WEB_PROPERTIES, bigbluebutton.TURN_XML):
        assert (by_path[path].mode, by_path[path].group, by_path[path].secret) == ("0640", "bigbluebutton", True)


@pytest.mark.parametrize("jitsi", [True, False])
def test_the_bbb_host_runs_its_own_coturn(schools: Path, jitsi: bool) -> None:
    """Never the school server's coturn: its firewall denies outbound, it could not relay to this host."""
    layer = _layer(_site(schools, jitsi=jitsi))
    assert "coturn" in layer.packages and "coturn" in [s.name for s in layer.services]
    conf = files(layer)["/etc/turnserver.conf"].splitlines()
    assert f"realm={BBB}" in conf and f"static-auth-secret={SECRETS['bbb_turn_secret']}" in conf
    assert "allowed-peer-ip=10.20.31.11" in conf      # its own (private) address: media behind NAT
    assert "denied-peer-ip=10.0.0.0-10.255.255.255" in conf


def test_the_bbb_host_shares_nothing_of_jitsi(schools: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Shared with Jitsi are only deploy/apt_repo.py and deploy/turn.py: no import of deploy/jitsi.py,
    no template under templates/jitsi/."""
    import ast

    from schoolctl.deploy.render import _env

    env = _env()
    rendered: list[str] = []
    get_template = env.get_template

    def recording(name: str, *args: object, **kwargs: object) -> object:
        rendered.append(name)
        return get_template(name, *args, **kwargs)

    monkeypatch.setattr(env, "get_template", recording)
    bbb_host.bbb_rounds(_site(schools))
    assert "turn/turnserver.conf.j2" in rendered and not any(name.startswith("jitsi/") for name in rendered)
    for module in (bigbluebutton, bbb_host):
        tree = ast.parse(Path(module.__file__ or "").read_text(encoding="utf-8"))
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {f"{n.module}.{a.name}" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
        assert not any(m.startswith("schoolctl.deploy.jitsi") for m in imported), module.__name__


def test_moodle_settings(schools: Path) -> None:
    own = bigbluebutton.moodle_settings(_site(schools))
    assert own["bigbluebuttonbn_server_url"] == f"https://{BBB}/bigbluebutton/"
    assert isinstance(own["bigbluebuttonbn_shared_secret"], Secret)
    assert own["bigbluebuttonbn_shared_secret"].reveal() == SECRETS["bbb_secret"]
    assert own["bigbluebuttonbn_checksum_algorithm"] == "SHA256"


def test_moodle_settings_for_the_city_pool(schools: Path) -> None:
    site = _site(schools, pool=True)
    assert bigbluebutton.layer(site) is None and bbb_host.bbb_rounds(site) == []
    pool = bigbluebutton.moodle_settings(site)
    assert pool["bigbluebuttonbn_server_url"] == "https://bbb.bcn.example/bigbluebutton/"
    assert pool["bigbluebuttonbn_shared_secret"].reveal() == "pool-secret-bbb_pool"


@pytest.mark.parametrize("privacy", [{}, {"recordings": True, "recording_retention_days": 7}])
def test_whole_bbb_host_plan_on_a_fake_host(schools: Path, privacy: dict) -> None:
    rounds = bbb_host.bbb_rounds(_site(schools, privacy))
    inventory = Inventory(([("@fake/bbb", {"fake_delay": 0, "fake_delay_jitter": 0})], {}))
    state = State(inventory=inventory, config=Config(), check_for_changes=True)
    connect_all(state)
    host = inventory.get_host("@fake/bbb")
    ops.reset_changes(host.name)
    add_deploy(state, school_deploy, rounds)
    found = ops.changes(host.name)
    steps = [c["what"] for c in found if c["kind"] == "step"]
    assert steps[0].startswith("the BigBlueButton host runs Ubuntu 24.04")
    paths = {c["what"] for c in found if c["kind"] == "file"}
    assert {bigbluebutton.WEB_PROPERTIES, bigbluebutton.HTML5_YML, bigbluebutton.TURN_XML,
            bigbluebutton.CRON_CONFIG, bigbluebutton.RETENTION} <= paths
    executed = " ".join(str(c) for c in host.connector.executed_commands)
    assert not any(v in executed for v in SECRETS.values())


def _bbb_files(site: Site) -> dict[str, str]:
    return {f.path: f.data.decode() for r in bbb_host.bbb_rounds(site) for f in r.files if not f.absent}


def test_the_bbb_host_has_the_school_servers_firewall_with_its_own_ports(schools: Path) -> None:
    conf = _bbb_files(_site(schools))["/etc/nftables.conf"]
    accepted = [line.strip() for line in conf.splitlines() if "dport" in line and "daddr" not in line]
    assert [a.split(" accept")[0] for a in accepted] == [
        "tcp dport 22", "tcp dport 80", "tcp dport 443", "udp dport 16384-32768", "udp dport 3478", "tcp dport 3478"]
    assert "policy drop;" in conf.split("chain input")[1].split("}")[0]
    assert "outbound denied by the privacy policy" in conf   # the egress policy of the school server
    assert "5222" not in conf and "10000" not in conf   # nothing of the school server's Jitsi
    check = subprocess.run(["nft", "-c", "-f", "-"], input=conf, capture_output=True, text=True)
    if check.returncode != 0 and "Operation not permitted" in check.stderr:
        pytest.skip("nft -c needs root")
    assert check.returncode == 0, check.stderr


def test_the_bbb_host_gets_its_certificate_and_tls_as_the_school_server(schools: Path) -> None:
    site = _site(schools)
    site.acme_directory = "https://acme.example.test/dir"
    rounds = bbb_host.bbb_rounds(site)
    steps = [s for r in rounds for s in (*r.pre_steps, *r.steps)]
    issue = next(s for s in steps if s.name.startswith("TLS certificate from ACME"))
    assert issue.name == f"TLS certificate from ACME for {BBB}"
    assert f"--cert-name institut-mar-bbb --key-type ecdsa -d {BBB}" in issue.apply
    placeholder = next(s for s in steps if s.name.startswith("TLS placeholder"))
    assert f"/CN={BBB}" in placeholder.apply
    assert [s.name for s in steps].index(placeholder.name) < [s.name for s in steps].index(issue.name)
    fs = _bbb_files(site)
    nginx = fs[bigbluebutton.NGINX_SITE]
    assert "listen 443 ssl http2;" in nginx and f"server_name {BBB};" in nginx
    assert "include /etc/nginx/snippets/schoolctl-tls.conf;" in nginx and "Strict-Transport-Security" in nginx
    assert "include /etc/bigbluebutton/nginx/*.nginx;" in nginx and "root /var/www/acme;" in nginx
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in fs["/etc/nginx/snippets/schoolctl-tls.conf"]
    assert "schoolctl_anon" in fs["/etc/nginx/nginx.conf"]           # the school's logging policy
    packages = {p for r in rounds for p in r.packages}
    assert "certbot" in packages and not packages & {"haproxy", "ufw"}


def test_a_provided_certificate_must_cover_the_bbb_host(schools: Path, tmp_path: Path) -> None:
    from schoolctl.deploy import web

    site = _site(schools)
    site.school = site.school.model_copy(update={"fleet": site.school.fleet.model_copy(
        update={"tls": site.school.fleet.tls.model_copy(update={"mode": "provided"})})})
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    for pattern, ok in (("*.institutmar.escoles.bcn.example", True), ("institutmar.escoles.bcn.example", False)):
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-days", "2", "-subj", "/CN=x", "-addext", f"subjectAltName=DNS:{pattern}",
                        "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
        site.school = site.school.model_copy(update={"tls": type("T", (), {"cert_file": str(cert),
                                                                           "key_file": str(key)})()})
        _, _, steps, _, _ = web.tls(site, [BBB])
        [step] = steps
        check = subprocess.run(["sh", "-c", step.check.replace(web.CERT, str(cert))], capture_output=True)
        assert (check.returncode == 0) is ok, pattern
