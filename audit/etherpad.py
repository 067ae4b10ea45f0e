"""Etherpad controls, read from the running service: the settings file its unit really passes
(--settings in ExecStart), the unit's environment, the API key file and the listening sockets.
The settings are summarised ON the host (no password leaves it: only whether each is set and weak)."""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Any
from urllib.parse import urlparse

from schoolctl.audit.catalogue import Context, Outcome, control, evidence, verdict

UNIT = "etherpad.service"
WEAK = ("", "changeme1", "admin", "user", "password", "etherpad")
_SUMMARY = r"""
import json, os, re, shlex, stat, subprocess, sys
show = subprocess.run(["systemctl", "show", "-p", "ExecStart,Environment,WorkingDirectory", "%(unit)s"],
                      capture_output=True, text=True).stdout
props = dict(line.split("=", 1) for line in show.splitlines() if "=" in line)
argv = re.search(r"argv\[\]=([^;]*)", props.get("ExecStart", ""))
args = shlex.split(argv.group(1)) if argv else []
def arg(name, default):
    return args[args.index(name) + 1] if name in args[:-1] else os.path.join(props.get("WorkingDirectory", ""), default)
path, keyfile = arg("--settings", "settings.json"), arg("--apikey", "APIKEY.txt")
out = {"unit": bool(argv), "settings_file": path, "environment": props.get("Environment", ""), "apikey_file": keyfile}
try:
    with open(path) as f:
        s = json.load(f)
except Exception as e:
    out["error"] = f"{path}: {type(e).__name__}: {e}"
    s = {}
weak = %(weak)s
for k in ("ip", "port", "disableIPlogging", "authenticationMethod", "showSettingsInAdminPage", "updateServer",
          "requireSession", "requireAuthentication", "editOnly", "enableMetrics", "loglevel", "trustProxy"):
    out[k] = s.get(k, "(unset)")
out["pad_lang"] = (s.get("padOptions") or {}).get("lang", "(unset)")
out["users"] = {u: {"is_admin": bool(v.get("is_admin")), "password_set": bool(v.get("password") or v.get("hash")),
                    "weak": (v.get("password") or "") in weak and not v.get("hash"),
                    "short": len(v.get("password") or "") < 16 and not v.get("hash")}
                for u, v in (s.get("users") or {}).items() if isinstance(v, dict)}
out["sso_clients"] = [{"id": c.get("client_id"), "weak_secret": c.get("client_secret") in weak}
                      for c in (s.get("sso") or {}).get("clients") or []]
try:
    st = os.stat(keyfile)
    import pwd
    out["apikey"] = {"mode": oct(stat.S_IMODE(st.st_mode)), "owner": pwd.getpwuid(st.st_uid).pw_name,
                     "length": st.st_size}
except OSError as e:
    out["apikey"] = {"error": str(e)}
print(json.dumps(out))
"""
STATE = evidence("python3 - <<'SCHOOLCTL_PY'\n" + _SUMMARY % {"unit": UNIT, "weak": repr(WEAK)} + "SCHOOLCTL_PY")
LISTEN = evidence("ss -Hltnp 2>/dev/null")


def state(ctx: Context) -> dict[str, Any]:
    res = ctx.run(STATE)
    if res.rc != 0:
        raise RuntimeError(f"reading Etherpad's settings failed ({res.rc}): {res.stderr.strip()[-300:]}")
    s = json.loads(res.stdout)
    if not s.get("unit"):
        raise RuntimeError(f"no {UNIT} with an ExecStart")
    if s.get("error"):
        raise RuntimeError(s["error"])
    return s


def _is(ctx: Context, key: str, wanted: Any) -> Outcome:
    value = state(ctx)[key]
    return verdict(value == wanted, f"{key} = {json.dumps(value)}", f"{key} = {json.dumps(wanted)}")


@control("ETHERPAD-LANGUAGE", "etherpad", "Etherpad's default language is the school's first language",
         "Pupils must understand the pad's own interface: padOptions.lang is the school's first language.",
         ["25"], "low", titles={"ca": "L'idioma per defecte d'Etherpad és el primer de l'escola",
                                "es": "El idioma por defecto de Etherpad es el primero de la escuela"})
