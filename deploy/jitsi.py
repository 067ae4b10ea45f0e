"""Jitsi Meet on the school server: a private video room for a class, on nobody else's servers.

- A "secure domain": only the school's people (LDAP, over TLS to the identity layer's slapd) open
  rooms: prosody's `mod_auth_ldap` (Debian's prosody-modules + lua-ldap) binds as the person.
  Guests (`guest.meet.<domain>`, anonymous) may join an opened room only when `privacy.guests`;
  with `privacy.lobby` they wait in the lobby until a moderator lets them in.
- The school's own coturn is the only STUN/TURN: time-limited credentials from a shared secret
  (the TURN REST scheme), relays never reach private networks. Upstream's defaults pointing at
  meet-jit-si-turnrelay.jitsi.net (config.js p2p STUN, jvb.conf STUN mapping written by jvb's
  postinst) are replaced.
- config.js / interface_config.js: no third-party requests, gravatar, analytics, deep links,
  app-store promotion, recording, streaming or transcription (see templates/jitsi/config.js.j2).
  Recording stays off even when `privacy.recordings` allows it: a Jitsi recording lands on a
  teacher's device (local recording) or needs Jibri, neither of which can be deleted on schedule;
  recorded classes belong in BigBlueButton, whose recordings are.
- Served by the platform nginx (`server_block`); prosody BOSH/websocket and jvb's colibri-ws only
  on loopback.

Packages: jicofo, jitsi-videobridge2, jitsi-meet-web and jitsi-meet-prosody (its prosody plugins:
lobby, client_proxy, jitsi-anonymous) come from Jitsi's apt repository (fleet `apt_repos.jitsi`,
key fingerprint pinned and checked before apt trusts it). With `apt_repos.jitsi: null` (a city that
ships them another way, or the lab) only the Debian side is deployed: prosody with the secure
domain and LDAP, coturn, the nginx site and the web config; `NOTE` says so in the plan.
"""

from __future__ import annotations

import json
import shlex
from typing import TYPE_CHECKING

from schoolctl.deploy.identity import ldap_settings
from schoolctl.deploy.render import TEMPLATES, render
from schoolctl.deploy.site import Site
from schoolctl.deploy.state import APPS, Directory, File, Layer, Service, Step
from schoolctl.deploy.web import server_block

if TYPE_CHECKING:
    from schoolctl.config.model import AptRepo

PROSODY_SECRETS = "/etc/prosody/schoolctl"
SECRETS = "/etc/schoolctl/secrets"
APT_SCRIPT = "/usr/local/sbin/schoolctl-apt-repo"
APT_CONF = "/etc/schoolctl/apt"
STATE = "/var/lib/schoolctl/jitsi"
TURN_CONF = "/etc/turnserver.conf"
MEET_ROOT = "/usr/share/jitsi-meet"
NOTE_FILE = "/etc/jitsi/meet/SCHOOLCTL-NOTE"
# prosody's unit is Type=simple: wait (10 s at most) until it listens before talking to it
WAIT_PROSODY = ("i=0; until ss -Hltn | grep -q '127.0.0.1:5222 '; do i=$((i+1)); [ $i -le 50 ] || "
                "{ echo 'prosody does not listen on 127.0.0.1:5222' >&2; exit 1; }; sleep 0.2; done")
DEBIAN_PACKAGES = ["prosody", "prosody-modules", "lua-ldap", "lua-unbound", "coturn"]
JITSI_PACKAGES = ["jitsi-videobridge2", "jicofo", "jitsi-meet-web", "jitsi-meet-prosody"]
NOTE = ("apt_repos.jitsi is null: only the Debian side of Jitsi Meet is deployed (prosody with the "
        "secure domain and LDAP, coturn, nginx site, web config); jicofo, jitsi-videobridge2 and "
        "jitsi-meet-web must come from the city's own packages")
