"""Moodle: the release from the mirror or upstream (pinned sha256) under /srv/moodle/releases/<version>,
`current` switched atomically once unpacked; the data root outside the code (/var/lib/moodle/data,
0700, the moodle user's); config.php from a template (root:moodle 0640: it holds the database and
LDAP bind passwords); install once (guarded by `mdl_config`), upgrade when the code's version.php
is newer than the database's; every policy setting set and checked by ONE PHP script; LDAP login
against the school's directory; cron and the LDAP sync as systemd timers; nginx per the release
layout (5.1+ serves `public/`).

Upgrade (a new version while an installed one is in use): a guard refuses a downgrade before any
change; then CLI maintenance mode on, the database dumped, a rollback point written, `current`
moved, caches purged, upgrade.php and the settings; when upgrade.php fails, everything goes back
(deploy/upgrade.py): `current` to the old release (with its own config.php), the dump restored,
caches purged by the old code, PHP-FPM reloaded, maintenance mode off.

Extension points: `settings(site)` returns the dict the settings script applies (component ->
name -> value); BigBlueButton and Etherpad layers add their plugins' settings there.
"""

from __future__ import annotations

import json
import logging
import shlex
from collections.abc import Sequence
from typing import Any

from schoolctl.deploy import artifacts, etherpad, upgrade
from schoolctl.deploy.database import PSQL, backup_command, credentials
from schoolctl.deploy.identity import ldap_settings
from schoolctl.deploy.php import FPM, PHP_VERSION, REDIS_SOCKET, php_cli, pool_socket, service_user
from schoolctl.deploy.render import integer, render
from schoolctl.deploy.site import Site
from schoolctl.deploy.state import APPS, Directory, File, Layer, Service, Step
from schoolctl.deploy.web import server_block

log = logging.getLogger(__name__)

APP = "moodle"
HOME = "/srv/moodle"
CURRENT = f"{HOME}/current"
CONFIG = f"{CURRENT}/config.php"
TOOLS = f"{HOME}/schoolctl"                      # our own CLI scripts (root-owned, readable by moodle)
SETTINGS_SCRIPT = f"{TOOLS}/settings.php"
DELETE_SCRIPT = f"{TOOLS}/delete_user.php"
CLASSES_SCRIPT = f"{TOOLS}/classes.php"
COHORT_PREFIX = "schoolctl-"                     # a class's cohort idnumber: schoolctl-class-3a
VAR = "/var/lib/moodle"
DATAROOT = f"{VAR}/data"
LANGDIR = f"{DATAROOT}/lang"                     # language packs (root-owned: PHP cannot change them)
INSTALLED = f"{VAR}/installed"                   # written after install_database.php succeeded
ADMIN_SECRET = "/etc/schoolctl/secrets/moodle_admin"
REDIS_DB = 1                                     # Nextcloud uses Redis database 0
DPO_ROLE, DPO_USER = "schoolctl_dpo", "privacy-officer"
# Tasks that would call servers outside the school: the H5P hub's content types, moodle.org registration,
# language pack updates from download.moodle.org (the deploy decides the languages).
DISABLED_TASKS = ("\\core\\task\\h5p_get_content_types_task", "\\core\\task\\registration_cron_task",
                  "\\tool_langimport\\task\\update_langpacks_task")
# Moodle needs inline and eval'd scripts (YUI, AMD loader); still nothing from another origin.
CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline' 'unsafe-eval'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data: blob:; font-src 'self' data:; media-src 'self' blob:; connect-src 'self'; "
       "frame-src 'self'; worker-src 'self' blob:; object-src 'none'; base-uri 'self'; form-action 'self'; "
       "frame-ancestors 'self'")


