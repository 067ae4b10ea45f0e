"""Moodle controls: the privacy defaults the deploy sets, each read back from Moodle itself. One
evidence command bootstraps Moodle once (as its own user, with its config.php) and prints every value
the controls need as JSON: settings via get_config() (so values forced in config.php count), the
registration hubs, the privacy officers and the data registry's effective purposes."""

from __future__ import annotations

import json
from typing import Any

from schoolctl.audit.catalogue import Context, Outcome, control, evidence, failed, verdict

CONFIG = "/srv/moodle/current/config.php"
LDAP_CONF = "/etc/ldap/ldap.conf"

# (plugin or "core", name) read with get_config()
SETTINGS = [
    ("core", n) for n in (
        "forcelogin", "opentowebcrawlers", "allowindexing", "cookiesecure", "cookiehttponly", "enableanalytics",
        "enablestats", "enablegravatar", "registrationpending", "updateautocheck", "disableupdatenotifications",
        "disableupdateautodeploy", "site_is_public", "geopluginapikey", "geoip2file", "enablewebservices",
        "enablemobilewebservice", "registerauth", "auth", "loglifetime", "lang")
] + [("logstore_standard", "loglifetime"), ("tool_log", "enabled_stores"),
     ("tool_dataprivacy", "contactdataprotectionofficer"), ("tool_dataprivacy", "automaticdataexportapproval"),
     ("tool_dataprivacy", "automaticdatadeletionapproval"), ("auth_ldap", "host_url"), ("auth_ldap", "start_tls")]

_PHP = r"""<?php
define('CLI_SCRIPT', true);
require '%(config)s';
$out = ['settings' => []];
foreach (json_decode('%(settings)s', true) as [$plugin, $name]) {
    $v = get_config($plugin, $name);
    $out['settings']["$plugin/$name"] = $v === false ? null : (string)$v;
}
$out['forced'] = ['site_is_public' => isset($CFG->site_is_public) ? (bool)$CFG->site_is_public : null,
    'disableupdatenotifications' => !empty($CFG->disableupdatenotifications),
    'disableupdateautodeploy' => !empty($CFG->disableupdateautodeploy)];
$out['hubs'] = array_values(array_map(fn($h) => $h->huburl,
    $DB->get_records('registration_hubs', ['confirmed' => 1])));
$task = \core\task\manager::get_scheduled_task('\core\task\registration_cron_task');
$out['registration_task_disabled'] = $task ? (bool)$task->get_disabled() : null;
$out['dpos'] = array_values(array_map(fn($u) => ['username' => $u->username, 'email' => $u->email],
    \tool_dataprivacy\api::get_site_dpos()));
$admins = array_map(fn($u) => $u->username, get_admins());
$out['admins'] = array_values($admins);
$retention = [];
foreach (['site' => CONTEXT_SYSTEM, 'user' => CONTEXT_USER] as $label => $level) {
    $p = \tool_dataprivacy\api::get_effective_contextlevel_purpose($level);
    $retention[$label] = $p ? $p->get('retentionperiod') : null;
}
[$pid] = \tool_dataprivacy\data_registry::get_defaults(CONTEXT_COURSE);
$p = $pid > 0 && \tool_dataprivacy\purpose::record_exists($pid) ? new \tool_dataprivacy\purpose($pid) : null;
$retention['course'] = $p ? $p->get('retentionperiod') : null;
$out['retention'] = $retention;
$out['translations'] = array_keys(get_string_manager()->get_list_of_translations(true));
echo json_encode($out);
"""

STATE = evidence(
    f"test -r {CONFIG} || {{ echo 'no Moodle at {CONFIG}' >&2; exit 3; }}; "
    "runuser -u moodle -- /usr/bin/php8.4 <<'SCHOOLCTL_PHP'\n"
    + _PHP % {"config": CONFIG, "settings": json.dumps(SETTINGS)} + "SCHOOLCTL_PHP")
LDAP_REQCERT = evidence(f"grep -iE '^[[:space:]]*TLS_(REQCERT|CACERT)[[:space:]]' {LDAP_CONF}")


def state(ctx: Context) -> dict[str, Any]:
    res = ctx.run(STATE)
    if res.rc != 0:
        raise RuntimeError(f"reading Moodle's settings failed ({res.rc}): {res.stderr.strip()[-300:]}")
    return json.loads(res.stdout[res.stdout.index("{"):])


def setting(ctx: Context, name: str, plugin: str = "core") -> str | None:
    return state(ctx)["settings"][f"{plugin}/{name}"]


