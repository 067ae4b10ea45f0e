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
lobby, client_proxy, jitsi-anonymous) come from one of two sources, told apart in one place
(deploy/jitsi_source.py): Jitsi's pinned apt repository (fleet `apt_repos.jitsi`, for a real school
that reaches it), or the tarballs a city builds itself, in its mirror's `jitsi/` folder with their
SHA256SUMS lines (the lab, or a city without that repository), installed to the same paths, users
and units. With neither only the Debian side is deployed (prosody with the secure domain and
LDAP, coturn, the nginx site and the web config); `NOTE` says so in the plan.
"""

from __future__ import annotations

import re
import shlex

from schoolctl.deploy.identity import ldap_settings
from schoolctl.deploy.jitsi_source import source
from schoolctl.deploy.render import integer, render
from schoolctl.deploy.site import Site
from schoolctl.deploy.state import APPS, Directory, File, Layer, Service, Step, running_current
from schoolctl.deploy.turn import TURN_CONF, coturn_file
from schoolctl.deploy.web import server_block

PROSODY_SECRETS = "/etc/prosody/schoolctl"
SECRETS = "/etc/schoolctl/secrets"
TURN_SECRET = "turn_secret"
STATE = "/var/lib/schoolctl/jitsi"
MEET_ROOT = "/usr/share/jitsi-meet"
NOTE_FILE = "/etc/jitsi/meet/SCHOOLCTL-NOTE"
# prosody's unit is Type=simple: wait (10 s at most) until it listens before talking to it
WAIT_PROSODY = ("i=0; until ss -Hltn | grep -q '127.0.0.1:5222 '; do i=$((i+1)); [ $i -le 50 ] || "
                "{ echo 'prosody does not listen on 127.0.0.1:5222' >&2; exit 1; }; sleep 0.2; done")
DEBIAN_PACKAGES = ["prosody", "prosody-modules", "lua-ldap", "lua-unbound", "coturn"]
NOTE = ("neither Jitsi's apt repository (apt_repos.jitsi) nor Jitsi tarballs in the mirror's jitsi/ folder: only the "
        "Debian side of Jitsi Meet is deployed (prosody with the secure domain and LDAP, coturn, nginx site, web "
        "config); jicofo, jitsi-videobridge2 and jitsi-meet-web must come from the city's own packages")
CSP_TEMPLATE = ("default-src 'self'; script-src 'self' 'unsafe-inline' 'unsafe-eval' 'wasm-unsafe-eval'; "
                "style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; media-src 'self' blob: data:; "
                "font-src 'self' data:; worker-src 'self' blob:; connect-src 'self' wss://{host}; "
                "frame-ancestors 'self'; base-uri 'self'; form-action 'self'")
PERMISSIONS = ("camera=(self), microphone=(self), display-capture=(self), autoplay=(self), geolocation=(), "
               "payment=(), usb=(), browsing-topics=()")


# --- the pieces ---------------------------------------------------------------------------------

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
               language=school.languages[0], turn_port=integer(j.turn_port, "jitsi.turn_port"), etherpad=etherpad,
               school_name=school.name)
    return {f"/etc/jitsi/meet/{meet}-config.js": render("jitsi/config.js.j2", **ctx),
            f"/etc/jitsi/meet/{meet}-interface_config.js": render("jitsi/interface_config.js.j2", **ctx)}


def _accounts_step(meet: str, full: bool) -> Step:
    """focus and jvb accounts on auth.<meet>, passwords piped on stdin; re-registered when they change
    (jicofo and the videobridge start after it, and log in again when the passwords change)."""
    auth = f"auth.{meet}"
    marker = f"{STATE}/accounts.applied"
    files = f"{SECRETS}/jitsi_focus {SECRETS}/jitsi_jvb"
    # prosody's storage file of focus's roster (its host name with every other character %-escaped)
    roster = f"/var/lib/prosody/{re.sub('[^a-zA-Z0-9]', lambda m: f'%{ord(m.group()):02x}', auth)}/roster/focus.dat"
    proxy = shlex.quote(f"focus.{meet}")
    register = "".join(
        f"p=$(cat {SECRETS}/jitsi_{user}); printf '%s\\n%s\\n' \"$p\" \"$p\" | prosodyctl adduser "
        f"{shlex.quote(f'{user}@{auth}')} >/dev/null 2>&1 || printf '%s\\n%s\\n' \"$p\" \"$p\" | prosodyctl passwd "
        f"{shlex.quote(f'{user}@{auth}')} >/dev/null\n" for user in ("focus", "jvb"))
    return Step(f"XMPP accounts focus and jvb on {auth}",
                check=f'[ "$(cat {files} | sha256sum)" = "$(cat {marker} 2>/dev/null)" ] && '
                      f"systemctl is-active -q prosody"
                      + (f" && grep -qF {proxy} {roster}" if full else ""),
                apply=f"systemctl is-active -q prosody || systemctl restart prosody\n{WAIT_PROSODY}\n{register}"
                      # as jitsi-meet-prosody's postinst: focus.<meet> (client_proxy) gets focus's presence, or
                      # every conference request answers service-unavailable. With jicofo stopped: prosody
                      # writes an online account's roster back from memory, over what prosodyctl wrote
                      # (and prosody restarted after it: client_proxy asks for focus's presence as it starts)
                      + (f"systemctl stop jicofo\nprosodyctl mod_roster_command subscribe {proxy} "
                         f"{shlex.quote('focus@' + auth)} >/dev/null\ngrep -qF {proxy} {roster}\n"
                         f"systemctl restart prosody\n{WAIT_PROSODY}\n" if full else "")
                      + f"cat {files} | sha256sum > {marker}"
                      + ("\nsystemctl start jicofo && systemctl try-restart jitsi-videobridge2" if full else ""))


def layer(site: Site) -> Layer | None:
    school = site.school
    j = school.services.jitsi
    if j is None:
        return None
    privacy = school.privacy
    meet = site.fqdn("jitsi")
    src = source(site, meet)
    full = src.full
    s = ldap_settings(site)
    turn_secret = site.secret(TURN_SECRET)
    prosody_conf = render(
        "jitsi/prosody.cfg.lua.j2", meet=meet, ldap=s, secrets=PROSODY_SECRETS, guests=privacy.guests,
        lobby=privacy.lobby, jitsi_plugins=full, turn_port=integer(j.turn_port, "jitsi.turn_port"),
        log_days=privacy.log_retention_days)
    files = [
        File("/etc/prosody/prosody.cfg.lua", prosody_conf, "0640", "root", "prosody",
             check="prosodyctl check config >/dev/null", restart=("prosody",)),
        File(f"{PROSODY_SECRETS}/ldap_password", s.bind_password.reveal(), "0640", "root", "prosody", secret=True,
             restart=("prosody",)),
        File(f"{PROSODY_SECRETS}/turn_secret", turn_secret.reveal(), "0640", "root", "prosody", secret=True,
             restart=("prosody",)),
        File(f"{SECRETS}/jitsi_focus", site.secret("jitsi_focus").reveal(), "0600", secret=True),
        File(f"{SECRETS}/jitsi_jvb", site.secret("jitsi_jvb").reveal(), "0600", secret=True),
        coturn_file(site, meet, j.turn_port, _allowed_peers(site), secret_name=TURN_SECRET),
        *(File(path, text) for path, text in web_config(site).items()),
        server_block(site, "jitsi", nginx_body(site), csp(site), PERMISSIONS),
        *src.files,
    ]
    packages = [*DEBIAN_PACKAGES, *src.packages]
    services = [Service("prosody"), Service("coturn")]
    directories = [Directory("/etc/jitsi"), Directory("/etc/jitsi/meet"),
                   Directory(PROSODY_SECRETS, "0750", "root", "prosody"), Directory(STATE, "0700"),
                   *src.directories]
    if not full:
        files.append(File(NOTE_FILE, NOTE + "\n"))
    else:
        # started by the steps once their XMPP accounts exist: before, both retry their login at once, for
        # as long as the round's other steps take (the videobridge logged 55 MB in 4 minutes of a first deploy)
        services += [Service("jicofo", start=False), Service("jitsi-videobridge2", start=False)]
        ctx = dict(meet=meet, focus=site.secret("jitsi_focus"), jvb=site.secret("jitsi_jvb"),
                   jvb_port=integer(j.jvb_port, "jitsi.jvb_port"))
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
        pre_files=src.pre_files, pre_steps=src.pre_steps,
        packages=packages,
        directories=directories,
        files=files,
        services=services,
        steps=[running_current("prosody", ["/etc/prosody/prosody.cfg.lua", f"{PROSODY_SECRETS}/ldap_password",
                                           f"{PROSODY_SECRETS}/turn_secret"]),
               running_current("coturn", [TURN_CONF]),
               _accounts_step(meet, full),
               *([running_current("jicofo", ["/etc/jitsi/jicofo/jicofo.conf"]),
                  running_current("jitsi-videobridge2", ["/etc/jitsi/videobridge/jvb.conf",
                                                        "/etc/jitsi/videobridge/sip-communicator.properties"])]
                 if full else [])],
    )