def php(value: Any) -> str:
    """A PHP literal for a str/int/bool (single-quoted strings: no interpolation)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    text = str(value)
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def version_tuple(version: str) -> tuple[int, int]:
    major, minor = (int(x) for x in version.split(".")[:2])
    return major, minor


def serves_public(version: str) -> bool:
    """Moodle 5.1 and later serve (and keep their CLI scripts) under `public/` in the code tree."""
    return version_tuple(version) >= (5, 1)


def code_dir(version: str, base: str = CURRENT) -> str:
    """Where the PHP code (web root, admin/cli, version.php) of `version` lives under `base`."""
    return f"{base}/public" if serves_public(version) else base


def ldap_config(site: Site) -> dict[str, Any]:
    """auth_ldap's settings, forced in config.php (the bind password included)."""
    s = ldap_settings(site)
    cfg: dict[str, Any] = {
        "host_url": s.uri, "ldap_version": 3, "start_tls": 0, "ldapencoding": "utf-8", "pagesize": 250,
        # Moodle's own account: reads like cn=apps, and may set a person's password (never read one)
        "bind_dn": s.moodle_dn, "bind_pw": site.secret("ldap_moodle").reveal(), "user_type": "default",
        "contexts": s.people_dn, "search_sub": 0, "opt_deref": 0, "user_attribute": s.uid_attr,
        "objectclass": "inetOrgPerson", "suspended_attribute": "", "memberattribute": s.member_attr,
        # the password change page writes the new password into the directory (in cleartext over LDAPS:
        # slapd's ppolicy hashes it), after checking the old one; a new account must change it at once
        # (`users import` marks each new person, and an account Moodle creates from the directory too)
        "memberattribute_isdn": 1, "passtype": "plaintext", "preventpassindb": 1, "changepasswordurl": "",
        "stdchangepassword": 1, "forcechangepassword": 1, "expiration": 0, "gracelogins": 0,
        "auth_user_create": 0, "create_context": "", "creators": "", "ntlmsso_enabled": 0,
        # role mapping: the directory's teachers are course creators (synced at login and by the sync task)
        "coursecreatorcontext": s.teachers_dn,
        "removeuser": 1,  # AUTH_REMOVEUSER_SUSPEND: a person gone from ou=people is suspended by the sync
    }
    # Moodle sends anyone without an email to their (locked) profile form, forever: children often have
    # none. auth_ldap takes the LAST non-empty attribute of a list, so "uid,mail" is the real address
    # when there is one, else the username (no '@': Moodle never mails it; the directory stays true).
    email = f"{s.uid_attr.lower()},{s.mail_attr.lower()}"
    for field, attr in (("firstname", s.given_name_attr.lower()), ("lastname", s.family_name_attr.lower()),
                        ("email", email)):
        cfg[f"field_map_{field}"] = attr
        cfg[f"field_updatelocal_{field}"] = "onlogin"
        cfg[f"field_updateremote_{field}"] = 0
        cfg[f"field_lock_{field}"] = "locked"
    return cfg


def settings(site: Site) -> dict[str, dict[str, Any]]:
    """Every Moodle setting the policy asks for: component ('core' or a plugin) -> name -> value."""
    p = site.school.privacy
    days = p.log_retention_days
    contacts = site.school.contacts
    support = contacts.technician or contacts.dpo
    return {
        "core": {
            # who sees what
            "forcelogin": int(p.require_login), "forceloginforprofiles": 1,
            "forceloginforprofileimage": int(p.require_login),
            "opentowebcrawlers": int(p.search_indexing), "allowindexing": 1 if p.search_indexing else 2,
            "protectusernames": 1, "profilesforenrolledusersonly": 1, "allowobjectembed": 0,
            "enabletrusttext": 0, "allowframembedding": 0, "referrerpolicy": "no-referrer",
            "cookiesecure": 1, "cookiehttponly": 1,
            # accounts come from the school's directory only
            "auth": "ldap", "registerauth": "", "authpreventaccountcreation": 0,
            # nothing leaves for moodle.org, Google, gravatar or geoplugin
            "registrationpending": 0, "updateautocheck": 0, "enablegravatar": 0, "geopluginapikey": "",
            "googlemapkey3": "", "recaptchapublickey": "", "recaptchaprivatekey": "",
            "enablewebservices": 0, "enablemobilewebservice": 0, "airnotifieraccesskey": "",
            # no profiling, no statistics; logs kept as long as the policy says
            "enableanalytics": 0, "enablestats": 0, "loglifetime": days,
            "timezone": site.school.fleet.timezone, "supportemail": support.email, "supportname": support.name,
        },
        "logstore_standard": {"loglifetime": days, "logguests": 0},
        # a pupil who leaves a class's cohort (the school-year move) keeps their work in its courses: the
        # enrolment is suspended and its roles removed, not deleted (ENROL_EXT_REMOVED_SUSPENDNOROLES)
        "enrol_cohort": {"unenrolaction": 3},
        "tool_log": {"enabled_stores": "logstore_standard"},
        "tool_dataprivacy": {
            "contactdataprotectionofficer": 1,
            # a person's export or erasure is reviewed by the privacy officer first (no automatic release);
            # deleted accounts raise a deletion request on their own
            "automaticdataexportapproval": 0, "automaticdatadeletionapproval": 0, "automaticdeletionrequests": 1,
            "requireallenddatesforuserdeletion": 1, "showdataretentionsummary": 1,
            "privacyrequestexpiry": 7 * 86400,
        },
    }