# Relays must not reach internal networks (coturn's security guidance; jitsi-meet-turnserver's list).
DENIED_PEERS = [
    "0.0.0.0-0.255.255.255", "10.0.0.0-10.255.255.255", "100.64.0.0-100.127.255.255",
    "127.0.0.0-127.255.255.255", "169.254.0.0-169.254.255.255", "172.16.0.0-172.31.255.255",
    "192.0.0.0-192.0.0.255", "192.0.2.0-192.0.2.255", "192.88.99.0-192.88.99.255",
    "192.168.0.0-192.168.255.255", "198.18.0.0-198.19.255.255", "198.51.100.0-198.51.100.255",
    "203.0.113.0-203.0.113.255", "224.0.0.0-255.255.255.255",
    "::1", "::ffff:0.0.0.0-::ffff:255.255.255.255", "64:ff9b::-64:ff9b::ffff:ffff",
    "100::-100::ffff:ffff:ffff:ffff", "2001::-2001:1ff:ffff:ffff:ffff:ffff:ffff:ffff",
    "2002::-2002:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "fc00::-fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    "fe80::-febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
]
CSP_TEMPLATE = ("default-src 'self'; script-src 'self' 'unsafe-inline' 'unsafe-eval' 'wasm-unsafe-eval'; "
                "style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; media-src 'self' blob: data:; "
                "font-src 'self' data:; worker-src 'self' blob:; connect-src 'self' wss://{host}; "
                "frame-ancestors 'self'; base-uri 'self'; form-action 'self'")
PERMISSIONS = ("camera=(self), microphone=(self), display-capture=(self), autoplay=(self), geolocation=(), "
               "payment=(), usb=(), browsing-topics=()")


# --- upstream apt repositories (shared with deploy/bigbluebutton.py) ----------------------------

def apt_repo(site: Site, name: str, repo: AptRepo) -> tuple[list[File], list[Step]]:
    """The files and the step that add `repo` as /etc/apt/sources.list.d/schoolctl-NAME.sources, signed
    by a keyring that the step fetches and installs only when its fingerprint is the pinned one."""
    keyring = f"/etc/apt/keyrings/schoolctl-{name}.gpg"
    sources = f"/etc/apt/sources.list.d/schoolctl-{name}.sources"
    staged = f"{APT_CONF}/{name}.sources"
    lines = ["Types: deb", f"URIs: {repo.url}", f"Suites: {repo.suite}"]
    if repo.components:
        lines.append(f"Components: {' '.join(repo.components)}")
    lines.append(f"Signed-By: {keyring}")
    conf = {"key_url": repo.key_url, "fingerprint": repo.fingerprint, "keyring": keyring, "sources": sources,
            "staged": staged}
    files = [
        File(APT_SCRIPT, (TEMPLATES / "jitsi" / "apt-repo.py").read_text(), "0755"),
        File(f"{APT_CONF}/{name}.json", json.dumps(conf, indent=2, sort_keys=True) + "\n"),
        File(staged, "# Managed by schoolctl\n" + "\n".join(lines) + "\n"),
    ]
    proxy = f"https_proxy={shlex.quote(site.proxy)} " if site.proxy else ""
    step = Step(f"apt repository {name} (key {repo.fingerprint[-16:]} pinned)",
                check=f"{APT_SCRIPT} check {name}", apply=f"{proxy}{APT_SCRIPT} install {name}", timeout=300)
    return files, [step]


def apt_conf_dir() -> Directory:
    return Directory(APT_CONF)


# --- the pieces ---------------------------------------------------------------------------------

def coturn_file(site: Site, realm: str, port: int, allowed: list[str] | None = None,
                secret_name: str = "turn_secret") -> File:
    """coturn's config: the shared secret inside, so root:turnserver 0640 and hidden from plans."""
    conf = render("jitsi/turnserver.conf.j2", realm=realm, port=port, secret=site.secret(secret_name),
                  denied=DENIED_PEERS, allowed=allowed or [])
    return File(TURN_CONF, conf, "0640", "root", "turnserver", secret=True, restart=("coturn",))


def _allowed_peers(site: Site) -> list[str]:
    """The server's own address when it is a literal IP: jvb behind NAT is reached through the relay."""
    import ipaddress

    try:
        return [str(ipaddress.ip_address(site.school.server.address))]
    except ValueError:
        return []


def nginx_body(site: Site) -> str:
    meet = site.fqdn("jitsi")
    return render("jitsi/nginx-site.conf.j2", root=MEET_ROOT, meet=meet)