def language(ctx: Context) -> Outcome:
    first = ctx.school.languages[0]
    value = state(ctx)["pad_lang"]
    return verdict(value == first, f"padOptions.lang = {json.dumps(value)}", f"padOptions.lang = {json.dumps(first)}")


@control("ETHERPAD-NO-IP-LOGGING", "etherpad", "Etherpad logs no IP addresses",
         "Etherpad's access log lines name the pad, the author and the client's address.", ["5(1)(c)"], "medium",
         titles={"ca": "Etherpad no registra adreces IP", "es": "Etherpad no registra direcciones IP"})
def no_ip_logging(ctx: Context) -> Outcome:
    return _is(ctx, "disableIPlogging", True)


@control("ETHERPAD-LOGLEVEL", "etherpad", "Etherpad logs warnings and errors only",
         "At INFO Etherpad logs every pad entry and exit with the author.", ["5(1)(c)"], "low",
         titles={"ca": "Etherpad només registra avisos i errors", "es": "Etherpad solo registra avisos y errores"})
def loglevel(ctx: Context) -> Outcome:
    value = state(ctx)["loglevel"]
    return verdict(value in ("WARN", "ERROR"), f"loglevel = {json.dumps(value)}", "loglevel WARN or ERROR")


@control("ETHERPAD-API-KEY", "etherpad", "Etherpad's HTTP API needs the secret key, kept private",
         "The API creates pads and sessions for anyone holding the key; it must be the key file, readable by "
         "Etherpad only, and no SSO client with a default secret.", ["32"], "high",
         titles={"ca": "L'API d'Etherpad requereix la clau secreta", "es": "La API de Etherpad exige la clave secreta"})
def api_key(ctx: Context) -> Outcome:
    s = state(ctx)
    key, method = s["apikey"], s["authenticationMethod"]
    weak_sso = [c["id"] for c in s["sso_clients"] if c["weak_secret"]]
    bad = []
    if method != "apikey":
        bad.append(f"authenticationMethod = {json.dumps(method)}")
    if "error" in key:
        bad.append(f"API key file {s['apikey_file']}: {key['error']}")
    elif int(key["mode"], 8) & 0o077 or key["owner"] != "etherpad" or key["length"] < 32:
        bad.append(f"API key file {s['apikey_file']}: mode {key['mode'][2:]}, owner {key['owner']}, "
                   f"{key['length']} bytes")
    if weak_sso:
        bad.append(f"SSO clients with default secrets: {', '.join(map(str, weak_sso))}")
    shown = "; ".join(bad) or (f"authenticationMethod apikey; {s['apikey_file']} mode {key['mode'][2:]} owner "
                               f"{key['owner']}, {key['length']} bytes; no default SSO secrets")
    return verdict(not bad, shown, "authenticationMethod apikey; key file 0600 etherpad, >= 32 bytes")


@control("ETHERPAD-ADMIN-PROTECTED", "etherpad", "Etherpad's admin pages need a strong admin password",
         "/admin installs plugins and reads every pad; a default or missing password opens it to anyone.",
         ["32"], "high", titles={"ca": "L'administració d'Etherpad està protegida",
                                 "es": "La administración de Etherpad está protegida"})
def admin_protected(ctx: Context) -> Outcome:
    users = state(ctx)["users"]
    admins = {u: v for u, v in users.items() if v["is_admin"]}
    bad = [f"{u}: {'no password' if not v['password_set'] else 'default password' if v['weak'] else 'short password'}"
           for u, v in users.items() if not v["password_set"] or v["weak"] or v["short"]]
    if not admins:
        bad.append("no admin user (admin pages unreachable, or open through a plugin)")
    return verdict(not bad, "; ".join(bad) or f"admin users {', '.join(admins)} with strong passwords; "
                                              f"{len(users)} user(s) in settings",
                   "an admin user; every user with a strong, non-default password")