def integrations(site: Site) -> tuple[dict[str, Any], dict[str, Any]]:
    """Core settings other services want in Moodle, split into (plain, secret): plain ones go into the
    settings script, secret ones (cli.secrets.Secret) are hard-set in config.php, the one secret file.
    Today: BigBlueButton (deploy.bigbluebutton.moodle_settings); Etherpad's goes here too."""
    from schoolctl.deploy import bigbluebutton
    from schoolctl.secrets import Secret

    plain: dict[str, Any] = {}
    secret: dict[str, Any] = {}
    for name, value in bigbluebutton.moodle_settings(site).items():
        (secret if isinstance(value, Secret) else plain)[name] = value
    return plain, secret


def plugin_settings(site: Site) -> dict[str, dict[str, Any]]:
    """Plugin settings forced in config.php: auth_ldap and the plugins of the school's other services
    (secrets revealed: config.php is the one secret file)."""
    from schoolctl.secrets import Secret

    plugins = {"auth_ldap": ldap_config(site), etherpad.MOODLE_PLUGIN: etherpad.moodle_plugin_settings(site)}
    return {component: {k: v.reveal() if isinstance(v, Secret) else v for k, v in values.items()}
            for component, values in plugins.items() if values}


def plugin_versions(site: Site) -> dict[str, int]:
    """schoolctl's own Moodle plugins this school gets, with their versions."""
    return {etherpad.MOODLE_PLUGIN: etherpad.moodle_plugin_version()} if site.school.has("etherpad") else {}


def links(site: Site) -> str:
    """Moodle's custom menu: the school's other services (Etherpad's front-page pads, Nextcloud)."""
    items = []
    if site.school.has("etherpad"):
        items.append("Etherpad|/local/schoolpads/index.php?id=1")
    if site.school.has("nextcloud"):
        items.append(f"Nextcloud|https://{site.fqdn('nextcloud')}")
    return "\n".join(items)


def wanted(site: Site) -> dict[str, Any]:
    """What the settings script makes true: the settings, the language, the DPO and data retention."""
    dpo = site.school.contacts.dpo
    first, _, last = dpo.name.partition(" ")
    config = settings(site)
    config["core"].update(integrations(site)[0])
    config["core"]["custommenuitems"] = links(site)
    return {
        "config": config,
        "lang": site.school.languages[0],
        "langs": list(site.school.languages),
        "dpo": {"role": DPO_ROLE, "username": DPO_USER, "firstname": first, "lastname": last or first,
                "email": dpo.email,
                "capabilities": ["tool/dataprivacy:managedatarequests", "tool/dataprivacy:managedataregistry"]},
        "retention": {"purpose": "School records (schoolctl)", "category": "School (schoolctl)",
                      "period": f"P{site.school.privacy.data_retention_days}D",
                      "lawfulbases": "gdpr_art_6_1_e",
                      "description": "Public task of the school (GDPR Art. 6(1)(e)); retention from the school's "
                                     "privacy policy (data_retention_days)."},
    }


