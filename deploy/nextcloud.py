"""Nextcloud (PHP-FPM pool `nextcloud`, PostgreSQL, Redis by socket, APCu) with the school's LDAP
users and privacy defaults.

- Code: /srv/nextcloud/releases/<version> (owned by the nextcloud user, as upstream's manual has it;
  config.php lives in its config/), `current` points at the version in use. Data:
  /var/lib/nextcloud/data (0770 nextcloud:nextcloud, as Nextcloud itself resets it; the group
  has no other member; outside the code and web root). Log:
  /var/log/nextcloud/nextcloud.log, rotated daily by logrotate and kept privacy.log_retention_days.
- config.php is Nextcloud's own: installed once with `occ maintenance:install`. Its --database-pass
  option is the only non-interactive way in (its prompt refuses a non-terminal stdin): the value
  comes from a root-only file via `$(cat)`, so it is on occ's argv on the server for the ~20 s of
  the install, never in a logged command. The admin account is installed with a throwaway
  password and then given the real one with `user:resetpassword --password-from-env`. Then every
  wanted system and app value is set in ONE `occ config:import` of a rendered JSON file (plus
  app:disable/app:enable), checked by schoolctl-nextcloud-config against that file with one `php -r`
  reading the merged config.php and one psql query of the app values (~10x faster than booting
  Nextcloud for `occ config:list`). The two secrets Nextcloud keeps (database and LDAP bind
  passwords) are imported from a root-only JSON on stdin, re-imported when their file changes.
- Upgrade: a new version is unpacked beside the old one. A guard (before any change to Nextcloud)
  refuses a downgrade and a skipped major version (Nextcloud upgrades one major at a time). Then:
  maintenance mode on, the database dumped (deploy.database.backup_command), a rollback point
  written, config.php copied into the new release, `current` moved, `occ upgrade`; when that fails,
  everything goes back (deploy/upgrade.py): `current` to the old release (its config.php as it was),
  the dump restored, PHP-FPM restarted, maintenance mode off. The old release folder stays (the way
  back of `schoolctl rollback`).
- Users: the school's LDAP (user_ldap, ldaps://127.0.0.1:636, CA from /etc/ldap/ldap.conf), login
  by uid; the internal user name is the uid, so leavers are deleted by uid (`delete_user_command`).
- Background jobs: cron.php every 5 minutes from a systemd timer, as the nextcloud user.
"""

from __future__ import annotations

import base64
import json
import re
import shlex
from typing import Any

from schoolctl.deploy import artifacts, upgrade
from schoolctl.deploy.database import credentials, secret_file
from schoolctl.deploy.identity import MUST_CHANGE, checked_uid, ldap_settings
from schoolctl.deploy.php import FPM, PHP_VERSION, REDIS_SOCKET, pool_socket, service_user
from schoolctl.deploy.render import integer, render
from schoolctl.deploy.site import Site
from schoolctl.deploy.state import APPS, Directory, File, Layer, Service, Step
from schoolctl.deploy.web import CERT, server_block
from schoolctl.errors import RenderError

USER = service_user("nextcloud")
HOME = "/var/lib/nextcloud"
DATA = f"{HOME}/data"
LOG_DIR = "/var/log/nextcloud"
LOG_FILE = f"{LOG_DIR}/nextcloud.log"
CURRENT = "/srv/nextcloud/current"
CONF_DIR = "/etc/schoolctl/nextcloud"
WANTED = f"{CONF_DIR}/config.json"
SECRET_JSON = "/etc/schoolctl/secrets/nextcloud-config.json"
ADMIN_PASSWORD_FILE = "/etc/schoolctl/secrets/nextcloud_admin"
STATE_DIR = "/var/lib/schoolctl/nextcloud"
CONFIG_SCRIPT = "/usr/local/sbin/schoolctl-nextcloud-config"
CLASSES_SCRIPT = "/usr/local/sbin/schoolctl-nextcloud-classes"
CLASSES_FOLDER = "Classes"                 # the admin's folder holding one shared folder per class
ADMIN = "admin"
LDAP_PREFIX = "s01"
PHP = f"/usr/bin/php{PHP_VERSION}"
UPLOAD_MB = 2048

