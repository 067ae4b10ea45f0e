"""BigBlueButton: classes with recordings under the school's policy, on its own Ubuntu 24.04 host
(BigBlueButton 4.0, `noble-400`) or on the city's pool; and Moodle's BigBlueButton activity wired to it.

The BBB host is deployed by deploy/bbb_host.py (its own pyinfra State); this module holds the
layer for that host and `moodle_settings(site)` for the Moodle layer. What bbb-install.sh does
is followed for the repository and packages; its certificate, haproxy and firewall parts are not
(TLS and firewall are ours). The school's policy goes into BigBlueButton's own override files:

- /etc/bigbluebutton/bbb-web.properties: the API secret (`securitySalt`, what `bbb-conf
  --setsecret` writes), guest policy, recording switches, learning dashboard, checksums.
- /etc/bigbluebutton/bbb-html5.yml: no browser speech recognition (Web Speech sends voices to
  third parties), no external video players, no external client logging, no fallback STUN.
- /etc/bigbluebutton/turn-stun-servers.xml (replaces the packaged one with stun:stun.freeswitch.org):
  the BBB host's own coturn (as bbb-install sets up), with its own shared secret. Not the school
  server's: that one's firewall denies outbound traffic, so it cannot relay media to the BBB host.
- Retention: /etc/default/bigbluebutton-cron-config (variables of /etc/cron.daily/bigbluebutton),
  the commented-out raw cleanup turned on, and /etc/cron.daily/schoolctl-bbb-retention deleting
  every recording older than `privacy.recording_retention_days` (all of them, daily, when
  recordings are not allowed), and purging /var/bigbluebutton/deleted.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from schoolctl.deploy import web
from schoolctl.deploy.apt_repo import apt_conf_dir, apt_repo
from schoolctl.deploy.render import hostname, integer, render
from schoolctl.deploy.site import Site
from schoolctl.deploy.state import APPS, SYSTEM, Directory, File, Layer, Service, Step, running_current
from schoolctl.deploy.turn import TURN_CONF, coturn_file
from schoolctl.errors import RenderError

PREFLIGHT = SYSTEM - 1  # before anything else touches the BBB host
ETC = "/etc/bigbluebutton"
WEB_PROPERTIES = f"{ETC}/bbb-web.properties"
HTML5_YML = f"{ETC}/bbb-html5.yml"
TURN_XML = f"{ETC}/turn-stun-servers.xml"
AKKA_CONF = f"{ETC}/bbb-apps-akka.conf"
CRON_CONFIG = "/etc/default/bigbluebutton-cron-config"
CRON_DAILY = "/etc/cron.daily/bigbluebutton"
RETENTION = "/etc/cron.daily/schoolctl-bbb-retention"
SECRETS = "/etc/schoolctl/secrets"
SECRET_FILE = f"{SECRETS}/bbb_secret"
# bbb-install.sh's need_pkg list for 4.0, then the meta package (pulls bbb-web, bbb-html5, ...)
PACKAGES = ["curl", "ca-certificates", "apparmor-utils", "haveged", "openjdk-21-jre", "bbb-yq-go", "bigbluebutton"]
# the other upstream repositories bbb-install adds (NodeSource for node 22, Docker for the office
# conversion container): used as soon as the fleet pins them under apt_repos
EXTRA_REPOS = ("nodesource", "docker")
OS_CHECK = '. /etc/os-release && [ "$ID" = ubuntu ] && [ "$VERSION_ID" = 24.04 ]'


def bbb_host(site: Site) -> str:
    """The BBB host's public name: its address when that is a DNS name, else bbb.<school domain>."""
    bbb = site.school.services.bigbluebutton
    address = bbb.server.address if bbb and bbb.server else ""
    if address and not address.startswith("lab:"):
        try:
            ipaddress.ip_address(address)
        except ValueError:
            return hostname(address, "the BigBlueButton server's address")
    return f"bbb.{site.fqdn()}"


def server_url(site: Site) -> str:
    """The API base Moodle calls: the city pool's (Scalelite) or the school's own BBB host."""
    bbb = site.school.services.bigbluebutton
    assert bbb is not None
    if bbb.pool:
        pool = site.school.fleet.bbb_pool
        if pool is None:
            raise RenderError(f"{site.id}: bigbluebutton.pool is true but the fleet has no bbb_pool")
        return pool.url
    return f"https://{bbb_host(site)}/bigbluebutton/"


