"""Etherpad, PostgreSQL, behind nginx at pad.<domain>: 2.x (etherpad-lite) on Debian's Node.js 20
and pnpm 10; 3.x (engines: Node >= 24, pnpm >= 11) on the fleet's Node.js (`artifacts.node`, unpacked
to /srv/node/releases/<version>) and pnpm 11 (installed by Debian's npm into its own prefix, run by
that Node.js: first on PATH).

- Code: /srv/etherpad/releases/<version> (the release archive, owned by the etherpad user), built
  once per version with pnpm (2.x: `pnpm install --frozen-lockfile`, `pnpm run build:etherpad`; 3.x
  (decision): production dependencies only, `pnpm install --frozen-lockfile --prod`, so no lint, test
  or UI build tooling lands on a school server and 3.x's web admin UI and OIDC pages are not built:
  schoolctl owns settings.json and no plugin is installed from the web; a marker
  holds the release's sha256) through the city proxy (npm `proxy`/`https-proxy`/`cafile` in
  /etc/npmrc and the etherpad user's ~/.npmrc), with SCARF_ANALYTICS=false. The build writes the
  PATH it used (which Node.js, which pnpm) into the release (`.schoolctl-path`, root's); the unit
  runs `current` through a launcher that takes that PATH and starts the server with node directly
  (what `pnpm run prod` runs; upstream's 3.x image does the same), so the unit is the same for
  every version and a rollback needs no other unit.
- Upgrade: the new release is built while the old one runs; then the service stops, the database
  is dumped (deploy.database.backup_command), `current` moves, the new release starts and must
  answer /health within 120 s, or everything goes back (deploy/upgrade.py). Etherpad 3.x keeps the
  2.x database as it is (same `store` table of ueberdb2), so pads and authors carry over.
- Config outside the code: /etc/etherpad/settings.json and APIKEY.txt (both 0600 etherpad), passed
  with --settings/--apikey, so a new release never loses them.
- Access (decision): Etherpad has no LDAP login that installs offline (ep_ldapauth is an old,
  unmaintained plugin), so pads are reachable ONLY through sessions created with the HTTP API
  (`requireSession`, `editOnly`). Moodle creates them: schoolctl installs its own small Moodle plugin,
  local_schoolpads (templates/etherpad/schoolpads/), which gives every course (and the front page)
  an Etherpad group; whoever may see the course gets "Pads" in its navigation, teachers create pads
  there, and opening one creates an author session (cookie `sessionID` on the school's domain, which
  pad.<domain> reads). A pad name alone opens nothing; nobody creates pads by URL. The API needs
  the key (`authenticationMethod: apikey`); /admin needs the admin user's password
  (basic auth; `users.admin`, a generated secret). No SSO clients are configured, so the
  built-in OIDC provider has no client with a default secret.
- Privacy: no IP logging, loglevel WARN (journald keeps it privacy.log_retention_days), metrics
  off, settings not shown in /admin, update check aimed at a closed loopback port (2.x has no off
  switch; egress is blocked by the firewall anyway; 3.x: `privacy.updateCheck`/`pluginCatalog`
  false and its self-updater `updates.tier: off`), neutral default pad text.
- The service listens on 127.0.0.1:9001 only, runs as etherpad with a hardened systemd unit.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import quote_plus

from schoolctl.deploy import artifacts, upgrade
from schoolctl.deploy.database import credentials
from schoolctl.deploy.identity import checked_uid
from schoolctl.deploy.render import TEMPLATES, proxy_url, render
from schoolctl.deploy.site import Site
from schoolctl.deploy.state import APPS, Directory, File, Layer, Step
from schoolctl.deploy.web import NGINX_CHECK, server_block

USER = "etherpad"
HOME = "/var/lib/etherpad"
ETC = "/etc/etherpad"
SETTINGS = f"{ETC}/settings.json"
APIKEY = f"{ETC}/APIKEY.txt"
PORT = 9001
LISTEN = "127.0.0.1"
PNPM_VERSION = "10.20.0"            # Etherpad 2.x, installed by Debian's npm into /usr/local
PNPM = "/usr/local/bin/pnpm"
PNPM3_VERSION = "11.1.2"            # Etherpad 3.x (engines pnpm >= 11.1.2, its packageManager pin)
PNPM3_PREFIX = f"/usr/local/lib/pnpm-{PNPM3_VERSION}"
DEBIAN_PATH = "/usr/local/bin:/usr/bin:/bin"
LAUNCHER = "/usr/local/lib/schoolctl/etherpad-start"
CURRENT = "/srv/etherpad/current"
RUNTIME_PATH = ".schoolctl-path"    # in a release: the PATH its build used (which Node.js and pnpm)
HEALTH_WAIT = 120
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
UPDATE_SERVER = "http://127.0.0.1:9"   # discard port: nothing listens, the update check fails at once
UNIT = "etherpad"
WS_MAP = "/etc/nginx/conf.d/schoolctl-etherpad.conf"
DEFAULT_PAD_TEXT = {
    "ca": "Aquest document és compartit: el que hi escriviu ho veuen els altres participants.\n",
    "es": "Este documento es compartido: lo que escribáis lo ven los demás participantes.\n",
    "en": "This document is shared: what you write here is seen by the other participants.\n",
}


def npmrc(site: Site) -> str:
    """npm/pnpm settings: the city proxy and the system CA bundle; no registry name (npm's default)."""
    lines = ["# Managed by schoolctl: npm and pnpm reach the registry through the city proxy.",
             f"cafile={CA_BUNDLE}", "fund=false", "audit=false", "update-notifier=false"]
    if site.proxy:  # an ini file: a newline or `;` in the value could add a setting (e.g. script-shell)
        proxy = proxy_url(site.proxy, "proxy")
        lines += [f"proxy={proxy}", f"https-proxy={proxy}"]
    return "\n".join(lines) + "\n"


def major(version: str) -> int:
    return int(version.split(".")[0])


def settings(site: Site) -> dict[str, Any]:
    """settings.json as data (contains the database and admin passwords: a secret file)."""
    db = credentials(site, "etherpad")
    lang = site.school.languages[0]
    version = site.school.versions.get("etherpad", "2")
    # 3.x: the self-updater (GitHub releases) and the hourly version and plugin-catalogue checks off
    # (2.x has none of these settings and warns about unknown ones, so they are 3.x only)
    newer = {"updates": {"tier": "off"}, "privacy": {"updateCheck": False, "pluginCatalog": False}} \
        if major(version) >= 3 else {}
    return {
        **newer,
        "title": f"Etherpad · {site.school.name}",
        "favicon": None,
        "skinName": "colibris",
        "skinVariants": "super-light-toolbar super-light-editor light-background",
        "ip": LISTEN,
        "port": PORT,
        "showSettingsInAdminPage": False,
        "enableMetrics": False,
        "showRecentPads": False,
        "dbType": "postgres",
        "dbSettings": {"user": db.user, "host": db.host, "port": db.port, "password": db.password.reveal(),
                       "database": db.name},
        "defaultPadText": DEFAULT_PAD_TEXT[lang],
        "padOptions": {"lang": lang, "userName": None, "userColor": None},
        "updateServer": UPDATE_SERVER,
        "suppressErrorsInPadText": True,
        "requireSession": True,
        "editOnly": True,
        "minify": True,
        "maxAge": 21600,
        "abiword": None,
        "soffice": None,
        "allowUnknownFileEnds": False,
        "requireAuthentication": False,
        "requireAuthorization": False,
        "trustProxy": True,
        "cookie": {"keyRotationInterval": 86400000, "sameSite": "Lax", "sessionLifetime": 86400000,
                   "sessionRefreshInterval": 3600000},
        "disableIPlogging": True,
        "automaticReconnectionTimeout": 0,
        "users": {"admin": {"password": site.secret("etherpad_admin").reveal(), "is_admin": True}},
        "socketTransportProtocols": ["websocket", "polling"],
        "socketIo": {"maxHttpBufferSize": 50000},
        "loadTest": False,
        "dumpOnUncleanExit": False,
        "importExportRateLimiting": {"windowMs": 90000, "max": 10},
        "importMaxFileSize": 52428800,
        "commitRateLimiting": {"duration": 1, "points": 10},
        "authenticationMethod": "apikey",
        "sso": {"issuer": f"https://{site.fqdn('etherpad')}", "clients": []},
        "exposeVersion": False,
        "loglevel": "WARN",
        "logLayoutType": "basic",
        "enableAdminUITests": False,
        "lowerCasePadIds": False,
        "enableDarkMode": False,
    }


MOODLE_PLUGIN = "local_schoolpads"
PLUGIN_SOURCE = TEMPLATES / "etherpad" / "schoolpads"


def moodle_plugin_settings(site: Site) -> dict[str, Any]:
    """local_schoolpads' settings, forced in Moodle's config.php (the API key is a cli.secrets.Secret)."""
    if not site.school.has("etherpad"):
        return {}
    return {"apiurl": f"http://{LISTEN}:{PORT}", "apikey": site.secret("etherpad_api"),
            "padurl": f"https://{site.fqdn('etherpad')}", "cookiedomain": site.school.domain}


def moodle_plugin(site: Site, code: str) -> tuple[list[Directory], list[File]]:
    """The plugin's folders and PHP files under Moodle's code dir `code`, readable by PHP-FPM's user
    and owned by root (none when the school has no Etherpad)."""
    if not site.school.has("etherpad"):
        return [], []
    base = f"{code}/local/schoolpads"
    sources = sorted(PLUGIN_SOURCE.rglob("*.php"))
    folders = sorted({p for f in sources for p in f.relative_to(PLUGIN_SOURCE).parents})
    return ([Directory(str(PurePosixPath(base) / d), "0755") for d in folders],
            [File(f"{base}/{f.relative_to(PLUGIN_SOURCE)}", f.read_text(), "0644") for f in sources])


def moodle_plugin_version() -> int:
    """The plugin's $plugin->version (Moodle's upgrade installs it when the database has another)."""
    text = (PLUGIN_SOURCE / "version.php").read_text()
    return int(re.search(r"\$plugin->version = (\d+);", text).group(1))  # type: ignore[union-attr]


FORMER_AUTHOR = {"ca": "Antic membre", "es": "Antiguo miembro", "en": "Former member"}


def delete_user_command(site: Site, uid: str) -> str:
    """Shell (root, on the server) for a leaver: their Etherpad author (made by Moodle's pads) loses
    their name; what they wrote stays in the class's shared pads, with no name on it (Etherpad's API
    deletes no author). Succeeds when Etherpad is not installed; fails when it is but does not answer.
    The API key goes from its root-only file into curl's stdin, never onto a command line."""
    name = quote_plus(FORMER_AUTHOR[site.school.languages[0]])
    form = shlex.quote(f"authorMapper=moodle-{checked_uid(uid)}&name={name}")
    return (f"if [ -e /etc/systemd/system/{UNIT}.service ]; then\n"
            f"  printf 'apikey=%s&%s' \"$(cat {APIKEY})\" {form} | curl -fsS --noproxy '*' --max-time 20 --data @- "
            f"http://{LISTEN}:{PORT}/api/1.3.0/createAuthorIfNotExistsFor | grep -q '\"code\":0'\n"
            "else echo 'etherpad: not installed, nothing to do'; fi")


def nginx_body() -> str:
    return render("etherpad/nginx.conf.j2", port=PORT, listen=LISTEN)


def csp(site: Site) -> str:
    """Pads may be framed by the school's own Moodle and Nextcloud, nobody else."""
    framers = [f"https://{site.fqdn(s)}" for s in ("moodle", "nextcloud") if site.school.has(s)]
    return "frame-ancestors " + " ".join(["'self'", *framers])


# bounded wait for the port (a first start creates the database tables)
UP = (f"etherpad_up() {{ for i in $(seq {HEALTH_WAIT}); do curl -fsS -o /dev/null --noproxy '*' "
      f"http://{LISTEN}:{PORT}/health 2>/dev/null && return 0; sleep 1; done; "
      f"echo 'etherpad did not answer on its port within {HEALTH_WAIT} s' >&2; return 1; }}")
APP = upgrade.App(
    "etherpad", "Etherpad",
    stop=f"systemctl stop {UNIT} || true",
    start=(f"{UP}\nsystemctl restart {UNIT} && etherpad_up || {{ echo 'etherpad: the previous release did not "
           f"answer either' >&2; return {upgrade.FAILED}; }}"))


def runtime(site: Site, version: str) -> tuple[str, list[Step]]:
    """(PATH for building and running `version`, the steps that provide its Node.js and pnpm): 2.x
    Debian's Node.js 20 with pnpm 10 in /usr/local; 3.x the fleet's Node.js (artifacts.node) and
    pnpm 11, installed by Debian's npm into its own prefix (the mirror's Node.js has no npm or
    corepack) and run by that Node.js, first on PATH."""
    q = shlex.quote
    if major(version) < 3:
        return DEBIAN_PATH, [Step(f"pnpm {PNPM_VERSION}",
                                  check=f'[ "$({PNPM} --version 2>/dev/null)" = {PNPM_VERSION} ]',
                                  apply=(f"SCARF_ANALYTICS=false npm install --global --no-fund --no-audit "
                                         f"pnpm@{PNPM_VERSION} >/dev/null"), timeout=600)]
    node = artifacts.release(site, "node")
    path = f"{PNPM3_PREFIX}/bin:{node.path}/bin:/usr/bin:/bin"
    pnpm = Step(f"pnpm {PNPM3_VERSION} (run by Node.js {node.version})",
                check=f'[ "$(env PATH={q(path)} pnpm --version 2>/dev/null)" = {PNPM3_VERSION} ]',
                # Debian's npm (Node.js 20) only copies the package; pnpm 11 itself runs on Node.js 24
                apply=(f"SCARF_ANALYTICS=false npm install --global --prefix {PNPM3_PREFIX} --no-fund --no-audit "
                       f"--engine-strict=false pnpm@{PNPM3_VERSION} >/dev/null 2>&1 || "
                       f"SCARF_ANALYTICS=false npm install --global --prefix {PNPM3_PREFIX} --no-fund --no-audit "
                       f"--engine-strict=false pnpm@{PNPM3_VERSION}\n"
                       f"node_v=$(env PATH={q(path)} node --version) && "
                       f"echo \"pnpm $(env PATH={q(path)} pnpm --version) on Node.js $node_v\""), timeout=600)
    return path, [artifacts.fetch_step(site, node, owner="root"), pnpm]


def _steps(site: Site, rel: artifacts.Release) -> list[Step]:
    q = shlex.quote
    path, sha = q(rel.path), q(rel.sha256)
    built = q(f"{rel.path}/.schoolctl-built")
    run_path, provide = runtime(site, rel.version)
    env = (f"env HOME={HOME} SCARF_ANALYTICS=false NODE_EXTRA_CA_CERTS={CA_BUNDLE} "
           f"npm_config_userconfig={HOME}/.npmrc pnpm_config_pm_on_fail=ignore PATH={q(run_path)}")
    kept = (f"old=$(readlink {CURRENT} || true)\n"
            f"if [ -n \"$old\" ] && [ \"$old\" != {path} ]; then echo \"etherpad: ${{old##*/}} keeps running, "
            f"unchanged\" >&2; echo \"{upgrade.MARKER} etherpad ${{old##*/}}\" >&2; fi\nexit 1")
    # while an older release runs: it keeps running until this one is built
    log = q(f"{HOME}/build-{rel.version}.log")
    if major(rel.version) >= 3:  # production dependencies only, as upstream's production image runs
        how, install = "pnpm install --prod", (f"runuser -u {USER} -- {env} pnpm install --frozen-lockfile --prod "
                                               f"--reporter=append-only >{log} 2>&1")
    else:
        how, install = "pnpm install, build:etherpad", (
            f"runuser -u {USER} -- {env} pnpm install --frozen-lockfile --reporter=append-only >{log} 2>&1 && "
            f"runuser -u {USER} -- {env} pnpm run build:etherpad >>{log} 2>&1")
    build = Step(f"etherpad {rel.version} built ({how})",
                 check=f"grep -qx {sha} {built}",
                 apply=(f"if ! {{ cd {path} && {install} && "
                        f"install -d -o {USER} -g {USER} -m 0750 {q(rel.path + '/var')}; }}; then\n"
                        f"tail -n 15 {log} >&2\n"
                        f"echo 'etherpad: building {rel.version} failed (the lines above, from {log})' >&2\n"
                        f"{kept}\nfi\n"
                        f"echo {q(run_path)} > {q(rel.path + '/' + RUNTIME_PATH)}\n"
                        f"echo {sha} > {built}"), timeout=1800)
    switch = f"ln -sfn {path} {CURRENT}.new && mv -T {CURRENT}.new {CURRENT}"
    current = Step(
        f"etherpad {rel.version} in use (an upgrade: dumped first, rolled back on failure)",
        check=f'[ "$(readlink {CURRENT})" = {path} ]',
        apply="\n".join([
            f"old=$(readlink {CURRENT} || true)",
            f'if [ -n "$old" ] && [ "$old" != {path} ] && [ -f "$old/.schoolctl-built" ]; then',
            UP, upgrade.rollback_function(APP), upgrade.maintenance_lock(APP),
            f"  echo \"etherpad: upgrading ${{old##*/}} -> {rel.version}\" >&2",
            f"  systemctl stop {UNIT}",
            f"  if ! {{ {upgrade.dump(APP)}; }} >&2; then systemctl start {UNIT}; "
            "echo 'etherpad: the dump failed; the old release runs on' >&2; exit 1; fi",
            f"  {upgrade.save_point(APP, rel.version)}",
            f"  {switch}",
            f"  if ! {{ systemctl restart {UNIT} && etherpad_up; }}; then",
            *(f"    {line}" for line in upgrade.on_failure(APP, f"starting {rel.version}").splitlines()),
            "  fi",
            "else",
            f"  {switch}",
            "fi"]))
    running = Step("etherpad running", check=f"systemctl is-active -q {UNIT} && systemctl is-enabled -q {UNIT}",
                   apply=(f"{UP}\nsystemctl enable -q {UNIT} && systemctl restart {UNIT}\netherpad_up"),
                   timeout=300)
    return [*provide, artifacts.fetch_step(site, rel, owner=USER), build, current, running]


def launcher() -> str:
    """The unit's ExecStart: the server of the release `current` points at, run by the Node.js its
    build used, directly (what `pnpm run prod` runs, as upstream's own image does for 3.x: pnpm 11
    checks the dependencies before every `pnpm run` and may try to reinstall them)."""
    return (f"#!/bin/sh\n# Managed by schoolctl: Etherpad from the release {CURRENT} points at, with the Node.js "
            f"and pnpm\n# its build used (the release's {RUNTIME_PATH}; Debian's for a release built before).\n"
            f"set -eu\ncd {CURRENT}/src\nPATH={DEBIAN_PATH}\n"
            f"if [ -f ../{RUNTIME_PATH} ]; then PATH=$(cat ../{RUNTIME_PATH}); fi\nexport PATH\n"
            'exec node --require tsx/cjs node/server.ts "$@"\n')


def layer(site: Site) -> Layer | None:
    if not site.school.has("etherpad"):
        return None
    rel = artifacts.release(site, "etherpad")
    rc = npmrc(site)
    files = [
        File("/etc/npmrc", rc),
        File(f"{HOME}/.npmrc", rc, "0644", USER, USER),
        File(SETTINGS, json.dumps(settings(site), indent=2, ensure_ascii=False) + "\n", "0600", USER, USER,
             restart=(UNIT,), secret=True),
        File(APIKEY, site.secret("etherpad_api").reveal(), "0600", USER, USER, restart=(UNIT,), secret=True),
        File(LAUNCHER, launcher(), "0755", restart=(UNIT,)),
        File(f"/etc/systemd/system/{UNIT}.service",
             render("etherpad/etherpad.service.j2", user=USER, home=HOME, release=CURRENT, settings=SETTINGS,
                    apikey=APIKEY, launcher=LAUNCHER), restart=(UNIT,)),
        File(WS_MAP, "# Managed by schoolctl: Etherpad's websocket upgrade (used in its nginx site).\n"
             "map $http_upgrade $etherpad_connection {\n    default upgrade;\n    '' close;\n}\n",
             check=NGINX_CHECK, reload=("nginx",)),
        server_block(site, "etherpad", nginx_body(), csp=csp(site)),
    ]
    return Layer(
        name="etherpad", round=APPS,
        pre_steps=[upgrade.guard_step(APP, rel.version, site.id),
                   Step("system user etherpad", check=f"id -u {USER}",
                        apply=(f"useradd --system --user-group --home-dir {HOME} --shell /usr/sbin/nologin {USER}"))],
        # Debian's Node.js and npm: 2.x runs on them; for 3.x npm installs pnpm 11 (a rollback to 2.x
        # finds them still there)
        packages=["nodejs", "npm", *(["xz-utils"] if major(rel.version) >= 3 else [])],  # node's .tar.xz
        directories=[Directory(HOME, "0750", USER, USER), Directory(ETC, "0750", USER, USER),
                     Directory("/usr/local/lib/schoolctl")],
        files=files,
        steps=_steps(site, rel),
    )