# Shipped apps that talk to third parties or advertise upstream: disabled wherever present
# (survey_client: usage survey; nextcloud_announcements: pushfeed; weather_status: a weather API
# even without internet; support/updatenotification: upstream's servers; firstrunwizard and
# recommendations: app store links; app_api: external app daemons).
DISABLED_APPS = ("survey_client", "nextcloud_announcements", "weather_status", "support", "updatenotification",
                 "firstrunwizard", "recommendations", "app_api")
ENABLED_APPS = ("user_ldap",)


def occ(args: str) -> str:
    """Shell: occ as the nextcloud user, from the code folder."""
    return f"(cd {CURRENT} && runuser -u {USER} -- {PHP} occ {args})"


def quota(site: Site) -> str:
    """The per-user default quota as Nextcloud writes it ('5 GB')."""
    q = site.school.services.nextcloud.default_quota  # type: ignore[union-attr]
    m = re.match(r"^(\d+) ?(MB|GB|TB)$", q)
    if not m:
        raise RenderError(f"nextcloud default_quota {q!r}: expected e.g. '5 GB'")
    return f"{m.group(1)} {m.group(2)}"


def ldap_app_config(site: Site) -> dict[str, str]:
    """user_ldap's app config (keys prefixed with the configuration id), without the bind password."""
    s = ldap_settings(site)
    people_filter = s.user_filter
    values = {
        "ldap_host": f"ldaps://{s.host}", "ldap_port": str(s.port), "ldap_tls": "0",
        "ldap_turn_off_cert_check": "0",
        "ldap_dn": s.bind_dn, "ldap_base": s.base_dn, "ldap_base_users": s.people_dn,
        "ldap_base_groups": s.groups_dn,
        "ldap_userfilter_objectclass": "inetOrgPerson", "ldap_user_filter_mode": "1",
        "ldap_userlist_filter": people_filter,
        # nobody logs in while still on the letter's password (pwdReset): Moodle, the hub, makes them
        # change it first
        "ldap_login_filter_mode": "1",
        "ldap_login_filter": f"(&{people_filter}(!({MUST_CHANGE}=TRUE))({s.uid_attr}=%uid))",
        "ldap_loginfilter_username": "1", "ldap_attributes_for_user_search": s.uid_attr,
        "ldap_group_filter_mode": "1", "ldap_group_filter": s.group_filter,
        "ldap_groupfilter_objectclass": "groupOfNames", "ldap_group_member_assoc_attribute": s.member_attr,
        "ldap_group_display_name": s.group_name_attr, "ldap_attributes_for_group_search": s.group_name_attr,
        "ldap_display_name": s.display_name_attr, "ldap_email_attr": s.mail_attr,
        "ldap_expert_username_attr": s.uid_attr, "ldap_expert_uuid_user_attr": "entryUUID",
        "ldap_expert_uuid_group_attr": "entryUUID",
        "ldap_nested_groups": "0", "ldap_paging_size": "500", "turn_on_pwd_change": "0",
        "ldap_configuration_active": "1",
    }
    return {f"{LDAP_PREFIX}{k}": v for k, v in values.items()}