def _is(value: str | None, wanted: str) -> bool:
    return (value or "0") == wanted if wanted in ("0", "") else value == wanted


def _flag(ctx: Context, name: str, wanted: str, plugin: str = "core") -> Outcome:
    value = setting(ctx, name, plugin)
    key = name if plugin == "core" else f"{plugin}/{name}"
    return verdict(_is(value, wanted), f"{key} = {value!r}", f"{key} = {wanted!r}")




@control("MOODLE-LANGUAGE", "moodle", "Moodle's default language is the school's first language",
         "Pupils and families must understand what Moodle says about their data and their work: the site "
         "speaks the school's first language (its pack installed), not a developer's English.", ["25"], "low",
         titles={"ca": "L'idioma per defecte de Moodle és el primer de l'escola",
                 "es": "El idioma por defecto de Moodle es el primero de la escuela"})
def language(ctx: Context) -> Outcome:
    s = state(ctx)
    first = ctx.school.languages[0]
    lang, installed = s["settings"]["core/lang"], s["translations"]
    return verdict(lang == first and first in installed,
                   f"lang = {lang!r}; installed language packs: {', '.join(installed) or 'none'}",
                   f"lang = {first!r} with its language pack installed")


@control("MOODLE-NO-REGISTRATION", "moodle", "Moodle is not registered with moodle.org and sends it nothing",
         "A registered site sends usage statistics to moodle.org every week.", ["44", "5(1)(c)"], "medium",
         titles={"ca": "Moodle no es registra a moodle.org", "es": "Moodle no se registra en moodle.org"})
def no_registration(ctx: Context) -> Outcome:
    s = state(ctx)
    pending = s["settings"]["core/registrationpending"]
    bad = []
    if s["hubs"]:
        bad.append(f"registered with {', '.join(s['hubs'])}")
    if pending not in (None, "", "0"):
        bad.append(f"registrationpending = {pending!r}")
    if s["forced"]["site_is_public"] is not False:
        bad.append(f"$CFG->site_is_public = {s['forced']['site_is_public']!r}")
    if s["registration_task_disabled"] is not True:
        bad.append("registration_cron_task enabled")
    return verdict(not bad, "; ".join(bad) or "no confirmed hub, registrationpending 0, site_is_public false, "
                   "registration task disabled", "no registration with moodle.org, nothing pending, task disabled")


@control("MOODLE-ANALYTICS-OFF", "moodle", "Learning analytics (pupil profiling) is off",
         "Predictive models profile children ('students at risk'); they would need a DPIA.", ["5(1)(c)", "25"],
         "high", titles={"ca": "Analítiques d'aprenentatge desactivades",
                         "es": "Analíticas de aprendizaje desactivadas"})
def analytics_off(ctx: Context) -> Outcome:
    return _flag(ctx, "enableanalytics", "0")


@control("MOODLE-STATS-OFF", "moodle", "Site statistics are off",
         "Statistics tables aggregate every pupil's activity beyond what teaching needs.", ["5(1)(c)"], "low",
         titles={"ca": "Estadístiques del lloc desactivades", "es": "Estadísticas del sitio desactivadas"})
def stats_off(ctx: Context) -> Outcome:
    return _flag(ctx, "enablestats", "0")


@control("MOODLE-FORCELOGIN", "moodle", "Moodle pages need a login (per policy require_login)",
         "Courses, names and pupils' work must not be readable by anyone on the Internet.", ["25", "32"], "high",
         titles={"ca": "Moodle demana iniciar sessió", "es": "Moodle exige iniciar sesión"})
def forcelogin(ctx: Context) -> Outcome:
    if not ctx.policy.require_login:
        value = setting(ctx, "forcelogin")
        return verdict(True, f"forcelogin = {value!r}", "policy require_login false: either")
    return _flag(ctx, "forcelogin", "1")


@control("MOODLE-NO-CRAWLERS", "moodle", "Search engines cannot enter Moodle as guests",
         "opentowebcrawlers lets crawlers in as guests and index course pages.", ["25"], "medium",
         titles={"ca": "Els cercadors no entren a Moodle", "es": "Los buscadores no entran en Moodle"})
def no_crawlers(ctx: Context) -> Outcome:
    return _flag(ctx, "opentowebcrawlers", "1" if ctx.policy.search_indexing else "0")


@control("MOODLE-NO-INDEXING", "moodle", "Moodle asks search engines not to index any page",
         "allowindexing 2 (nowhere) puts noindex on every page, the login page included.", ["25"], "low",
         titles={"ca": "Moodle demana no indexar", "es": "Moodle pide no indexar"})
