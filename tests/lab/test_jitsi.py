"""Jitsi Meet's Debian side for real on lab host v-1 (layers base, firewall, identity, web, jitsi with
`apt_repos.jitsi: null`: Jitsi's repository is unreachable here): prosody's secure domain logs a
person of the school's directory in over BOSH through nginx (LDAP over TLS) and refuses a wrong
password; coturn accepts a TURN REST credential derived from the shared secret and refuses a wrong
or expired one, and never relays into a private network; a second deploy changes nothing; the
Jitsi and BigBlueButton audit controls pass on compliant files and fail on violating ones.

Needs root and the lab. Everything is sent to the lab host's own address only."""

from __future__ import annotations

import base64
import csv
import hashlib
import hmac
import json
import os
import re
import socket
import ssl
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from ansible.parsing.vault import VaultLib, VaultSecret

from schoolctl.audit.bigbluebutton import SAME_AS_THE_SCHOOL_SERVER
from schoolctl.lab import Lab

pytestmark = pytest.mark.lab

HOST = "v-1"
SCHOOL = "v-meet"
DOMAIN = f"{SCHOOL}.escoles.bcn.example"
MEET = f"meet.{DOMAIN}"
REPO = Path(__file__).resolve().parents[2]
LAYERS = "base,firewall,identity,web,jitsi"
RELOAD_NGINX = "nginx -t -q && systemctl reload nginx && sleep 0.3"
ROSTER = "given_name,family_name,role,group,email\nMarta,Puig Soler,teacher,1A,marta@escola.example\n" \
         "Joan,Vidal Roca,student,1A,\n"


def school_yaml(privacy: dict | None = None, bbb: bool = False) -> str:
    data: dict = {"id": SCHOOL, "name": "Escola Videotrucada", "district": "Gràcia", "server": f"lab:{HOST}",
                  "services": {"jitsi": {}}, "contacts": {"dpo": {"name": "DPD", "email": "dpd@bcn.example"}}}
    if bbb:   # only for the audit of BBB files laid down on this host (the BBB layer is not deployed here)
        # (validate refuses a lab host for BBB: an address in the lab's subnet where no host runs, never contacted)
        data["services"]["bigbluebutton"] = {"server": {"address": "10.213.0.250", "os": "ubuntu-24.04"}}
    if privacy:
        data["privacy"] = privacy
    return yaml.safe_dump(data, allow_unicode=True)


class Env:
    def __init__(self, lab: Lab, work: Path):
        self.lab, self.work = lab, work
        self.schools = work / "schools"
        self.env = {**os.environ, "SCHOOLCTL_VAULT_KEY_FILE": str(work / "vault.key"),
                    "SCHOOLCTL_SECRETS_DIR": str(work / "secrets"),
                    "SCHOOLCTL_LAYERS": LAYERS}
        self.env.pop("SCHOOLCTL_LOG", None)
        self.env.pop("SCHOOLCTL_MIRROR", None)   # the Debian side only: no Jitsi tarballs (test_video.py has them)
        self.address = ""
        self.timings: dict[str, float] = {}

    def cli(self, *args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "schoolctl.cli", "--schools-dir", str(self.schools), *args],
                              capture_output=True, text=True, timeout=timeout, env=self.env, cwd=self.work)

    def deploy(self) -> dict:
        start = time.monotonic()
        proc = self.cli("deploy", SCHOOL, "--yes", "--json")
        assert proc.stdout.strip(), proc.stderr[-3000:]
        [result] = json.loads(proc.stdout)["schools"]
        result["wall"] = time.monotonic() - start
        assert proc.returncode == 0, (result["error"] or "") + proc.stderr[-2000:]
        return result

    def sh(self, command: str) -> subprocess.CompletedProcess[str]:
        return self.lab.run(HOST, command, timeout=120)

    def restart_prosody(self) -> None:
        """Restart prosody and wait (10 s at most) until BOSH answers on loopback again."""
        from schoolctl.deploy.jitsi import WAIT_PROSODY

        proc = self.sh(f"systemctl restart prosody && {WAIT_PROSODY} && "
                       "i=0; until ss -Hltn | grep -q '127.0.0.1:5280 '; do i=$((i+1)); [ $i -le 50 ] || exit 1; "
                       "sleep 0.2; done")
        assert proc.returncode == 0, proc.stderr

    def secret(self, name: str) -> str:
        from schoolctl.secrets import SecretStore

        return SecretStore(self.work / "secrets", self.work / "vault.key").get(SCHOOL, name).reveal()