def system_config(site: Site) -> dict[str, Any]:
    """The config.php values schoolctl owns (everything else is Nextcloud's own)."""
    school = site.school
    fqdn = site.fqdn("nextcloud")
    return {
        # where it lives and how it is reached
        "trusted_domains": [fqdn],
        "overwrite.cli.url": f"https://{fqdn}",
        "overwriteprotocol": "https",
        "htaccess.RewriteBase": "/",
        "default_language": school.languages[0],
        "default_locale": {"ca": "ca_ES", "es": "es_ES", "en": "en_GB"}[school.languages[0]],
        "default_phone_region": "ES",
        # caches and file locks
        "memcache.local": "\\OC\\Memcache\\APCu",
        "memcache.distributed": "\\OC\\Memcache\\Redis",
        "memcache.locking": "\\OC\\Memcache\\Redis",
        "redis": {"host": REDIS_SOCKET, "port": 0, "timeout": 1.5},
        # no traffic to upstream or third parties
        "has_internet_connection": False,
        "connectivity_check_domains": [],
        "appstoreenabled": False,
        "updatechecker": False,
        "upgrade.disable-web": True,
        "lookup_server": "",
        "gs.enabled": False,
        "gs.federation": "internal",
        "reference_opengraph": False,
        "simpleSignUpLink.shown": False,
        "knowledgebaseenabled": False,
        # profile fields stay on this server (no federation scope), no public profile pages
        "account_manager.default_property_scope": {
            "displayname": "v2-local", "email": "v2-local", "avatar": "v2-local", "pronouns": "v2-local",
            "phone": "v2-private", "address": "v2-private", "website": "v2-private", "twitter": "v2-private",
            "fediverse": "v2-private"},
        "profile.enabled": False,
        # users' first contact: empty home, no templates
        "skeletondirectory": "",
        "templatedirectory": "",
        # logs: warnings and up, in /var/log, rotated by logrotate (Nextcloud's own rotation off)
        "log_type": "file",
        "logfile": LOG_FILE,
        "logfilemode": 0o640,
        "loglevel": 2,
        "log_rotate_size": 0,
        "logtimezone": school.fleet.timezone,
        # security
        "auth.bruteforce.protection.enabled": True,
        "ratelimit.protection.enabled": True,
        "login_form_autocomplete": False,
        "enable_previews": True,
        "enabledPreviewProviders": ["OC\\Preview\\PNG", "OC\\Preview\\JPEG", "OC\\Preview\\GIF",
                                    "OC\\Preview\\BMP", "OC\\Preview\\MarkDown", "OC\\Preview\\TXT"],
        "preview_max_x": 2048,
        "preview_max_y": 2048,
        "localstorage.allowsymlinks": False,
        "allow_local_remote_servers": False,
        "maintenance_window_start": 1,
    }


def app_config(site: Site) -> dict[str, dict[str, str]]:
    """App values (strings, as Nextcloud stores them)."""
    return {
        "core": {"backgroundjobs_mode": "cron", "shareapi_allow_links": "yes"},
        "files": {"default_quota": quota(site)},
        "files_sharing": {"lookupServerEnabled": "no", "lookupServerUploadEnabled": "no",
                          "outgoing_server2server_share_enabled": "no",
                          "incoming_server2server_share_enabled": "no",
                          "outgoing_server2server_group_share_enabled": "no",
                          "incoming_server2server_group_share_enabled": "no"},
        "user_ldap": ldap_app_config(site),
    }


def array_config(site: Site) -> dict[str, dict[str, list[str]]]:
    """App values of type array. Nextcloud 32+ keeps user_ldap's list of configurations in one
    (`configuration_prefixes`); a fresh install fills it, empty, when user_ldap is enabled, before
    schoolctl's LDAP values exist: without it set, no LDAP user logs in."""
    major = int(site.school.versions.get("nextcloud", "0").split(".")[0])
    return {"user_ldap": {"configuration_prefixes": [LDAP_PREFIX]}} if major >= 32 else {}


def wanted_config(site: Site) -> dict[str, Any]:
    """The JSON `occ config:import` reads (no secrets)."""
    return {"system": system_config(site), "apps": app_config(site)}