def csp(site: Site) -> str:
    return CSP_TEMPLATE.format(host=site.fqdn("jitsi"))


def web_config(site: Site) -> dict[str, str]:
    """config.js and interface_config.js, per the school's policy."""
    school, privacy = site.school, site.school.privacy
    meet = site.fqdn("jitsi")
    etherpad = f"https://{site.fqdn('etherpad')}/p/" if school.has("etherpad") else None
    j = school.services.jitsi
    assert j is not None
    ctx = dict(meet=meet, domain=site.fqdn(), guests=privacy.guests, lobby=privacy.lobby,
               language=school.languages[0], turn_port=j.turn_port, etherpad=etherpad, school_name=school.name)
    return {f"/etc/jitsi/meet/{meet}-config.js": render("jitsi/config.js.j2", **ctx),
            f"/etc/jitsi/meet/{meet}-interface_config.js": render("jitsi/interface_config.js.j2", **ctx)}


def _accounts_step(meet: str) -> Step:
    """focus and jvb accounts on auth.<meet>, passwords piped on stdin; re-registered when they change."""
    auth = f"auth.{meet}"
    marker = f"{STATE}/accounts.applied"
    files = f"{SECRETS}/jitsi_focus {SECRETS}/jitsi_jvb"
    register = "".join(
        f"p=$(cat {SECRETS}/jitsi_{user}); printf '%s\\n%s\\n' \"$p\" \"$p\" | prosodyctl adduser "
        f"{user}@{auth} >/dev/null 2>&1 || printf '%s\\n%s\\n' \"$p\" \"$p\" | prosodyctl passwd "
        f"{user}@{auth} >/dev/null\n" for user in ("focus", "jvb"))
    return Step(f"XMPP accounts focus and jvb on {auth}",
                check=f'[ "$(cat {files} | sha256sum)" = "$(cat {marker} 2>/dev/null)" ] && '
                      f"systemctl is-active -q prosody",
                apply=f"systemctl is-active -q prosody || systemctl restart prosody\n{WAIT_PROSODY}\n{register}"
                      f"cat {files} | sha256sum > {marker}")


def running_current(unit: str, paths: list[str]) -> Step:
    """`unit` runs and started after its config files last changed: a deploy interrupted between
    writing a file and restarting the unit (a failed check, a lost connection) is healed next time.
    ctime, not mtime: uploaded files carry mtime 0."""
    newest = " ".join(paths)
    return Step(f"{unit} runs with its current configuration",
                check=f"systemctl is-active -q {unit} && "
                      f"[ \"$(stat -c %Z {newest} | sort -n | tail -n1)\" -le \"$(date -d \"$(systemctl show -p "
                      f"ActiveEnterTimestamp --value {unit})\" +%s)\" ]",
                apply=f"systemctl restart {unit}")