def no_indexing(ctx: Context) -> Outcome:
    if ctx.policy.search_indexing:
        value = setting(ctx, "allowindexing")
        return verdict(True, f"allowindexing = {value!r}", "policy search_indexing true: any")
    return _flag(ctx, "allowindexing", "2")


@control("MOODLE-COOKIE-SECURE", "moodle", "Moodle's session cookie is Secure and HttpOnly",
         "A session cookie sent over plain http or readable by scripts can be stolen.", ["32"], "high",
         titles={"ca": "Galeta de sessió Secure i HttpOnly", "es": "Cookie de sesión Secure y HttpOnly"})
def cookie_secure(ctx: Context) -> Outcome:
    sec, http = setting(ctx, "cookiesecure"), setting(ctx, "cookiehttponly")
    return verdict(sec == "1" and http == "1", f"cookiesecure = {sec!r}, cookiehttponly = {http!r}",
                   "cookiesecure = '1', cookiehttponly = '1'")


@control("MOODLE-LOG-LIFETIME", "moodle", "Moodle's activity logs are deleted after the policy's days",
         "By default Moodle keeps every click of every pupil forever.", ["5(1)(e)"], "high",
         titles={"ca": "Els registres de Moodle caduquen", "es": "Los registros de Moodle caducan"})
def log_lifetime(ctx: Context) -> Outcome:
    days = ctx.policy.log_retention_days
    value = setting(ctx, "loglifetime", "logstore_standard")
    stores = setting(ctx, "enabled_stores", "tool_log") or ""
    ok = value is not None and value.isdigit() and 0 < int(value) <= days
    extra = [s for s in stores.split(",") if s and s != "logstore_standard"]
    return verdict(ok and not extra, f"logstore_standard/loglifetime = {value!r}; enabled stores: {stores or 'none'}",
                   f"1..{days} days; only logstore_standard")


@control("MOODLE-DPO-CONTACT", "moodle", "Users can contact the data protection officer from Moodle",
         "GDPR Art. 38(4): data subjects may contact the DPO; Moodle routes it to the privacy officer role.",
         ["25"], "medium", titles={"ca": "Contacte amb el DPD des de Moodle", "es": "Contacto con el DPD desde Moodle"})
def dpo_contact(ctx: Context) -> Outcome:
    s = state(ctx)
    on = s["settings"]["tool_dataprivacy/contactdataprotectionofficer"]
    email = ctx.school.contacts.dpo.email
    dpos = [d for d in s["dpos"] if d["username"] not in s["admins"]]
    ok = on == "1" and any(d["email"].lower() == email.lower() for d in dpos)
    shown = ", ".join(f"{d['username']} <{d['email']}>" for d in dpos) or "none (falls back to the site admins)"
    return verdict(ok, f"contactdataprotectionofficer = {on!r}; privacy officers: {shown}",
                   f"contactdataprotectionofficer = '1'; a privacy officer with {email}")


def _days(period: str | None) -> int | None:
    """P365D / P1Y / P2Y6M -> days (years 365, months 30); None when unset or not a period."""
    import re

    m = re.fullmatch(r"P(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)W)?(?:(\d+)D)?", period or "")
    if not m or not any(m.groups()):
        return None
    y, mo, w, d = (int(g or 0) for g in m.groups())
    return y * 365 + mo * 30 + w * 7 + d


@control("MOODLE-DATA-RETENTION", "moodle", "The data registry sets retention per policy (site, users, courses)",
         "Without a purpose and retention period Moodle never flags personal data as expired.", ["5(1)(e)"], "high",
         titles={"ca": "Retenció de dades configurada", "es": "Retención de datos configurada"})
def data_retention(ctx: Context) -> Outcome:
    limit = ctx.policy.data_retention_days
    ret = state(ctx)["retention"]
    bad = [k for k, v in ret.items() if (d := _days(v)) is None or d > limit]
    return verdict(not bad, "; ".join(f"{k}: {v or 'not set'}" for k, v in ret.items()),
                   f"site, user and course purposes with retention <= {limit} days")


@control("MOODLE-PRIVACY-REVIEW", "moodle", "Data exports and deletions are reviewed by the privacy officer",
         "Automatic approval releases a person's whole data (or erases it) without anyone checking the request.",
         ["32"], "medium",
         titles={"ca": "Sol·licituds de privacitat revisades", "es": "Solicitudes de privacidad revisadas"})