def _admin_email(site: Site) -> str:
    c = site.school.contacts
    return (c.technician or c.dpo).email


def _db_value(sql: str) -> str:
    return f"{PSQL} -d {APP} -tAc {shlex.quote(sql)}"


def _single_quoted(text: str) -> str:
    """Free text as one shell word, always in single quotes (shlex.quote leaves a plain word bare)."""
    return "'" + text.replace("'", "'\"'\"'") + "'"


def install_step(site: Site, version: str) -> Step:
    code = code_dir(version)
    school = site.school
    has_config = f"{_db_value('SELECT to_regclass(' + chr(39) + 'mdl_config' + chr(39) + ')')} | grep -qx mdl_config"
    # The admin password is on install_database.php's command line for this one run only (there is
    # no stdin or file option); it is read from the root-only secret file, never from the deploy log.
    install = php_cli(APP, (
        f"{code}/admin/cli/install_database.php --agree-license --lang=en --adminuser=admin "
        f'--adminpass="$(cat {ADMIN_SECRET})" --adminemail={shlex.quote(_admin_email(site))} '
        f"--fullname={_single_quoted(school.name)} --shortname={shlex.quote(school.id)} "
        f"--supportemail={shlex.quote(_admin_email(site))}"))
    return Step("moodle database installed (install_database.php, about 2-3 minutes the first time)",
                check=f"test -e {INSTALLED} && {has_config}",
                apply=f"if ! {has_config}; then\n{install}\nfi\ntouch {INSTALLED}", timeout=1800)


def upgrade_step(version: str, plugins: dict[str, int] | None = None) -> Step:
    """upgrade.php when the code (or one of schoolctl's own plugins) is newer than the database; the
    database is dumped first (deploy.database.backup_command)."""
    code = code_dir(version)
    code_version = f"sed -n 's/^\\$version *= *\\([0-9.]*\\);.*/\\1/p' {code}/version.php"
    db_version = _db_value("SELECT value FROM mdl_config WHERE name = 'version'")
    check = f'v=$({code_version}) && [ -n "$v" ] && [ "$v" = "$({db_version})" ]'
    for component, number in sorted((plugins or {}).items()):
        sql = f"SELECT value FROM mdl_config_plugins WHERE plugin = '{component}' AND name = 'version'"
        check += f' && [ "$({_db_value(sql)})" = {number} ]'
    return Step(f"moodle database matches the code ({version})",
                check=check,
                # Moodle caches its plugin list until the core version changes: purge so it sees new
                # plugins. An upgrade resets some settings (registrationpending): the policy goes back on
                # in the same run (the settings step was checked before this ran).
                apply=(backup_command(APP) + " && " + php_cli(APP, f"{code}/admin/cli/purge_caches.php") + " && "
                       + php_cli(APP, f"{code}/admin/cli/upgrade.php --non-interactive") + " && "
                       + php_cli(APP, SETTINGS_SCRIPT)), timeout=3600)


def _cli(code: str, script: str) -> str:
    """Shell: one of Moodle's admin/cli scripts of the code in `code` (a shell word; 5.1+ keeps them
    under public/), as the moodle user."""
    name, _, args = script.partition(" ")
    return (f"(c={code}; [ -d \"$c/public/admin/cli\" ] && c=$c/public; "
            f"{php_cli(APP, chr(34) + '$c/admin/cli/' + name + chr(34) + (' ' + args if args else ''))})")


APP_UPGRADE = upgrade.App(
    APP, "Moodle", relative_link=True,
    # by hand (`schoolctl rollback`): users out first (the maintenance page is a file in the data root)
    stop=f"{_cli(CURRENT, 'maintenance.php --enable')} >/dev/null 2>&1 || true",
    start=(f"{_cli(CURRENT, 'purge_caches.php')} >&2 || true\n"
           f"systemctl reload {FPM} || systemctl restart {FPM}\n"
           f"{_cli(CURRENT, 'maintenance.php --disable')} >/dev/null || {{ echo 'moodle: maintenance mode could not be "
           f"turned off' >&2; return {upgrade.FAILED}; }}"))