@pytest.fixture(scope="module")
def env(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    work = tmp_path_factory.mktemp("jitsi")
    e = Env(lab, work)
    e.schools.mkdir()
    fleet = yaml.safe_load((REPO / "schools" / "fleet.yaml").read_text())
    fleet.update(dns=[], ntp=[])
    fleet["apt_repos"]["jitsi"] = None          # unreachable here: the Debian side only
    fleet["privacy"].update(recordings=True)    # a floor the BBB audit cases below may tighten
    (e.schools / "fleet.yaml").write_text(yaml.safe_dump(fleet))
    (e.schools / f"{SCHOOL}.yaml").write_text(school_yaml({"recordings": False}), encoding="utf-8")
    lab.down([HOST])            # a fresh host: the deploy starts from a bare Debian 13
    lab.up([HOST], timeout=180)
    e.address = lab.host(HOST).address
    assert e.cli("secrets", "init").returncode == 0
    try:
        yield e
    finally:
        lab.down([HOST])


@pytest.fixture(scope="module")
def deployed(env: Env) -> Env:
    first = env.deploy()
    assert first["status"] == "changed"
    second = env.deploy()
    assert second["status"] == "unchanged", second["changes"]
    env.timings = {"first deploy": first["wall"], "no-op deploy": second["wall"],
                   "no-op deploy (runner)": second["seconds"]}
    print(f"\n{env.timings}")
    return env


@pytest.fixture(scope="module")
def people(deployed: Env) -> list[dict[str, str]]:
    roster = deployed.work / "roster.csv"
    roster.write_text(ROSTER, encoding="utf-8")
    proc = deployed.cli("users", "import", SCHOOL, str(roster), "--yes", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    vault = Path(json.loads(proc.stdout)["passwords_file"])
    key = Path(deployed.env["SCHOOLCTL_VAULT_KEY_FILE"]).read_bytes().strip()
    return list(csv.DictReader(VaultLib([("default", VaultSecret(key))]).decrypt(vault.read_bytes())
                               .decode().splitlines()))


# --- XMPP over BOSH, through nginx ------------------------------------------------------------

BOSH = "http://jabber.org/protocol/httpbind"


def _https_post(address: str, name: str, path: str, body: str | None = None) -> tuple[int, str]:
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE   # the lab ACME's root: not what is tested
    with socket.create_connection((address, 443), timeout=20) as raw, ctx.wrap_socket(raw, server_hostname=name) as s:
        method = "POST" if body is not None else "GET"
        data = (body or "").encode()
        s.sendall(f"{method} {path} HTTP/1.1\r\nHost: {name}\r\nContent-Type: text/xml; charset=utf-8\r\n"
                  f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode() + data)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    head, _, payload = b"".join(chunks).partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" in head.lower():
        out, rest = b"", payload
        while rest:
            size, _, rest = rest.partition(b"\r\n")
            n = int(size, 16)
            if n == 0:
                break
            out, rest = out + rest[:n], rest[n + 2:]
        payload = out
    return int(head.split()[1]), payload.decode()


def sasl(address: str, user: str, password: str, mechanism: str = "PLAIN") -> tuple[list[str], str]:
    """Open a BOSH session on meet.<domain> and authenticate: (offered mechanisms, the auth answer)."""
    _, first = _https_post(address, MEET, "/http-bind",
                           f"<body rid='4000' to='{MEET}' xml:lang='en' wait='10' hold='1' ver='1.6' "
                           f"xmpp:version='1.0' xmlns='{BOSH}' xmlns:xmpp='urn:xmpp:xbosh'/>")
    sid = re.search(r"sid=['\"]([^'\"]+)", first)
    assert sid, first
    mechanisms = re.findall(r"<mechanism>([^<]+)</mechanism>", first)
    payload = base64.b64encode(f"\0{user}\0{password}".encode()).decode() if mechanism == "PLAIN" else "="
    _, answer = _https_post(address, MEET, "/http-bind",
                            f"<body rid='4001' sid='{sid.group(1)}' xmlns='{BOSH}'><auth "
                            f"xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='{mechanism}'>{payload}</auth></body>")
    return mechanisms, answer


def test_a_person_of_the_directory_logs_in_a_wrong_password_is_refused(deployed: Env, people: list[dict]) -> None:
    teacher = next(p for p in people if p["role"] == "teacher")
    mechanisms, first = sasl(deployed.address, teacher["uid"], teacher["initial_password"])
    assert mechanisms == ["PLAIN"]           # over nginx's TLS only; no ANONYMOUS (privacy.guests: false)
    # the letter's password opens no room until its first change (ppolicy's pwdReset, cleared by it)
    assert "<failure" in first, first
    dn = f"uid={teacher['uid']},ou=people,dc={SCHOOL},dc=escoles,dc=bcn,dc=example"
    cleared = deployed.sh(f"printf 'dn: {dn}\\nchangetype: modify\\ndelete: pwdReset\\n-\\n' | "
                "ldapmodify -Q -Y EXTERNAL -H ldapi:/// >/dev/null")
    assert cleared.returncode == 0, cleared.stderr
    _, ok = sasl(deployed.address, teacher["uid"], teacher["initial_password"])
    assert "<success" in ok, ok
    _, wrong = sasl(deployed.address, teacher["uid"], teacher["initial_password"] + "x")
    assert "<failure" in wrong and "not-authorized" in wrong
    _, unknown = sasl(deployed.address, "nobody.here", "whatever")
    assert "<failure" in unknown
    _, anonymous = sasl(deployed.address, "", "", "ANONYMOUS")
    assert "<failure" in anonymous and "invalid-mechanism" in anonymous
    # the same check proves LDAP is asked: with the apps account's password wrong, nobody logs in
    deployed.sh("cp /etc/prosody/schoolctl/ldap_password /root/ldap_password.bak && "
                "printf wrong > /etc/prosody/schoolctl/ldap_password")
    deployed.restart_prosody()
    try:
        _, broken = sasl(deployed.address, teacher["uid"], teacher["initial_password"])
        assert "<failure" in broken
    finally:
        deployed.sh("cp /root/ldap_password.bak /etc/prosody/schoolctl/ldap_password")
        deployed.restart_prosody()
    assert "<success" in sasl(deployed.address, teacher["uid"], teacher["initial_password"])[1]


def test_prosody_and_the_bridge_ports_stay_on_loopback(deployed: Env) -> None:
    listening = deployed.sh("ss -Hltnu").stdout
    for port in (5222, 5280):
        sockets = [line.split()[4] for line in listening.splitlines() if line.split()[4].endswith(f":{port}")]
        assert sockets and all(s.startswith("127.0.0.1:") for s in sockets), sockets
    assert not re.search(r":(5269|5347|5281)\s", listening)     # no federation, no components, no https
    with pytest.raises(OSError):
        socket.create_connection((deployed.address, 5280), timeout=3).close()


def test_the_web_config_is_served_through_nginx(deployed: Env) -> None:
    status, js = _https_post(deployed.address, MEET, "/config.js")
    assert status == 200 and "disableThirdPartyRequests: true," in js
    assert f'stunServers: [ {{ urls: "stun:{MEET}:3478" }} ]' in js
    assert not re.search(r"jitsi\.net|gravatar\.com|google\.com", re.sub(r"(^|\s)//.*$", "", js, flags=re.M))
    status, ui = _https_post(deployed.address, MEET, "/interface_config.js")
    assert status == 200 and "MOBILE_APP_PROMO: false," in ui


# --- TURN (RFC 5766 Allocate with long-term credentials, the TURN REST API scheme) ------------------

MAGIC = 0x2112A442


def _stun(mtype: int, attrs: list[tuple[int, bytes]], key: bytes | None = None) -> bytes:
    tid = os.urandom(12)
    body = b"".join(struct.pack("!HH", t, len(v)) + v + b"\0" * ((4 - len(v) % 4) % 4) for t, v in attrs)
    if key is not None:
        mi = hmac.new(key, struct.pack("!HHI", mtype, len(body) + 24, MAGIC) + tid + body, hashlib.sha1).digest()
        body += struct.pack("!HH", 0x0008, 20) + mi
    return struct.pack("!HHI", mtype, len(body), MAGIC) + tid + body


def _parse(data: bytes) -> tuple[int, dict[int, bytes]]:
    mtype, length, _ = struct.unpack("!HHI", data[:8])
    attrs, i = {}, 20
    while i < 20 + length:
        t, n = struct.unpack("!HH", data[i:i + 4])
        attrs[t] = data[i + 4:i + 4 + n]
        i += 4 + n + (4 - n % 4) % 4
    return mtype, attrs


def _code(attrs: dict[int, bytes]) -> int:
    v = attrs[0x0009]
    return (v[2] & 7) * 100 + v[3]


def turn_allocate(address: str, port: int, user: str | None, password: str, peer: str | None = None) \
        -> tuple[str | int, str | int | None]:
    """(Allocate: 'success' or error code, CreatePermission for `peer`: 'success', code or None)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)

        def ask(mtype: int, attrs: list[tuple[int, bytes]], key: bytes | None = None) -> tuple[int, dict]:
            s.sendto(_stun(mtype, attrs, key), (address, port))
            return _parse(s.recv(2048))

        udp = [(0x0019, bytes([17, 0, 0, 0]))]
        mtype, attrs = ask(0x0003, udp)
        if mtype == 0x0103:
            return "success (no credentials!)", None
        if user is None:
            return _code(attrs), None
        realm, nonce = attrs[0x0014], attrs[0x0015]
        key = hashlib.md5(user.encode() + b":" + realm + b":" + password.encode()).digest()
        auth = [(0x0006, user.encode()), (0x0014, realm), (0x0015, nonce)]
        mtype, attrs = ask(0x0003, udp + auth, key)
        if mtype != 0x0103:
            return _code(attrs), None
        perm = None
        if peer:
            xaddr = bytes(a ^ b for a, b in zip(socket.inet_aton(peer), struct.pack("!I", MAGIC), strict=True))
            mtype, attrs = ask(0x0008, [(0x0012, struct.pack("!BBH", 0, 1, MAGIC >> 16) + xaddr), *auth], key)
            perm = "success" if mtype == 0x0108 else _code(attrs)
        ask(0x0004, [(0x000D, struct.pack("!I", 0)), *auth], key)   # release the allocation
        return "success", perm


def rest_credential(secret: str, name: str, valid_for: int) -> tuple[str, str]:
    user = f"{int(time.time()) + valid_for}:{name}"
    return user, base64.b64encode(hmac.new(secret.encode(), user.encode(), hashlib.sha1).digest()).decode()


def test_coturn_takes_only_credentials_from_the_shared_secret(deployed: Env) -> None:
    secret = deployed.secret("turn_secret")
    user, password = rest_credential(secret, "probe", 3600)
    # accepted; but the relay refuses to open a path to a private address (the lab host's own)
    assert turn_allocate(deployed.address, 3478, user, password, peer=deployed.address) == ("success", 403)
    assert turn_allocate(deployed.address, 3478, None, "") == (401, None)
    assert turn_allocate(deployed.address, 3478, user, password + "x") == (401, None)
    expired_user, expired_password = rest_credential(secret, "probe", -60)
    assert turn_allocate(deployed.address, 3478, expired_user, expired_password) == (401, None)
    other_user, other_password = rest_credential("not-the-school-secret", "probe", 3600)
    assert turn_allocate(deployed.address, 3478, other_user, other_password) == (401, None)


# --- the audit's Jitsi and BigBlueButton controls on this host --------------------------------

def _audit(env: Env, prefix: str, privacy: dict | None = None, bbb: bool = False) -> dict[str, tuple[str, str]]:
    from schoolctl.audit.catalogue import load_all
    from schoolctl.audit.runner import audit_school, connect, expectations
    from schoolctl.config.loader import load

    (env.schools / f"{SCHOOL}.yaml").write_text(school_yaml(privacy, bbb), encoding="utf-8")
    school = load(env.schools).select([SCHOOL])[0]
    ids = sorted(c for c in load_all() if c.startswith(prefix))
    # the BBB files are laid down on this lab host: hand it in, so the BBB controls read it (by
    # themselves they would read the school's BigBlueButton host, which cannot run here)
    result = audit_school(school, expect=expectations(school, outbound=[]), host=connect(school), only=ids)
    assert result.error is None, result.error
    return {r.control.id: (r.status, r.observed) for r in result.controls}


def test_jitsi_controls_pass_then_fail_on_violations(deployed: Env) -> None:
    os.environ.update({k: deployed.env[k] for k in ("SCHOOLCTL_VAULT_KEY_FILE", "SCHOOLCTL_SECRETS_DIR")})
    found = _audit(deployed, "JITSI-", {"recordings": False})
    # the Debian side only here: no jicofo or videobridge runs, and the audit says so (tests/lab/test_video.py
    # runs the whole stack from the mirror)
    stack = found.pop("JITSI-STACK-RUNNING")
    assert stack[0] == "fail" and "jicofo inactive" in stack[1], stack
    assert len(found) == 7 and all(s == "pass" for s, _ in found.values()), found
    assert found["JITSI-LANGUAGE"][1] == 'defaultLanguage: "ca"'    # the fleet's languages: [ca, es, en]
    config = f"/etc/jitsi/meet/{MEET}-config.js"
    deployed.sh(f"cp {config} /root/config.bak && cp /etc/turnserver.conf /root/turn.bak && "
                f"sed -i 's/disableThirdPartyRequests: true/disableThirdPartyRequests: false/; "
                f"s#stun:{MEET}:3478#stun:meet-jit-si-turnrelay.jitsi.net:443#; "
                's/defaultLanguage: "ca"/defaultLanguage: "en"/; '
                "s/localRecording: { disable: true/localRecording: { disable: false/' " + config + " && "
                "sed -i '/^denied-peer-ip=10.0.0.0/d; /^use-auth-secret/d' /etc/turnserver.conf && "
                "cp /etc/prosody/prosody.cfg.lua /root/prosody.bak && printf '\\nVirtualHost \"guest.%s\"\\n"
                "    authentication = \"anonymous\"\\n' " + MEET + " >> /etc/prosody/prosody.cfg.lua && "
                # a file in conf.d is not loaded (schoolctl's prosody.cfg.lua has no Include): not a finding
                "mkdir -p /etc/prosody/conf.d && printf 'VirtualHost \"%s\"\\n    authentication = "
                "\"anonymous\"\\n' " + MEET + " > /etc/prosody/conf.d/zz-audit.cfg.lua")
    try:
        broken = _audit(deployed, "JITSI-", {"recordings": False})
        broken.pop("JITSI-STACK-RUNNING")
        served = _https_post(deployed.address, MEET, "/config.js")   # the file the audit read is what nginx serves
    finally:
        deployed.sh(f"cp /root/config.bak {config} && cp /root/turn.bak /etc/turnserver.conf && "
                    "cp /root/prosody.bak /etc/prosody/prosody.cfg.lua && rm -f /etc/prosody/conf.d/zz-audit.cfg.lua")
    assert {k: s for k, (s, _) in broken.items()} == {k: "fail" for k in found}, broken
    assert "disableThirdPartyRequests: false" in broken["JITSI-NO-THIRD-PARTY"][1]
    assert "meet-jit-si-turnrelay" in broken["JITSI-STUN-OWN"][1]
    assert "meet-jit-si-turnrelay.jitsi.net" in broken["JITSI-CONFIG-NO-THIRD-PARTY"][1]
    assert "10.0.0.0-10.255.255.255" in broken["JITSI-TURN"][1]
    assert broken["JITSI-SECURE-DOMAIN"][1] == f"guest.{MEET} exists but privacy.guests is false"
    assert broken["JITSI-LANGUAGE"][1] == 'defaultLanguage: "en"' and 'defaultLanguage: "en",' in served[1], served
    assert all(deployed.secret("turn_secret") not in o for _, o in broken.values())
    # restored by hand: the files are the deploy's again, but were rewritten after the services started
    again = deployed.deploy()
    assert [(c["kind"], c["what"]) for c in again["changes"]] == [
        ("step", "prosody runs with its current configuration"), ("step", "coturn runs with its current configuration")]


def _lay_bbb(env: Env, recordings: bool, days: int, violating: bool) -> None:
    """BBB's files as the BBB layer renders them (or with violations), laid on this Debian host."""
    from schoolctl.config.loader import load
    from schoolctl.deploy import bigbluebutton
    from schoolctl.deploy.site import Site
    from schoolctl.secrets import Secret

    school = load(env.schools).select([SCHOOL])[0]
    site = Site(school=school, secret=lambda name, length=32: Secret(env.secret(name)))
    files = {f.path: f.data.decode() for f in bigbluebutton.layer(site).files
             if f.path.startswith(("/etc/bigbluebutton/", "/etc/default/bigbluebutton", "/etc/cron.daily/"))}
    if violating:
        web = bigbluebutton.WEB_PROPERTIES
        files[web] = re.sub(r"(?m)^disableRecordingDefault=.*$", "disableRecordingDefault=false", files[web])
        files[web] = re.sub(r"(?m)^defaultGuestPolicy=.*$", "defaultGuestPolicy=ALWAYS_ACCEPT", files[web])
        files[web] = re.sub(r"(?m)^securitySalt=.*$", "securitySalt=330a8b08c3b4c61533e1d0c5ce1ac88f", files[web])
        files[web] = re.sub(r"(?m)^learningDashboardEnabled=.*$", "learningDashboardEnabled=true", files[web])
        files[web] = re.sub(r"(?m)^autoStartRecording=.*$", "autoStartRecording=true", files[web])
        files[web] = files[web].replace("learningDashboard,", "").replace(",learningDashboard", "")
        files[bigbluebutton.HTML5_YML] = files[bigbluebutton.HTML5_YML].replace(
            "audioCaptions:\n      enabled: false", "audioCaptions:\n      enabled: true")
        files[bigbluebutton.TURN_XML] = re.sub(r'value="stun:[^"]+"', 'value="stun:stun.freeswitch.org"',
                                               files[bigbluebutton.TURN_XML])
        files[bigbluebutton.RETENTION] = re.sub(r"(?m)^days=\d+", "days=90", files[bigbluebutton.RETENTION])
    # upstream's daily job with the raw cleanup as the BBB layer's step leaves it (or as shipped: off)
    files["/etc/cron.daily/bigbluebutton"] = ("#!/bin/sh\n# stand-in for BigBlueButton's daily job\n"
                                              + ("#" if violating else "") + "remove_raw_of_published_recordings\n")
    script = ["rm -rf /etc/bigbluebutton /var/bigbluebutton /etc/default/bigbluebutton-cron-config",
              "mkdir -p /etc/bigbluebutton /var/bigbluebutton/published/presentation/meeting-1"]
    for path, text in files.items():
        script.append(f"cat > {path} <<'SCHOOLCTL_EOF'\n{text}SCHOOLCTL_EOF")
    if violating:   # a recording 30 days old that the schedule should have deleted
        script.append("touch -d '30 days ago' /var/bigbluebutton/published/presentation/meeting-1")
    env.lab.run(HOST, "\n".join(script), check=True, timeout=60)


@pytest.mark.parametrize(("recordings", "days"), [(False, 7), (True, 7)])
def test_bbb_controls_read_the_files(deployed: Env, recordings: bool, days: int) -> None:
    """The BBB controls against BBB's files laid down on this host: compliant, then violating."""
    os.environ.update({k: deployed.env[k] for k in ("SCHOOLCTL_VAULT_KEY_FILE", "SCHOOLCTL_SECRETS_DIR")})
    privacy = {"recordings": recordings, "recording_retention_days": days}
    try:
        (deployed.schools / f"{SCHOOL}.yaml").write_text(school_yaml(privacy, bbb=True), encoding="utf-8")
        _lay_bbb(deployed, recordings, days, violating=False)
        good = _audit(deployed, "BBB-", privacy, bbb=True)
        for host_control in SAME_AS_THE_SCHOOL_SERVER:   # the BBB host's firewall and TLS: the test below
            good.pop(host_control)
        assert len(good) == 6 and all(s == "pass" for s, _ in good.values()), good
        _lay_bbb(deployed, recordings, days, violating=True)
        bad = {k: v for k, v in _audit(deployed, "BBB-", privacy, bbb=True).items() if k in good}
        assert {k: s for k, (s, _) in bad.items()} == {k: "fail" for k in good}, bad
        assert "30" in bad["BBB-RECORDING-RETENTION"][1] or "older than" in bad["BBB-RECORDING-RETENTION"][1]
        assert all(deployed.secret("bbb_secret") not in o and deployed.secret("bbb_turn_secret") not in o
                   for _, o in bad.values())
    finally:
        deployed.sh("rm -rf /etc/bigbluebutton /var/bigbluebutton /etc/default/bigbluebutton-cron-config "
                    "/etc/cron.daily/schoolctl-bbb-retention /etc/cron.daily/bigbluebutton")
        (deployed.schools / f"{SCHOOL}.yaml").write_text(school_yaml({"recordings": False}), encoding="utf-8")


BBB_SITE = "/etc/nginx/sites-enabled/zz-bbb-stand-in"
BBB_TLS = "/etc/nginx/snippets/bbb-stand-in-tls.conf"
SCHOOL_TLS = "/etc/nginx/snippets/schoolctl-tls.conf"


def test_the_bbb_hosts_firewall_and_tls_controls_pass_then_fail(deployed: Env) -> None:
    """The school server's firewall and TLS controls, run for the school's BigBlueButton host: this
    Debian host stands in for it with what deploy/bbb_host.py would put there (the BBB ruleset, BBB's
    nginx site with its own certificate from the lab's ACME server), then each is broken."""
    from schoolctl.config.loader import load
    from schoolctl.deploy import bigbluebutton, firewall, web
    from schoolctl.deploy.site import Site
    from schoolctl.secrets import Secret

    os.environ.update({k: deployed.env[k] for k in ("SCHOOLCTL_VAULT_KEY_FILE", "SCHOOLCTL_SECRETS_DIR")})
    privacy = {"recordings": False}
    (deployed.schools / f"{SCHOOL}.yaml").write_text(school_yaml(privacy, bbb=True), encoding="utf-8")
    school = load(deployed.schools).select([SCHOOL])[0]
    site = Site(school=school, secret=lambda name, length=32: Secret(deployed.secret(name)),
                acme_directory=deployed.lab.services_info().acme_directory or "",
                acme_ca_pem="(on the host since the school's deploy)")
    bbb = bigbluebutton.bbb_host(site)
    layer = bigbluebutton.tls_layer(site)
    conf = next(f.data.decode() for f in layer.files if f.path == bigbluebutton.NGINX_SITE)
    rules = next(f.data.decode() for f in firewall.layer(site, firewall.bbb_inbound(22, bigbluebutton.TURN_PORT)).files
                 if f.path == "/etc/nftables.conf")
    live = f"/etc/letsencrypt/live/{SCHOOL}-bbb"
    standin = "location @bbb-fe { default_type text/plain; return 200 'BigBlueButton stand-in'; }\n"
    ids = sorted(SAME_AS_THE_SCHOOL_SERVER)

    def lay(path: str, text: str) -> None:
        deployed.lab.run(HOST, f"cat > {path}", input=text, check=True)

    def audit() -> dict[str, tuple[str, str]]:
        return {k: v for k, v in _audit(deployed, "BBB-", privacy, bbb=True).items() if k in ids}

    deployed.lab.register_domain(bbb, deployed.address)
    try:
        # BBB's site as deployed, first with this host's certificate (the school's: it does not cover the BBB name)
        deployed.sh("mkdir -p /etc/bigbluebutton/nginx /var/www/bigbluebutton-default/assets")
        lay("/etc/bigbluebutton/nginx/stand-in.nginx", standin)
        lay(BBB_SITE, conf)
        assert deployed.sh(RELOAD_NGINX).returncode == 0
        before = audit()
        assert before["BBB-CERT-VALID"][0] == "fail" and f"SAN {DOMAIN}" in before["BBB-CERT-VALID"][1], before
        # its own certificate, as its TLS layer's ACME step gets it (HTTP-01 on the BBB site's port 80)
        issue = next(s for s in layer.steps if s.name.startswith("TLS certificate from ACME")).apply.split("\n")[0]
        got = deployed.sh(issue.replace("--quiet ", ""))
        assert got.returncode == 0, got.stdout + got.stderr
        lay(BBB_TLS, web.render("web/tls.conf.j2", cert=f"{live}/fullchain.pem", key=f"{live}/privkey.pem"))
        lay(BBB_SITE, conf.replace("/etc/nginx/snippets/schoolctl-tls.conf", BBB_TLS))
        lay("/root/bbb-nftables.conf", rules)
        assert deployed.sh(f"{RELOAD_NGINX} && nft -f /root/bbb-nftables.conf").returncode == 0
        good = audit()
        assert {k: s for k, (s, _) in good.items()} == {k: "pass" for k in ids}, good
        assert "udp 16384-32768" in good["BBB-HOST-FIREWALL-INBOUND"][1]
        breaks = {
            "BBB-HOST-FIREWALL-INBOUND": ("nft add rule inet schoolctl input tcp dport 8080 accept", "tcp 8080"),
            "BBB-HOST-EGRESS-DENY": ("nft insert rule inet schoolctl output ip daddr 10.213.0.1 tcp dport 9 accept",
                                     "10.213.0.1:9"),
            # nginx negotiates the protocol in the listen socket's default server (the school's): TLS 1.0 needs
            # the http level, security level 0 and the snippets (as tests/lab/test_audit_host.py breaks it)
            "BBB-TLS-PROTOCOLS": (
                "sed -i 's/^    server_tokens off;/&\\n    ssl_protocols TLSv1 TLSv1.1 TLSv1.2 TLSv1.3;\\n"
                "    ssl_ciphers HIGH:!aNULL:!MD5:@SECLEVEL=0;/' /etc/nginx/nginx.conf && "
                "sed -i -e 's/^ssl_protocols .*/ssl_protocols TLSv1 TLSv1.1 TLSv1.2 TLSv1.3;/' "
                "-e 's/^ssl_ciphers \\(.*\\);/ssl_ciphers \\1:ECDHE-ECDSA-AES128-SHA:@SECLEVEL=0;/' "
                f"{SCHOOL_TLS} {BBB_TLS} && {RELOAD_NGINX}", "TLS 1.0 TLSv1"),
            "BBB-TLS-CIPHERS": (f"sed -i 's/^ssl_ciphers \\(.*\\);/ssl_ciphers \\1:ECDHE-ECDSA-NULL-SHA:@SECLEVEL=0;/' "
                                f"{BBB_TLS} && {RELOAD_NGINX}", "ACCEPTED"),
            "BBB-CERT-VALID": (f"sed -i 's|{live}/|/etc/schoolctl/tls/|' {BBB_TLS} && {RELOAD_NGINX}", "SAN"),
            "BBB-HSTS": (f"sed -i '/Strict-Transport-Security/d' {BBB_SITE} && {RELOAD_NGINX}",
                         "no strict-transport-security"),
        }
        kept = {"/etc/nginx/nginx.conf": "/root/bbb-nginx.bak", SCHOOL_TLS: "/root/bbb-school-tls.bak",
                BBB_TLS: "/root/bbb-tls.bak", BBB_SITE: "/root/bbb-site.bak"}
        saved = " && ".join(f"cp -p {path} {copy}" for path, copy in kept.items())
        restore = " && ".join([*(f"cp -p {copy} {path}" for path, copy in kept.items()),
                               "nft -f /root/bbb-nftables.conf", RELOAD_NGINX])
        for cid, (command, shown) in breaks.items():
            assert deployed.sh(f"{saved} && {command}").returncode == 0, cid
            try:
                found = audit()
                assert found[cid][0] == "fail" and shown in found[cid][1], (cid, found[cid])
            finally:
                assert deployed.sh(restore).returncode == 0
    finally:
        deployed.sh(f"for b in /root/bbb-school-tls.bak; do [ -e $b ] && cp -p $b {SCHOOL_TLS}; done; "
                    f"rm -f {BBB_SITE} {BBB_TLS} /root/bbb-*.bak /root/bbb-nftables.conf; "
                    f"rm -rf /etc/bigbluebutton; nft -f /etc/nftables.conf; {RELOAD_NGINX}")
        (deployed.schools / f"{SCHOOL}.yaml").write_text(school_yaml({"recordings": False}), encoding="utf-8")


def test_apt_repository_key_is_checked_before_apt_trusts_it(deployed: Env, tmp_path: Path) -> None:
    """The apt-repository step (used with a real `apt_repos.jitsi` / BigBlueButton's) on this Debian 13
    host, with keys made here and served on the host's loopback: a key with another fingerprint is
    refused and nothing lands in sources.list.d; the pinned one is installed, then `check` passes."""
    import shutil

    from schoolctl.config.model import AptRepo
    from schoolctl.deploy.apt_repo import APT_SCRIPT, apt_repo
    from schoolctl.deploy.site import Site

    if not shutil.which("gpg"):
        pytest.skip("gpg is needed on the controller to make test keys")
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    gpg = {"GNUPGHOME": str(home), "PATH": "/usr/bin:/bin"}
    keys = {}
    for name in ("pinned", "other"):
        subprocess.run(["gpg", "--batch", "--passphrase", "", "--quick-gen-key", f"{name} <{name}@example.org>",
                        "rsa2048", "sign", "never"], env=gpg, check=True, capture_output=True)
        armored = subprocess.run(["gpg", "--armor", "--export", f"{name}@example.org"], env=gpg, check=True,
                                 capture_output=True, text=True).stdout
        listing = subprocess.run(["gpg", "--with-colons", "--fingerprint", f"{name}@example.org"], env=gpg,
                                 check=True, capture_output=True, text=True).stdout
        keys[name] = (armored, next(x.split(":")[9] for x in listing.splitlines() if x.startswith("fpr:")))
    served = "/root/apt-key-test"
    deployed.sh(f"rm -rf {served} && mkdir -p {served}")
    for name, (armored, _) in keys.items():
        deployed.lab.run(HOST, f"cat > {served}/{name}.asc", input=armored, check=True)
    server = deployed.sh(f"cd {served} && (setsid python3 -m http.server 18080 --bind 127.0.0.1 >/dev/null 2>&1 "
                         f"</dev/null & echo $! > {served}.pid) && sleep 1")
    assert server.returncode == 0
    repo = AptRepo(url="http://127.0.0.1:18080/repo", suite="stable/", components=[],
                   key_url="http://127.0.0.1:18080/other.asc", fingerprint=keys["pinned"][1])
    site = Site(school=None, secret=lambda name, length=32: None)  # type: ignore[arg-type]
    try:
        files, [step] = apt_repo(site, "schoolctl-test", repo)
        for f in files:
            deployed.lab.run(HOST, f"mkdir -p $(dirname {f.path}) && cat > {f.path} && chmod {f.mode} {f.path}",
                             input=f.data.decode(), check=True)
        refused = deployed.sh(step.apply)
        assert refused.returncode == 1 and f"not the pinned {keys['pinned'][1]}" in refused.stderr
        assert deployed.sh(step.check).returncode == 1
        assert deployed.sh("ls /etc/apt/sources.list.d/schoolctl-schoolctl-test.sources "
                           "/etc/apt/keyrings/schoolctl-schoolctl-test.gpg").returncode != 0
        deployed.sh("sed -i 's#/other.asc#/pinned.asc#' /etc/schoolctl/apt/schoolctl-test.json")
        installed = deployed.sh(step.apply)
        assert installed.returncode == 0, installed.stderr
        assert deployed.sh(step.check).returncode == 0
        sources = deployed.sh("cat /etc/apt/sources.list.d/schoolctl-schoolctl-test.sources").stdout
        assert "Signed-By: /etc/apt/keyrings/schoolctl-schoolctl-test.gpg" in sources
        assert deployed.sh("stat -c %a /etc/apt/keyrings/schoolctl-schoolctl-test.gpg").stdout.strip() == "644"
    finally:
        # gpg started an agent for the test keyring: it would outlive the test
        subprocess.run(["gpgconf", "--kill", "gpg-agent"], env=gpg, capture_output=True, check=False)
        deployed.sh(f"kill $(cat {served}.pid); rm -rf {served} {served}.pid /etc/schoolctl/apt/schoolctl-test.* "
                    "/etc/apt/sources.list.d/schoolctl-schoolctl-test.sources "
                    "/etc/apt/keyrings/schoolctl-schoolctl-test.gpg; true")
    assert APT_SCRIPT == "/usr/local/sbin/schoolctl-apt-repo"
