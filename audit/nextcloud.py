"""Nextcloud controls: the privacy defaults the deploy sets, each read back from Nextcloud itself.
One evidence command runs `occ config:list` (the merged view of config.php and every
config/*.config.php, plus the app values; secrets masked) as the nextcloud user; another reads the
data folder's mode; the logrotate stanzas come from the host controls' evidence."""

from __future__ import annotations

import json
from typing import Any

from schoolctl.audit.catalogue import Context, Outcome, control, evidence, verdict
from schoolctl.audit.host import LOGROTATE, logrotate_stanzas

CURRENT = "/srv/nextcloud/current"
OCC = f"cd {CURRENT} && runuser -u nextcloud -- /usr/bin/php8.4 occ"
STATE = evidence(f"test -r {CURRENT}/config/config.php || {{ echo 'no Nextcloud at {CURRENT}' >&2; exit 3; }}; "
                 f"{OCC} config:list")
DATA = evidence(f"d=$(cd {CURRENT} && runuser -u nextcloud -- /usr/bin/php8.4 -r "
                "'include \"config/config.php\"; echo $CONFIG[\"datadirectory\"] ?? \"\";'); "
                "echo \"$d\"; stat -c '%a %U' \"$d\" 2>&1; "
                "python3 -c 'import os, sys; print(\"acl\" if \"system.posix_acl_access\" in os.listxattr(sys.argv[1]) "
                "else \"no-acl\")' \"$d\" 2>&1; true")
THIRD_PARTY_APPS = ("nextcloud_announcements", "weather_status", "support", "firstrunwizard", "recommendations",
                    "app_api")


def state(ctx: Context) -> dict[str, Any]:
    res = ctx.run(STATE)
    if res.rc != 0:
        raise RuntimeError(f"occ config:list failed ({res.rc}): {(res.stderr or res.stdout).strip()[-300:]}")
    return json.loads(res.stdout[res.stdout.index("{"):])


def system(ctx: Context, key: str) -> Any:
    return state(ctx).get("system", {}).get(key, "(unset)")


def app_value(ctx: Context, app: str, key: str) -> Any:
    return state(ctx).get("apps", {}).get(app, {}).get(key, "(unset)")


def enabled(ctx: Context, app: str) -> bool:
    return app_value(ctx, app, "enabled") not in ("no", "", "(unset)", None)


def _system_is(ctx: Context, key: str, wanted: Any) -> Outcome:
    value = system(ctx, key)
    return verdict(value == wanted, f"{key} = {json.dumps(value)}", f"{key} = {json.dumps(wanted)}")


@control("NEXTCLOUD-LANGUAGE", "nextcloud", "Nextcloud's default language is the school's first language",
         "Pupils and families must understand what Nextcloud says about their files and their sharing: the "
         "default language and locale are the school's first language.", ["25"], "low",
         titles={"ca": "L'idioma per defecte de Nextcloud és el primer de l'escola",
                 "es": "El idioma por defecto de Nextcloud es el primero de la escuela"})
def language(ctx: Context) -> Outcome:
    first = ctx.school.languages[0]
    lang, locale = system(ctx, "default_language"), system(ctx, "default_locale")
    ok = lang == first and isinstance(locale, str) and locale.split("_")[0] == first
    return verdict(ok, f"default_language = {json.dumps(lang)}, default_locale = {json.dumps(locale)}",
                   f"default_language = {json.dumps(first)}, default_locale {first}_*")


@control("NEXTCLOUD-NO-INTERNET", "nextcloud", "Nextcloud runs as a closed installation (no internet calls)",
         "has_internet_connection false stops the app store, update, lookup and push calls to Nextcloud GmbH "
         "and the connectivity checks to third-party sites.", ["44", "5(1)(c)"], "high",
         titles={"ca": "Nextcloud no fa crides a Internet", "es": "Nextcloud no hace llamadas a Internet"})
def no_internet(ctx: Context) -> Outcome:
    return _system_is(ctx, "has_internet_connection", False)


@control("NEXTCLOUD-NO-APPSTORE", "nextcloud", "The Nextcloud app store is off",
         "Apps from the store are unreviewed code the city has not assessed; the store is also an outside call.",
         ["32", "44"], "medium", titles={"ca": "Botiga d'apps de Nextcloud desactivada",
                                         "es": "Tienda de apps de Nextcloud desactivada"})
def no_appstore(ctx: Context) -> Outcome:
    return _system_is(ctx, "appstoreenabled", False)


@control("NEXTCLOUD-NO-UPDATE-CHECK", "nextcloud", "Nextcloud sends no update check and has no web updater",
         "The update check sends the version, instance id and size to updates.nextcloud.com; upgrades come "
         "from the city's deploy.", ["44", "5(1)(c)"], "medium",
         titles={"ca": "Nextcloud no consulta actualitzacions", "es": "Nextcloud no consulta actualizaciones"})