def switch_step(rel: artifacts.Release) -> Step:
    """`current` to `rel`; when an installed release is in use, that is the upgrade (dumped first,
    rolled back when upgrade.php fails)."""
    target = f"releases/{rel.version}"
    q = shlex.quote(target)
    switch = f"ln -sfn {q} {CURRENT}.new && mv -T {CURRENT}.new {CURRENT}"
    has_config = f"{_db_value('SELECT to_regclass(' + chr(39) + 'mdl_config' + chr(39) + ')')} | grep -qx mdl_config"
    code = code_dir(rel.version)
    apply = "\n".join([
        f"old=$(readlink {CURRENT} || true)",
        f'if [ -n "$old" ] && [ -e {INSTALLED} ] && {has_config}; then',
        *(f"  {line}" for line in upgrade.rollback_function(APP_UPGRADE).splitlines()),
        *(f"  {line}" for line in upgrade.maintenance_lock(APP_UPGRADE).splitlines()),
        f"  echo \"moodle: upgrading ${{old##*/}} -> {rel.version}\" >&2",
        f"  {_cli(shlex.quote(HOME) + '/' + chr(34) + '$old' + chr(34), 'maintenance.php --enable')} >/dev/null",
        f"  if ! {{ {upgrade.dump(APP_UPGRADE)}; }} >&2; then "
        f"{_cli(CURRENT, 'maintenance.php --disable')} >/dev/null; "
        "echo 'moodle: the dump failed; nothing changed' >&2; exit 1; fi",
        f"  {upgrade.save_point(APP_UPGRADE, rel.version)}",
        f"  {switch}",
        f"  systemctl reload {FPM} || systemctl restart {FPM}",
        # Moodle caches its plugin list until the core version changes: purged, so it sees new plugins
        f"  if ! {{ {php_cli(APP, f'{code}/admin/cli/purge_caches.php')} && "
        f"{php_cli(APP, f'{code}/admin/cli/upgrade.php --non-interactive')}; }} >&2; then",
        *(f"    {line}" for line in upgrade.on_failure(APP_UPGRADE, f"upgrade.php to {rel.version}").splitlines()),
        "  fi",
        # an upgrade resets some settings (registrationpending): the policy goes back on at once
        f"  {php_cli(APP, SETTINGS_SCRIPT)} >&2",
        f"  {_cli(CURRENT, 'maintenance.php --disable')} >/dev/null",
        f"  echo \"moodle: now {rel.version}\" >&2",
        "else",
        f"  {switch}",
        "fi"])
    return Step(f"moodle current -> {target} (an upgrade: dumped first, rolled back on failure)",
                check=f'[ "$(readlink {CURRENT})" = {q} ]', apply=apply, timeout=3600)


def settings_step(packs: Sequence[artifacts.Langpack] = ()) -> Step:
    """The settings script; its check also needs every language pack in place, so a pack installed in
    this run is followed by the settings (the site language) in the same run."""
    packs_in = "".join(f"grep -qx {shlex.quote(p.sha256)} {shlex.quote(f'{LANGDIR}/{p.lang}/.schoolctl-sha256')} && "
                       for p in packs)
    return Step("moodle settings per the school's policy (one PHP check)",
                check=packs_in + php_cli(APP, f"{SETTINGS_SCRIPT} --check"),
                apply=php_cli(APP, SETTINGS_SCRIPT), timeout=600)