def layer(site: Site) -> Layer | None:
    school = site.school
    j = school.services.jitsi
    if j is None:
        return None
    privacy = school.privacy
    meet = site.fqdn("jitsi")
    # in the lab upstream repositories are out of reach: deploy the Debian side only, as with null
    repo = school.fleet.apt_repos.jitsi if site.upstream_apt else None
    full = repo is not None
    s = ldap_settings(site)
    turn_secret = site.secret("turn_secret")
    prosody_conf = render(
        "jitsi/prosody.cfg.lua.j2", meet=meet, ldap=s, secrets=PROSODY_SECRETS, guests=privacy.guests,
        lobby=privacy.lobby, jitsi_plugins=full, turn_port=j.turn_port, log_days=privacy.log_retention_days)
    files = [
        File("/etc/prosody/prosody.cfg.lua", prosody_conf, "0640", "root", "prosody",
             check="prosodyctl check config >/dev/null", restart=("prosody",)),
        File(f"{PROSODY_SECRETS}/ldap_password", s.bind_password.reveal(), "0640", "root", "prosody", secret=True,
             restart=("prosody",)),
        File(f"{PROSODY_SECRETS}/turn_secret", turn_secret.reveal(), "0640", "root", "prosody", secret=True,
             restart=("prosody",)),
        File(f"{SECRETS}/jitsi_focus", site.secret("jitsi_focus").reveal(), "0600", secret=True),
        File(f"{SECRETS}/jitsi_jvb", site.secret("jitsi_jvb").reveal(), "0600", secret=True),
        coturn_file(site, meet, j.turn_port, _allowed_peers(site)),
        *(File(path, text) for path, text in web_config(site).items()),
        server_block(site, "jitsi", nginx_body(site), csp(site), PERMISSIONS),
    ]
    pre_files: list[File] = []
    pre_steps: list[Step] = []
    packages = list(DEBIAN_PACKAGES)
    services = [Service("prosody"), Service("coturn")]
    directories = [Directory("/etc/jitsi"), Directory("/etc/jitsi/meet"),
                   Directory(PROSODY_SECRETS, "0750", "root", "prosody"), Directory(STATE, "0700")]
    if not full:
        files.append(File(NOTE_FILE, NOTE + "\n"))
    else:
        assert repo is not None
        repo_files, repo_steps = apt_repo(site, "jitsi", repo)
        pre_files += repo_files
        pre_steps += [*repo_steps, _preseed(meet)]
        packages += JITSI_PACKAGES
        services += [Service("jicofo"), Service("jitsi-videobridge2")]
        ctx = dict(meet=meet, focus=site.secret("jitsi_focus"), jvb=site.secret("jitsi_jvb"))
        files += [
            File("/etc/jitsi/jicofo/jicofo.conf", render("jitsi/jicofo.conf.j2", **ctx), "0640", "root", "jitsi",
                 secret=True, restart=("jicofo",)),
            File("/etc/jitsi/videobridge/jvb.conf", render("jitsi/jvb.conf.j2", **ctx), "0640", "root", "jitsi",
                 secret=True, restart=("jitsi-videobridge2",)),
            File("/etc/jitsi/videobridge/sip-communicator.properties",
                 render("jitsi/sip-communicator.properties.j2", **ctx), "0640", "root", "jitsi",
                 restart=("jitsi-videobridge2",)),
        ]
    return Layer(
        name="jitsi", round=APPS,
        pre_files=[*pre_files], pre_steps=pre_steps,
        packages=packages,
        directories=[*([apt_conf_dir()] if full else []), *directories],
        files=files,
        services=services,
        steps=[running_current("prosody", ["/etc/prosody/prosody.cfg.lua", f"{PROSODY_SECRETS}/ldap_password",
                                           f"{PROSODY_SECRETS}/turn_secret"]),
               running_current("coturn", [TURN_CONF]),
               *([running_current("jicofo", ["/etc/jitsi/jicofo/jicofo.conf"]),
                  running_current("jitsi-videobridge2", ["/etc/jitsi/videobridge/jvb.conf",
                                                        "/etc/jitsi/videobridge/sip-communicator.properties"])]
                 if full else []),
               _accounts_step(meet)],
    )


def _preseed(meet: str) -> Step:
    """Hostname and "own certificate" answers, so the packages neither prompt nor make certificates."""
    answers = [
        f"jitsi-videobridge2 jitsi-videobridge/jvb-hostname string {meet}",
        f"jitsi-meet-prosody jitsi-videobridge/jvb-hostname string {meet}",
        f"jicofo jitsi-videobridge/jvb-hostname string {meet}",
        "jitsi-meet-web-config jitsi-meet/cert-choice select I want to use my own certificate",
        "jitsi-meet-web-config jitsi-meet/cert-path-crt string /etc/schoolctl/tls/fullchain.pem",
        "jitsi-meet-web-config jitsi-meet/cert-path-key string /etc/schoolctl/tls/privkey.pem",
        "jitsi-meet-web-config jitsi-meet/jaas-choice boolean false",
    ]
    text = "\n".join(answers)
    return Step(f"debconf answers for Jitsi Meet ({meet}, own certificate)",
                check=f"debconf-show jitsi-videobridge2 2>/dev/null | grep -qF 'jvb-hostname: {meet}' && "
                      "debconf-show jitsi-meet-web-config 2>/dev/null | grep -qF 'I want to use my own certificate'",
                apply=f"debconf-set-selections <<'EOF'\n{text}\nEOF")