def no_update_check(ctx: Context) -> Outcome:
    checker, web = system(ctx, "updatechecker"), system(ctx, "upgrade.disable-web")
    notif = enabled(ctx, "updatenotification")
    ok = checker is False and web is True and not notif
    return verdict(ok, f"updatechecker = {json.dumps(checker)}, upgrade.disable-web = {json.dumps(web)}, "
                       f"updatenotification app {'enabled' if notif else 'disabled'}",
                   "updatechecker = false, upgrade.disable-web = true, updatenotification disabled")


@control("NEXTCLOUD-NO-SURVEY", "nextcloud", "No usage survey (survey_client disabled)",
         "survey_client sends a usage report about the school's installation to surveyserver.nextcloud.com.",
         ["44", "5(1)(c)"], "medium", titles={"ca": "Sense enquesta d'ús", "es": "Sin encuesta de uso"})
def no_survey(ctx: Context) -> Outcome:
    on = enabled(ctx, "survey_client")
    return verdict(not on, f"survey_client {'enabled' if on else 'not enabled'}", "survey_client not enabled")


@control("NEXTCLOUD-NO-LOOKUP-SERVER", "nextcloud", "No lookup server and no federated publishing of users",
         "The lookup server (lookup.nextcloud.com) would receive pupils' and teachers' names and addresses.",
         ["44", "5(1)(c)", "25"], "high",
         titles={"ca": "Sense servidor de cerca ni federació pública", "es": "Sin servidor de búsqueda ni federación"})
def no_lookup(ctx: Context) -> Outcome:
    values = {"lookup_server": system(ctx, "lookup_server"), "gs.federation": system(ctx, "gs.federation"),
              "files_sharing lookupServerEnabled": app_value(ctx, "files_sharing", "lookupServerEnabled"),
              "files_sharing lookupServerUploadEnabled": app_value(ctx, "files_sharing", "lookupServerUploadEnabled")}
    ok = (values["lookup_server"] == "" and values["gs.federation"] in ("internal", "(unset)")
          and values["files_sharing lookupServerEnabled"] == "no"
          and values["files_sharing lookupServerUploadEnabled"] == "no")
    return verdict(ok, ", ".join(f"{k} = {json.dumps(v)}" for k, v in values.items()),
                   "lookup_server '', gs.federation internal, lookupServerEnabled no, lookupServerUploadEnabled no")


@control("NEXTCLOUD-EMPTY-SKELETON", "nextcloud", "New users start with an empty folder",
         "The default skeleton fills every pupil's folder with upstream's sample files and links.", ["5(1)(c)"],
         "low", titles={"ca": "Carpeta inicial buida", "es": "Carpeta inicial vacía"})
def empty_skeleton(ctx: Context) -> Outcome:
    return _system_is(ctx, "skeletondirectory", "")


@control("NEXTCLOUD-NO-KNOWLEDGEBASE", "nextcloud", "The help menu does not point to upstream's documentation",
         "knowledgebaseenabled links (and may embed) docs.nextcloud.com from every page.", ["44"], "low",
         titles={"ca": "Sense enllaços a la documentació externa", "es": "Sin enlaces a la documentación externa"})
def no_knowledgebase(ctx: Context) -> Outcome:
    return _system_is(ctx, "knowledgebaseenabled", False)


@control("NEXTCLOUD-NO-THIRD-PARTY-APPS", "nextcloud", "Apps that call third parties are disabled",
         "nextcloud_announcements, weather_status, support, firstrunwizard, recommendations and app_api fetch "
         "feeds, weather or upstream pages, or run external code.", ["44", "5(1)(c)"], "medium",
         titles={"ca": "Apps que contacten tercers desactivades", "es": "Apps que contactan terceros desactivadas"})
def no_third_party_apps(ctx: Context) -> Outcome:
    on = [a for a in THIRD_PARTY_APPS if enabled(ctx, a)]
    return verdict(not on, f"enabled: {', '.join(on)}" if on else f"none of {', '.join(THIRD_PARTY_APPS)} enabled",
                   f"none of {', '.join(THIRD_PARTY_APPS)} enabled")


@control("NEXTCLOUD-NO-SIGNUP-LINK", "nextcloud", "Public pages show no sign-up link to nextcloud.com",
         "simpleSignUpLink sends visitors of shared links to a commercial sign-up page.", ["44"], "low",
         titles={"ca": "Sense enllaç de registre extern", "es": "Sin enlace de registro externo"})
def no_signup_link(ctx: Context) -> Outcome:
    return _system_is(ctx, "simpleSignUpLink.shown", False)


@control("NEXTCLOUD-NO-OPENGRAPH", "nextcloud", "Nextcloud fetches no previews of pasted links",
         "reference_opengraph makes the server fetch any URL a user pastes (an outside call per link).",
         ["44", "5(1)(c)"], "low", titles={"ca": "Sense previsualització d'enllaços",
                                           "es": "Sin previsualización de enlaces"})
def no_opengraph(ctx: Context) -> Outcome:
    return _system_is(ctx, "reference_opengraph", False)


@control("NEXTCLOUD-BRUTEFORCE", "nextcloud", "Brute-force protection is on",
         "Without it, pupils' passwords can be guessed through WebDAV and the login form.", ["32"], "high",
         titles={"ca": "Protecció contra força bruta activa", "es": "Protección contra fuerza bruta activa"})