def secret_config(site: Site) -> dict[str, Any]:
    """The secret values Nextcloud keeps: the database password and the LDAP bind password (which
    user_ldap stores base64-encoded)."""
    ldap_pw = ldap_settings(site).bind_password.reveal()
    return {"system": {"dbpassword": credentials(site, "nextcloud").password.reveal()},
            "apps": {"user_ldap": {f"{LDAP_PREFIX}ldap_agent_password": base64.b64encode(ldap_pw.encode()).decode()}}}


def delete_user_command(site: Site, uid: str) -> str:
    """Shell (root, on the server): delete Nextcloud user `uid` and their files. Works for an LDAP
    user who is still in the directory (about to be deleted, or suspended), one who vanished from it
    already (user_ldap must first mark them deleted: `ldap:check-user --force`), and succeeds when
    the user is not (or no longer) in Nextcloud."""
    u = shlex.quote(checked_uid(uid))
    return (f"if [ -f {CURRENT}/config/config.php ] && {occ(f'user:info {u}')} >/dev/null 2>&1; then\n"
            f"  {occ(f'ldap:check-user --force {u}')} >/dev/null 2>&1 || true\n"
            f"  {occ(f'user:delete {u}')}\n"
            f"fi")


def classes_command() -> str:
    """Shell (as root, the payload of cli/users/classes.py on stdin): each class's folder shared to its
    group; nothing when Nextcloud is not installed yet (the next import does it)."""
    return (f"if [ -f {CURRENT}/config/config.php ] && [ -x {CLASSES_SCRIPT} ]; then {CLASSES_SCRIPT}; "
            "else echo '{\"changes\": [], \"notes\": [\"not installed yet (deploy the school)\"]}'; fi")


def _installed_check() -> str:
    return f"grep -Eq \"'installed' => true\" {CURRENT}/config/config.php"


def occ_in(code: str, args: str) -> str:
    """Shell: occ of the release in `code` (a shell word, e.g. "$old")."""
    return f"(cd {code} && runuser -u {USER} -- {PHP} occ {args})"


APP = upgrade.App(
    "nextcloud", "Nextcloud",
    # by hand (`schoolctl rollback`): users out first; the release in use may be a broken one
    stop=f"{occ('maintenance:mode --on')} >/dev/null 2>&1 || true",
    start=(f"systemctl try-restart {FPM}\n"
           f"{occ('maintenance:mode --off')} >/dev/null || {{ echo 'nextcloud: maintenance mode could not be "
           f"turned off' >&2; return {upgrade.FAILED}; }}"))


def _versions_match(code: str = CURRENT) -> str:
    return (f"{PHP} -r 'include \"{code}/version.php\"; include \"{code}/config/config.php\"; "
            "exit(implode(\".\", $OC_Version) === $CONFIG[\"version\"] ? 0 : 1);'")


def upgrade_script(rel: artifacts.Release) -> str:
    """Shell: from the installed release `current` points at to `rel`, data kept, or back."""
    path, config = shlex.quote(rel.path), shlex.quote(f"{rel.path}/config/config.php")
    old = '"$old"'
    return "\n".join([
        upgrade.rollback_function(APP),
        upgrade.maintenance_lock(APP),
        f"echo \"nextcloud: upgrading ${{old##*/}} -> {rel.version}\" >&2",
        f"{occ_in(old, 'maintenance:mode --on')} >/dev/null",
        f"if ! {{ {upgrade.dump(APP)}; }} >&2; then {occ_in(old, 'maintenance:mode --off')} >/dev/null; "
        "echo 'nextcloud: the dump failed; nothing changed' >&2; exit 1; fi",
        upgrade.save_point(APP, rel.version),
        # the old release keeps its own config.php as it was: the way back
        f"cp -p \"$old/config/config.php\" {config}",
        f"ln -sfn {path} {CURRENT}.new && mv -T {CURRENT}.new {CURRENT}",
        f"systemctl try-restart {FPM}",
        f"if ! {occ('upgrade -n')} >&2; then",
        *(f"  {line}" for line in upgrade.on_failure(APP, f"occ upgrade to {rel.version}").splitlines()),
        "fi",
        f"{occ('maintenance:mode --off')} >/dev/null",
        f"echo \"nextcloud: now {rel.version}\" >&2",
    ])