def langpacks(site: Site, version: str) -> list[artifacts.Langpack]:
    """The language packs the school's languages need (English is built in), from the mirror; a
    language without a pack stays English, a pack of an older branch is used: each with a warning."""
    found = []
    release = version_tuple(version)
    for lang in site.school.languages:
        if lang == "en":
            continue
        pack = artifacts.langpack(site, lang, version)
        if pack is None:
            log.warning("%s: no Moodle language pack langpack/%d.%d/%s.zip (or of an older branch) in the mirror "
                        "%s: Moodle shows %s pages in English; put the pack and its SHA256SUMS line in the mirror",
                        site.id, *release, lang, site.mirror or "(none set)", lang)
            continue
        if pack.branch < release:
            log.warning("%s: Moodle %s gets the %s language pack of %s (%s): strings new since %s show in English",
                        site.id, version, lang, pack.branch_text, pack.name, pack.branch_text)
        found.append(pack)
    return found


def langpack_step(pack: artifacts.Langpack) -> Step:
    """Install one language pack offline into the data root (lang/<lang>/), checked by its sha256;
    Moodle's caches are purged so the strings show at once."""
    q = shlex.quote
    user = service_user(APP)
    target = f"{LANGDIR}/{pack.lang}"
    marker = q(f"{target}/.schoolctl-sha256")
    raw_tmp = f"{VAR}/.langpack-{pack.lang}.zip"
    tmp, unpack = q(raw_tmp), q(f"{LANGDIR}/.unpack-{pack.lang}")
    get = "" if pack.upload else f"curl --fail --silent --show-error --location --retry 2 -o {tmp} {q(pack.source)}\n"
    apply = (
        f"{get}"
        f"echo {q(f'{pack.sha256}  {raw_tmp}')} | sha256sum --check --quiet || "
        f"{{ echo {q(f'{pack.name}: checksum mismatch, refusing it')} >&2; rm -f {tmp}; exit 1; }}\n"
        f"[ -d {q(LANGDIR)} ] || install -d -m 0750 -o {user} -g {user} {q(LANGDIR)}\n"
        f"rm -rf {unpack} && install -d -m 0755 {unpack}\n"
        # Python's zipfile drops absolute paths and '..' from the names it extracts
        f"python3 -m zipfile -e {tmp} {unpack}\n"
        f"test -f {unpack}/{pack.lang}/langconfig.php || "
        f"{{ echo {q(f'{pack.name} holds no {pack.lang}/langconfig.php; refusing it')} >&2; exit 1; }}\n"
        f"chown -R root:root {unpack} && chmod -R u=rwX,go=rX {unpack}\n"
        f"rm -rf {q(target)} && mv {unpack}/{pack.lang} {q(target)} && rm -rf {unpack}\n"
        f"echo {q(pack.sha256)} > {marker} && rm -f {tmp}\n"
        f"if [ -e {INSTALLED} ]; then {_cli(CURRENT, 'purge_caches.php')} >&2; fi")
    return Step(f"moodle language pack {pack.lang} ({pack.name}, sha256 {pack.sha256[:12]}…)",
                check=f"grep -qx {q(pack.sha256)} {marker}", apply=apply, timeout=600,
                upload=(pack.source, raw_tmp) if pack.upload else None)


def delete_user_command(site: Site, uid: str) -> str:
    """Shell (as root on the server): delete the Moodle account `uid` and its personal data; succeeds
    when the account is already gone (or Moodle is not installed yet)."""
    return (f"if [ -e {INSTALLED} ]; then {php_cli(APP, f'{DELETE_SCRIPT} {shlex.quote(uid)}')}; "
            f"else echo 'moodle: not installed, nothing to delete'; fi")


def classes_command() -> str:
    """Shell (as root, the payload of cli/users/classes.py on stdin): the classes as cohorts, and the
    forced password change of who is still on the letter's password; nothing when Moodle is not
    installed yet (the next import does it)."""
    return (f"if [ -e {INSTALLED} ] && [ -f {CLASSES_SCRIPT} ]; then {php_cli(APP, CLASSES_SCRIPT)}; "
            "else echo '{\"changes\": [], \"notes\": [\"not installed yet (deploy the school)\"]}'; fi")


def _units(version: str) -> list[File]:
    ctx = {"user": service_user(APP), "php_version": PHP_VERSION, "code": code_dir(version), "installed": INSTALLED}
    return [File(f"/etc/systemd/system/moodle-{name}.{kind}", render(f"moodle/{name}.{kind}.j2", **ctx))
            for name in ("cron", "ldap-sync") for kind in ("service", "timer")]