def moodle_settings(site: Site) -> dict[str, Any]:
    """mod_bigbluebuttonbn's settings (core config names, set without --component): the server URL
    and the shared secret (a cli.secrets.Secret: write it through a root-only file, never argv)."""
    bbb = site.school.services.bigbluebutton
    if bbb is None:
        return {}
    if bbb.pool:
        pool = site.school.fleet.bbb_pool
        fleet_secret = site.fleet_secret
        if pool is None or fleet_secret is None:
            raise RenderError(f"{site.id}: the BBB pool needs the fleet's bbb_pool and its secret "
                             "(Site.fleet_secret)")
        secret = fleet_secret(pool.secret_name)
    else:
        secret = site.secret("bbb_secret")
    return {
        "bigbluebuttonbn_server_url": server_url(site),
        "bigbluebuttonbn_shared_secret": secret,
        # bbb-web accepts sha256/384/512 only (supportedChecksumAlgorithms below); the pool too
        "bigbluebuttonbn_checksum_algorithm": "SHA256",
    }


def retention(site: Site) -> dict[str, int]:
    """Days things are kept on the BBB host, per policy (0 = delete at the next daily run)."""
    p = site.school.privacy
    keep = integer(p.recording_retention_days, "privacy.recording_retention_days") if p.recordings else 0
    logs = integer(p.log_retention_days, "privacy.log_retention_days")
    return {
        "recordings": keep,
        "history": max(1, min(5, keep)),          # presentations, caches [5]
        "unrecorded_days": 1,                     # raw data of meetings never recorded [14]
        "published_days": max(1, keep),           # raw data of published recordings [14]
        "log_history": min(28, logs),             # [28]
    }


TURN_PORT = 3478
TURN_SECRET = "bbb_turn_secret"


def _allowed_peers(site: Site) -> list[str]:
    """The BBB host's own address when it is a literal IP (behind NAT its media is reached through the relay)."""
    server = site.school.services.bigbluebutton.server if site.school.services.bigbluebutton else None
    try:
        return [str(ipaddress.ip_address(server.address))] if server else []
    except ValueError:
        return []


def web_properties(site: Site) -> str:
    p = site.school.privacy
    days = integer(p.learning_dashboard_retention_days, "privacy.learning_dashboard_retention_days")
    disabled = ["externalVideos", "liveTranscription", "importPresentationWithAnnotationsFromBreakoutRooms"]
    if days == 0:
        disabled.append("learningDashboard")
    return render("bigbluebutton/bbb-web.properties.j2", host=bbb_host(site), secret=site.secret("bbb_secret"),
                  guest_policy="ASK_MODERATOR" if p.guests else "ALWAYS_DENY", recordings=p.recordings,
                  dashboard=days > 0, dashboard_minutes=days * 24 * 60, disabled=",".join(disabled),
                  school_name=site.school.name)


def html5_yml(site: Site) -> str:
    return render("bigbluebutton/bbb-html5.yml.j2", language=site.school.languages[0],
                  help=f"https://{site.fqdn()}/")


def turn_xml(site: Site) -> str:
    return render("bigbluebutton/turn-stun-servers.xml.j2", host=bbb_host(site), port=TURN_PORT,
                  secret=site.secret(TURN_SECRET))


def _steps(site: Site) -> list[Step]:
    recordings = site.school.privacy.recordings
    raw = "remove_raw_of_published_recordings"
    akka = (f'grep -qxF "  sharedSecret=\\"$(cat {SECRET_FILE})\\"" {AKKA_CONF}')
    steps = [
        Step("bbb-apps-akka uses the API secret (what bbb-conf --setsecret does)",
             check=f"[ ! -e {AKKA_CONF} ] || {akka}",
             apply=(f"python3 - {AKKA_CONF} {SECRET_FILE} <<'EOF'\n"
                    "import re, sys\n"
                    "conf, secret = sys.argv[1], open(sys.argv[2]).read().strip()\n"
                    "text = open(conf).read()\n"
                    "line = '  sharedSecret=\"' + secret + '\"'\n"
                    "new, n = re.subn(r'(?m)^\\s*sharedSecret\\s*=.*$', lambda m: line, text)\n"
                    "if n == 0:\n"
                    "    new = text.rstrip('\\n') + '\\nservices {\\n' + line + '\\n}\\n'\n"
                    "open(conf, 'w').write(new)\n"
                    "EOF\nsystemctl try-restart bbb-apps-akka")),
    ]
    if recordings:
        steps.append(Step("daily cleanup of raw data of published recordings turned on",
                          check=f"grep -qE '^[[:space:]]*{raw}[[:space:]]*$' {CRON_DAILY}",
                          apply=f"sed -i -E 's/^[[:space:]]*#[[:space:]]*({raw})[[:space:]]*$/\\1/' {CRON_DAILY} && "
                                f"grep -qE '^[[:space:]]*{raw}[[:space:]]*$' {CRON_DAILY}"))
    return steps