def _steps(site: Site, rel: artifacts.Release) -> list[Step]:
    db = credentials(site, "nextcloud")
    path = shlex.quote(rel.path)
    current = Step(
        f"nextcloud {rel.version} in use ({CURRENT}; an upgrade: dumped first, rolled back on failure)",
        check=f'[ "$(readlink {CURRENT})" = {path} ]',
        apply=(f"old=$(readlink {CURRENT} || true)\n"
               f"if [ -n \"$old\" ] && [ -f \"$old/config/config.php\" ] && "
               f"grep -Eq \"'installed' => true\" \"$old/config/config.php\"; then\n"
               f"{upgrade_script(rel)}\n"
               f"else\n"
               f"ln -sfn {path} {CURRENT}.new && mv -T {CURRENT}.new {CURRENT}\n"
               f"systemctl try-restart {FPM}\n"
               f"fi"),
        timeout=3600)
    install = Step(
        "nextcloud installed (occ maintenance:install)",
        check=_installed_check(),
        apply=(occ("maintenance:install -n --database pgsql "
                   f"--database-name {db.name} --database-host {db.host} --database-port {db.port} "
                   f"--database-user {db.user} --database-pass \"$(cat {secret_file('nextcloud')})\" "
                   f"--admin-user {ADMIN} --admin-pass \"$(openssl rand -hex 24)\" --data-dir {DATA}")
               + " >/dev/null\n"
               # the installer logs to the default data folder in the code tree before it knows --data-dir
               f"rm -rf {CURRENT}/data {DATA}/nextcloud.log"),
        timeout=900)
    # the same release, its database behind (an upgrade cut short before this schoolctl, an app
    # update): dumped, upgraded; back to the point's release when it was this upgrade's
    repair = Step(
        f"nextcloud database at {rel.version} (occ upgrade)",
        check=_versions_match(),
        apply=(f"{upgrade.rollback_function(APP)}\n"
               f"{{ {upgrade.dump(APP)}; }} >&2 || exit 1\n"
               f"if ! {occ('upgrade -n')} >&2; then\n"
               f"  if grep -qx 'to={rel.version}' {APP.point} 2>/dev/null; then\n"
               + "\n".join(f"    {line}" for line in upgrade.on_failure(APP, "occ upgrade").splitlines()) + "\n"
               f"  fi\n  {occ('maintenance:mode --off')} >/dev/null 2>&1 || true\n  exit 1\nfi\n"
               f"{occ('maintenance:mode --off')} >/dev/null"),
        timeout=3600)
    secrets = Step(
        "nextcloud database and LDAP bind passwords",
        check=f'[ "$(sha256sum < {SECRET_JSON})" = "$(cat {STATE_DIR}/secrets.applied 2>/dev/null)" ]',
        apply=(f"{occ('config:import')} < {SECRET_JSON} >/dev/null\n"
               f"sha256sum < {SECRET_JSON} > {STATE_DIR}/secrets.applied"))
    admin = Step(
        f"nextcloud {ADMIN} password",
        check=f'[ "$(sha256sum < {ADMIN_PASSWORD_FILE})" = "$(cat {STATE_DIR}/admin.applied 2>/dev/null)" ]',
        apply=(f"OC_PASS=\"$(cat {ADMIN_PASSWORD_FILE})\" && export OC_PASS && "
               f"(cd {CURRENT} && runuser -u {USER} -- {PHP} occ user:resetpassword "
               f"--password-from-env {ADMIN}) >/dev/null\n"
               f"sha256sum < {ADMIN_PASSWORD_FILE} > {STATE_DIR}/admin.applied"))
    config = Step("nextcloud settings, apps and LDAP (occ config:import)",
                  check=f"{CONFIG_SCRIPT} check", apply=f"{CONFIG_SCRIPT} apply", timeout=600)
    if site.restoring:  # a restore's first deploy: the archive brings config.php, the database and the data
        return [artifacts.fetch_step(site, rel, owner=USER), current]
    return [artifacts.fetch_step(site, rel, owner=USER), current, install, repair, secrets, admin, config,
            tidy_step(rel.version)]