def privacy_review(ctx: Context) -> Outcome:
    exp = setting(ctx, "automaticdataexportapproval", "tool_dataprivacy")
    dele = setting(ctx, "automaticdatadeletionapproval", "tool_dataprivacy")
    return verdict(_is(exp, "0") and _is(dele, "0"),
                   f"automaticdataexportapproval = {exp!r}, automaticdatadeletionapproval = {dele!r}", "both 0")


@control("MOODLE-GRAVATAR-OFF", "moodle", "No Gravatar pictures",
         "Gravatar sends a hash of each e-mail address to a US service from every browser.", ["44"], "medium",
         titles={"ca": "Sense Gravatar", "es": "Sin Gravatar"})
def gravatar_off(ctx: Context) -> Outcome:
    return _flag(ctx, "enablegravatar", "0")


@control("MOODLE-NO-UPDATE-CHECK", "moodle", "No update checks or code installs from the web",
         "Update checks call moodle.org; the deploy, not the web UI, installs code.", ["44", "32"], "medium",
         titles={"ca": "Sense comprovació d'actualitzacions", "es": "Sin comprobación de actualizaciones"})
def no_update_check(ctx: Context) -> Outcome:
    f = state(ctx)["forced"]
    ok = f["disableupdatenotifications"] and f["disableupdateautodeploy"]
    return verdict(ok, f"$CFG->disableupdatenotifications = {f['disableupdatenotifications']}, "
                       f"$CFG->disableupdateautodeploy = {f['disableupdateautodeploy']}", "both true in config.php")


@control("MOODLE-NO-GEOPLUGIN", "moodle", "IP lookups never call geoplugin",
         "With a geoplugin key Moodle sends users' IP addresses to an outside service.", ["44"], "medium",
         titles={"ca": "Sense geoplugin", "es": "Sin geoplugin"})
def no_geoplugin(ctx: Context) -> Outcome:
    key = setting(ctx, "geopluginapikey")
    return verdict(not key, f"geopluginapikey = {key!r}", "empty")


@control("MOODLE-WEBSERVICES-OFF", "moodle", "Web services and the mobile app service are off",
         "Tokens for the API and the mobile app (push via Moodle HQ) are not needed by the schools.", ["25", "32"],
         "low", titles={"ca": "Serveis web desactivats", "es": "Servicios web desactivados"})
def webservices_off(ctx: Context) -> Outcome:
    ws, mob = setting(ctx, "enablewebservices"), setting(ctx, "enablemobilewebservice")
    return verdict(_is(ws, "0") and _is(mob, "0"), f"enablewebservices = {ws!r}, enablemobilewebservice = {mob!r}",
                   "both 0")


@control("MOODLE-NO-SELF-REGISTRATION", "moodle", "Nobody can create their own Moodle account",
         "Accounts come from the school's directory; self-registration lets strangers (or minors without "
         "consent) in.", ["25", "32"], "high", titles={"ca": "Sense autoregistre", "es": "Sin autorregistro"})
def no_self_registration(ctx: Context) -> Outcome:
    value = setting(ctx, "registerauth")
    return verdict(not value, f"registerauth = {value!r}", "empty (no self-registration)")


@control("MOODLE-LDAP-TLS", "moodle", "Moodle logs in against the directory over verified TLS",
         "Passwords travel to LDAP on each login: only over TLS with the certificate checked.", ["32"], "high",
         titles={"ca": "Moodle parla amb LDAP per TLS", "es": "Moodle habla con LDAP por TLS"})
def ldap_tls(ctx: Context) -> Outcome:
    auth = setting(ctx, "auth") or ""
    url = setting(ctx, "host_url", "auth_ldap") or ""
    tls = setting(ctx, "start_tls", "auth_ldap")
    conf = ctx.run(LDAP_REQCERT).stdout.lower().split()
    reqcert = conf[conf.index("tls_reqcert") + 1] if "tls_reqcert" in conf else "(default: demand)"
    if "ldap" not in auth.split(","):
        return failed(f"auth = {auth!r}", "auth includes ldap")
    secure = all(u.startswith("ldaps://") for u in url.split(";") if u) or tls == "1"
    ok = bool(url) and secure and reqcert in ("demand", "hard", "(default: demand)")
    return verdict(ok, f"auth = {auth!r}; host_url = {url!r}, start_tls = {tls!r}; {LDAP_CONF} TLS_REQCERT {reqcert}",
                   "ldaps:// (or StartTLS) with TLS_REQCERT demand")