def bruteforce(ctx: Context) -> Outcome:
    value = system(ctx, "auth.bruteforce.protection.enabled")
    return verdict(value in (True, "(unset)"), f"auth.bruteforce.protection.enabled = {json.dumps(value)}",
                   "auth.bruteforce.protection.enabled = true (or unset: upstream's default)")


@control("NEXTCLOUD-LOGLEVEL", "nextcloud", "Nextcloud logs warnings and errors only, no debug",
         "Debug and info logs record users' names, paths and requests.", ["5(1)(c)"], "medium",
         titles={"ca": "Nextcloud només registra avisos i errors", "es": "Nextcloud solo registra avisos y errores"})
def loglevel(ctx: Context) -> Outcome:
    level, debug = system(ctx, "loglevel"), system(ctx, "debug")
    ok = isinstance(level, int) and level >= 2 and debug in (False, "(unset)")
    return verdict(ok, f"loglevel = {json.dumps(level)}, debug = {json.dumps(debug)}",
                   "loglevel >= 2 (warning), debug false")


def _data(ctx: Context) -> tuple[str, str, str]:
    lines = [*ctx.run(DATA).stdout.splitlines(), "", "", ""]
    return lines[0].strip(), lines[1].strip(), lines[2].strip()


@control("NEXTCLOUD-LOG-RETENTION", "nextcloud", "Nextcloud's log is rotated and kept no longer than the policy",
         "Nextcloud's own rotation is by size only: the log must be in a file logrotate deletes in time.",
         ["5(1)(e)"], "medium", titles={"ca": "El registre de Nextcloud es conserva el temps permès",
                                        "es": "El registro de Nextcloud se conserva el tiempo permitido"})
def log_retention(ctx: Context) -> Outcome:
    days = ctx.policy.log_retention_days
    log_type, logfile, size = system(ctx, "log_type"), system(ctx, "logfile"), system(ctx, "log_rotate_size")
    rotate = ctx.run(LOGROTATE).stdout
    folder = logfile.rsplit("/", 1)[0] if isinstance(logfile, str) and "/" in logfile else ""
    covering = [(p, d) for p, d, _ in logrotate_stanzas(rotate)
                if folder and any(x == logfile or x.rsplit("/", 1)[0] == folder for x in p.split())]
    kept = [d for _, d in covering]
    ok = (log_type in ("file", "(unset)") and bool(kept) and all(d is not None and d <= days for d in kept)
          and size == 0)
    shown = ", ".join(f"{p}: {'unlimited' if d is None else f'{d:g} days'}" for p, d in covering) or "no stanza"
    return verdict(ok, f"log_type = {json.dumps(log_type)}, logfile = {json.dumps(logfile)}, log_rotate_size = "
                       f"{json.dumps(size)}; logrotate: {shown}",
                   f"log_type file in a folder logrotate keeps <= {days} days; log_rotate_size 0")


@control("NEXTCLOUD-DATA-PRIVATE", "nextcloud", "The data folder is outside the code tree and not world-readable",
         "Every pupil's files are in it: no web server path and no other local user may reach them.", ["32"],
         "high", titles={"ca": "Carpeta de dades privada", "es": "Carpeta de datos privada"})
def data_private(ctx: Context) -> Outcome:
    folder, mode_owner, acl = _data(ctx)
    mode, _, owner = mode_owner.partition(" ")
    ok = (bool(folder) and not folder.startswith(("/srv/", "/var/www")) and mode.isdigit()
          and int(mode, 8) & 0o007 == 0 and owner == "nextcloud" and acl == "no-acl")
    return verdict(ok, f"datadirectory {folder or '(unset)'}: mode {mode} owner {owner}, {acl}",
                   "outside /srv and /var/www, owned by nextcloud, no access for others, no ACL granting more")


@control("NEXTCLOUD-LDAP-TLS", "nextcloud", "Nextcloud reaches the directory over TLS with a checked certificate",
         "LDAP binds carry the apps account's password and pupils' passwords at every login.", ["32"], "high",
         titles={"ca": "Nextcloud parla amb el directori per TLS", "es": "Nextcloud habla con el directorio por TLS"})
def ldap_tls(ctx: Context) -> Outcome:
    apps = state(ctx).get("apps", {}).get("user_ldap", {})
    prefixes = sorted(k[:-len("ldap_configuration_active")] for k, v in apps.items()
                      if k.endswith("ldap_configuration_active") and str(v) == "1")
    if not prefixes:
        return verdict(False, "no active user_ldap configuration", "an active configuration over ldaps:// or StartTLS")
    bad, seen = [], []
    for p in prefixes:
        host, tls = str(apps.get(f"{p}ldap_host", "")), str(apps.get(f"{p}ldap_tls", "0"))
        nocheck = str(apps.get(f"{p}ldap_turn_off_cert_check", "0"))
        seen.append(f"{p or '(default)'}: {host} tls={tls} turn_off_cert_check={nocheck}")
        if not (host.startswith("ldaps://") or tls == "1") or nocheck != "0":
            bad.append(seen[-1])
    return verdict(not bad, "; ".join(bad or seen), "ldaps:// (or StartTLS) and the certificate checked")