def layer(site: Site) -> Layer | None:
    moodle = site.school.services.moodle
    if moodle is None:
        return None
    rel = artifacts.release(site, APP)
    user = service_user(APP)
    setup = "/public/lib/setup.php" if serves_public(rel.version) else "/lib/setup.php"
    config = render("moodle/config.php.j2", php=php, version=rel.version, fqdn=site.fqdn(APP),
                    db=credentials(site, APP), dataroot=DATAROOT, redis_socket=REDIS_SOCKET, redis_db=REDIS_DB,
                    php_version=PHP_VERSION, disabled_tasks=DISABLED_TASKS, user=user, plugins=plugin_settings(site),
                    setup=setup, forced={k: v.reveal() for k, v in integrations(site)[1].items()})
    settings_php = render("moodle/settings.php.j2", php=php, config=CONFIG,
                          wanted=json.dumps(wanted(site), indent=1, sort_keys=True, ensure_ascii=False))
    body = render("moodle/nginx.conf.j2", version=rel.version, root=code_dir(rel.version),
                  upload_mb=integer(moodle.max_upload_mb, "moodle.max_upload_mb"), socket=pool_socket(APP))
    plugin_dirs, plugin_files = etherpad.moodle_plugin(site, code_dir(rel.version, rel.path))
    packs = langpacks(site, rel.version)
    files = [
        # in the release folder (unpacked by the pre-step): each version gets its own
        File(f"{rel.path}/config.php", config, "0640", "root", user, secret=True),
        File(ADMIN_SECRET, site.secret("moodle_admin").reveal(), "0600", secret=True),
        File(SETTINGS_SCRIPT, settings_php, "0644"),
        File(DELETE_SCRIPT, render("moodle/delete_user.php.j2", php=php, config=CONFIG), "0644"),
        File(CLASSES_SCRIPT, render("moodle/classes.php.j2", php=php, config=CONFIG, prefix=COHORT_PREFIX), "0644"),
        # schoolctl's own plugins, in the release's code (so each version gets them)
        *plugin_files,
        *_units(rel.version),
        server_block(site, APP, body, csp=CSP),
    ]
    return Layer(
        name=APP, round=APPS,
        # the release is unpacked before the files (its config.php goes into the release folder);
        # code owned by root: the PHP processes (user moodle) cannot change it
        pre_steps=[upgrade.guard_step(APP_UPGRADE, rel.version, site.id),
                   artifacts.fetch_step(site, rel, owner="root")],
        # PHP's LDAP and Redis extensions for auth_ldap and the session handler
        packages=[f"php{PHP_VERSION}-ldap", "php-redis"],
        directories=[Directory(TOOLS), Directory(VAR, "0750", user, user), Directory(DATAROOT, "0700", user, user),
                     Directory("/etc/schoolctl/secrets", "0700"), *plugin_dirs],
        files=files,
        services=[Service("moodle-cron.timer"), Service("moodle-ldap-sync.timer")],
        steps=[
            # extensions installed in this round: FPM must have started after them
            Step("php-fpm has loaded the ldap and redis extensions",
                 check=(f"started=$(date -d \"$(ps -o lstart= -p $(cat /run/php/php{PHP_VERSION}-fpm.pid))\" +%s) && "
                        f"for m in ldap redis; do c=$(stat -c %Z /etc/php/{PHP_VERSION}/fpm/conf.d/*-$m.ini) && "
                        '[ "$c" -lt "$started" ] || exit 1; done'),
                 apply=f"systemctl restart php{PHP_VERSION}-fpm.service"),
            switch_step(rel),
            # a restore's first deploy stops here: the archive brings the database and moodledata
            *([] if site.restoring else [
                install_step(site, rel.version),
                *(langpack_step(p) for p in packs),
                upgrade_step(rel.version, plugin_versions(site)),
                settings_step(packs)]),
        ],
    )