def tidy_step(version: str) -> Step:
    """What Nextcloud's admin overview asks for after an install or upgrade and does not do itself:
    missing indices, columns and primary keys, and the expensive repairs (the mimetype migrations);
    once per release (marked with its version)."""
    marker = f"{STATE_DIR}/tidied"
    return Step(f"nextcloud {version}: missing indices added, mimetype migrations run",
                check=f"grep -qxF {shlex.quote(version)} {marker}",
                apply=(f"{occ('db:add-missing-indices -n')} >&2\n{occ('db:add-missing-columns -n')} >&2\n"
                       f"{occ('db:add-missing-primary-keys -n')} >&2\n"
                       f"{occ('maintenance:repair --include-expensive -n')} >/dev/null\n"
                       f"echo {shlex.quote(version)} > {marker}"),
                timeout=3600)


def nginx_body(site: Site) -> str:
    return render("nextcloud/nginx.conf.j2", root=CURRENT, socket=pool_socket("nextcloud"), upload_mb=UPLOAD_MB)


def layer(site: Site) -> Layer | None:
    if not site.school.has("nextcloud"):
        return None
    rel = artifacts.release(site, "nextcloud")
    days = integer(site.school.privacy.log_retention_days, "privacy.log_retention_days")
    wanted = json.dumps(wanted_config(site), indent=1, sort_keys=True) + "\n"
    files = [
        File(WANTED, wanted, "0640", "root", USER),
        File(SECRET_JSON, json.dumps(secret_config(site), sort_keys=True), "0600", secret=True),
        File(ADMIN_PASSWORD_FILE, site.secret("nextcloud_admin").reveal(), "0600", secret=True),
        File(CONFIG_SCRIPT, render("nextcloud/config.py.j2", wanted=WANTED, current=CURRENT, user=USER, php=PHP,
                                   disabled=list(DISABLED_APPS), enabled=list(ENABLED_APPS),
                                   arrays=array_config(site)), "0755"),
        File(CLASSES_SCRIPT, render("nextcloud/classes.py.j2", base=f"https://{site.fqdn('nextcloud')}", admin=ADMIN,
                                    password_file=ADMIN_PASSWORD_FILE, folder=CLASSES_FOLDER, cert=CERT,
                                    current=CURRENT, user=USER, php=PHP), "0700"),
        File("/etc/systemd/system/nextcloud-cron.service",
             render("nextcloud/cron.service.j2", user=USER, php=PHP, current=CURRENT)),
        File("/etc/systemd/system/nextcloud-cron.timer", render("nextcloud/cron.timer.j2")),
        File("/etc/logrotate.d/nextcloud", render("nextcloud/logrotate.j2", log_dir=LOG_DIR, user=USER, days=days)),
        server_block(site, "nextcloud", nginx_body(site)),
    ]
    return Layer(
        name="nextcloud", round=APPS,
        # before any change to Nextcloud: no downgrade, no skipped major version
        pre_steps=[upgrade.guard_step(APP, rel.version, site.id, one_major=True)],
        packages=["bzip2", "openssl"],   # the release is a .tar.bz2; a throwaway install password
        directories=[Directory(HOME, "0750", USER, USER), Directory(DATA, "0770", USER, USER),
                     Directory(LOG_DIR, "0750", USER, USER), Directory(CONF_DIR, "0755"),
                     Directory(STATE_DIR, "0700")],
        files=files,
        services=[Service("nextcloud-cron.timer")],
        steps=_steps(site, rel),
    )