@control("ETHERPAD-SETTINGS-HIDDEN", "etherpad", "The admin page does not show settings.json",
         "settings.json holds the database password; showing it in the browser spreads it.", ["32"], "medium",
         titles={"ca": "La pàgina d'administració no mostra la configuració",
                 "es": "La página de administración no muestra la configuración"})
def settings_hidden(ctx: Context) -> Outcome:
    return _is(ctx, "showSettingsInAdminPage", False)


@control("ETHERPAD-PADS-NEED-SESSION", "etherpad", "Pads open only with a session (or a login), never by name alone",
         "Without requireSession or requireAuthentication anyone who guesses a pad's name reads and edits it.",
         ["25", "32"], "high", titles={"ca": "Els pads només s'obren amb sessió",
                                       "es": "Los pads solo se abren con sesión"})
def pads_need_session(ctx: Context) -> Outcome:
    s = state(ctx)
    rs, ra, eo = s["requireSession"], s["requireAuthentication"], s["editOnly"]
    ok = rs is True or ra is True
    return verdict(ok, f"requireSession = {json.dumps(rs)}, requireAuthentication = {json.dumps(ra)}, "
                       f"editOnly = {json.dumps(eo)}", "requireSession true (or requireAuthentication true)")


@control("ETHERPAD-NO-METRICS", "etherpad", "Etherpad's /stats metrics are off",
         "/stats and /stats/prometheus answer without authentication (pads, users, activity).", ["32", "5(1)(c)"],
         "low", titles={"ca": "Mètriques d'Etherpad desactivades", "es": "Métricas de Etherpad desactivadas"})
def no_metrics(ctx: Context) -> Outcome:
    return _is(ctx, "enableMetrics", False)


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


@control("ETHERPAD-NO-UPDATE-CHECK", "etherpad", "Etherpad's update check goes nowhere, no install analytics",
         "At every start Etherpad asks its update server (with its version in the user agent); the check has "
         "no off switch, so it points at loopback (and egress is blocked). SCARF_ANALYTICS=false stops "
         "install-time analytics.", ["44", "5(1)(c)"], "medium",
         titles={"ca": "Etherpad no consulta actualitzacions", "es": "Etherpad no consulta actualizaciones"})
def no_update_check(ctx: Context) -> Outcome:
    s = state(ctx)
    server = s["updateServer"]
    host = urlparse(server).hostname if isinstance(server, str) else None
    scarf = re.search(r"(?:^|\s)SCARF_ANALYTICS=(\S*)", s["environment"])
    scarf_value = scarf.group(1) if scarf else "(unset)"
    ok = bool(host) and _loopback(host or "") and scarf_value == "false"
    return verdict(ok, f"updateServer = {json.dumps(server)}, unit SCARF_ANALYTICS = {scarf_value}",
                   "updateServer on loopback; SCARF_ANALYTICS=false in the unit")


@control("ETHERPAD-LOOPBACK-ONLY", "etherpad", "Etherpad listens on loopback only (nginx in front)",
         "Reached directly, Etherpad would bypass TLS and the web server's headers and logging policy.", ["32"],
         "high", titles={"ca": "Etherpad només escolta en local", "es": "Etherpad solo escucha en local"})
def loopback_only(ctx: Context) -> Outcome:
    s = state(ctx)
    port = s["port"]
    sockets = []
    for line in ctx.run(LISTEN).stdout.splitlines():
        parts = line.split()
        if len(parts) < 4:
            continue
        local = parts[3]
        if local.rsplit(":", 1)[-1] == str(port) or ("node" in line and "etherpad" in line):
            sockets.append(local)
    public = [x for x in sockets if not _loopback(x.rsplit(":", 1)[0].split("%")[0])]
    ok = bool(sockets) and not public and _loopback(str(s["ip"]))
    return verdict(ok, f"settings ip = {json.dumps(s['ip'])}; listening on port {port}: "
                       f"{', '.join(sockets) or 'nothing (is Etherpad running?)'}",
                   f"ip 127.0.0.1; only loopback sockets on port {port}")