def preflight() -> Layer:
    """A guarded first step: nothing is done to a host that is not Ubuntu 24.04."""
    return Layer(name="bigbluebutton-os", round=PREFLIGHT, pre_steps=[Step(
        "the BigBlueButton host runs Ubuntu 24.04 (BigBlueButton 4.0 needs it)",
        check=OS_CHECK,
        apply=". /etc/os-release 2>/dev/null; echo \"refusing to install BigBlueButton 4.0: this host runs "
              "${PRETTY_NAME:-an unknown OS}, not Ubuntu 24.04\" >&2; exit 1")])


NGINX_SITE = "/etc/nginx/sites-available/bigbluebutton"   # enabled by BigBlueButton's package


def tls_layer(site: Site) -> Layer:
    """The BBB host's TLS and nginx, as the school server's (deploy/web.py): a certificate for its
    name per the fleet's tls.mode (ACME over HTTP-01 with a placeholder until then, the city CA, or
    the provided one if it covers the name), the Mozilla intermediate TLS snippet, nginx.conf with
    the school's logging policy, and BigBlueButton's site on 443 with HSTS."""
    host = bbb_host(site)
    pre_steps, tls_files, steps, packages, services = web.tls(site, [host], f"{site.id}-bbb")
    site_conf = render("bigbluebutton/nginx-site.conf.j2", host=host, webroot=web.ACME_WEBROOT,
                       access_log=web.access_log(site, "bigbluebutton"), http_log=web.access_log(site, "http"))
    return Layer(
        name="bigbluebutton-tls", round=APPS, pre_steps=pre_steps, packages=["openssl", *packages],
        directories=[Directory("/etc/schoolctl"), Directory(web.TLS_DIR, "0700"), Directory(web.ACME_WEBROOT)],
        files=[*tls_files, web.nginx_conf(site), web.tls_snippet(), web.nginx_logrotate(site),
               File(f"{web.SITES}/default", "", absent=True, reload=("nginx",)),
               File(NGINX_SITE, site_conf, check=web.NGINX_CHECK, reload=("nginx",))],
        services=services, steps=steps)


def layer(site: Site) -> Layer | None:
    """The BBB host's own layer (not part of the school server's LAYERS)."""
    bbb = site.school.services.bigbluebutton
    if bbb is None or bbb.pool:
        return None
    fleet = site.school.fleet
    pre_files: list[File] = []
    pre_steps: list[Step] = []
    for name in ("bigbluebutton", *EXTRA_REPOS):
        repo = getattr(fleet.apt_repos, name, None)
        if repo is not None:
            files, steps = apt_repo(site, name, repo)
            pre_files += [f for f in files if f not in pre_files]
            pre_steps += steps
    keep = retention(site)
    group = "bigbluebutton"
    files = [
        File(SECRET_FILE, site.secret("bbb_secret").reveal(), "0600", secret=True),
        File(WEB_PROPERTIES, web_properties(site), "0640", "root", group, secret=True, restart=("bbb-web",)),
        File(HTML5_YML, html5_yml(site), "0644", restart=("bbb-html5",)),
        File(TURN_XML, turn_xml(site), "0640", "root", group, secret=True, restart=("bbb-web",)),
        File(CRON_CONFIG, render("bigbluebutton/cron-config.j2", **keep)),
        File(RETENTION, render("bigbluebutton/retention.sh.j2", days=keep["recordings"]), "0755"),
        coturn_file(site, bbb_host(site), TURN_PORT, _allowed_peers(site), secret_name=TURN_SECRET),
    ]
    packages = [*PACKAGES, "coturn"]
    services = [Service("nginx"), Service("bbb-web"), Service("cron"), Service("coturn")]
    return Layer(
        name="bigbluebutton", round=APPS,
        pre_files=pre_files, pre_steps=pre_steps,
        packages=packages,
        directories=[apt_conf_dir()],
        files=files,
        services=services,
        steps=[*_steps(site), running_current("coturn", [TURN_CONF]),
               running_current("bbb-web", [WEB_PROPERTIES, TURN_XML])],
    )
