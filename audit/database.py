"""Database controls (PostgreSQL): loopback only, no weak authentication, SCRAM passwords, one
unprivileged role per service. Read from the running server (`ss`, `psql` as postgres)."""

from __future__ import annotations

import ipaddress
import re

from schoolctl.audit.catalogue import Context, Outcome, control, evidence, verdict
from schoolctl.config.model import DB_SERVICES

PSQL = "runuser -u postgres -- psql -XAt -F '|' -d postgres -c"
LISTEN = evidence("ss -Hltnp 2>/dev/null")
HBA = evidence(f"{PSQL} \"SELECT line_number, type, array_to_string(database, ','), "
               "array_to_string(user_name, ','), coalesce(address, ''), auth_method, coalesce(error, '') "
               "FROM pg_hba_file_rules ORDER BY line_number\"")
SCRAM = evidence(f"{PSQL} \"SHOW password_encryption\"; "
                 f"{PSQL} \"SELECT rolname FROM pg_authid WHERE rolpassword LIKE 'md5%' OR "
                 "(rolpassword IS NOT NULL AND rolpassword NOT LIKE 'SCRAM-SHA-256$%')\"")
ROLES = evidence(f"{PSQL} \"SELECT d.datname, r.rolname, r.rolsuper, r.rolcreaterole, r.rolcreatedb "
                 "FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba WHERE NOT d.datistemplate\"; echo '@@roles'; "
                 f"{PSQL} \"SELECT rolname, rolsuper FROM pg_roles WHERE rolcanlogin\"")

ALLOWED_AUTH = {"scram-sha-256", "peer", "reject", "cert"}


def _psql_ok(ctx: Context, cmd: str) -> str:
    res = ctx.run(cmd)
    if res.rc != 0:
        raise RuntimeError(f"psql failed ({res.rc}): {res.stderr.strip()[-300:] or 'no PostgreSQL?'}")
    return res.stdout


@control("DB-LOCAL-ONLY", "database", "PostgreSQL listens on loopback only",
         "The database holds every pupil record; only the apps on the same server may reach it.",
         ["32"], "high", titles={"ca": "PostgreSQL només escolta en local",
                                 "es": "PostgreSQL solo escucha en local"})
def local_only(ctx: Context) -> Outcome:
    sockets = []
    for line in ctx.run(LISTEN).stdout.splitlines():
        if "postgres" not in line and not re.search(r":5432\s", line):
            continue
        local = line.split()[3]
        addr = local.rsplit(":", 1)[0].strip("[]").split("%")[0]
        sockets.append(addr + ":" + local.rsplit(":", 1)[1])
    if not sockets:
        return verdict(False, "ss -ltnp: no PostgreSQL listening socket (is it running?)", "127.0.0.1/::1 only")
    public = [s for s in sockets if not _loopback(s.rsplit(":", 1)[0])]
    return verdict(not public, "ss -ltnp: postgres on " + ", ".join(sockets), "loopback addresses only "
                                                                              "(127.0.0.0/8, ::1)")


def _loopback(addr: str) -> bool:
    try:
        return ipaddress.ip_address(addr).is_loopback
    except ValueError:
        return False


@control("DB-HBA-NO-TRUST", "database", "pg_hba has no trust, md5 or password rules",
         "'trust' lets anyone in without a password; md5 and password are replayable or sent in clear.",
         ["32"], "high", titles={"ca": "pg_hba sense trust, md5 ni password",
                                 "es": "pg_hba sin trust, md5 ni password"})
def hba(ctx: Context) -> Outcome:
    rules = [line.split("|") for line in _psql_ok(ctx, HBA).splitlines() if line.count("|") >= 6]
    bad = [f"line {r[0]}: {r[1]} {r[2]} {r[3]} {r[4]} {r[5]}".replace("  ", " ") for r in rules
           if r[5] not in ALLOWED_AUTH or r[6]]
    methods = sorted({r[5] for r in rules})
    shown = "; ".join(bad) if bad else f"{len(rules)} rules, methods {', '.join(methods)}"
    return verdict(bool(rules) and not bad, f"pg_hba_file_rules: {shown}",
                   "only scram-sha-256 or peer (reject, cert) rules, no errors")


@control("DB-SCRAM", "database", "Passwords are stored as SCRAM-SHA-256",
         "MD5 password hashes are weak and can be replayed; SCRAM is PostgreSQL's safe method.",
         ["32"], "medium", titles={"ca": "Contrasenyes SCRAM-SHA-256", "es": "Contraseñas SCRAM-SHA-256"})
def scram(ctx: Context) -> Outcome:
    out = _psql_ok(ctx, SCRAM).splitlines()
    setting, weak = (out[0] if out else "(unknown)"), out[1:]
    return verdict(setting == "scram-sha-256" and not weak,
                   f"password_encryption {setting}; roles with non-SCRAM passwords: {', '.join(weak) or 'none'}",
                   "password_encryption scram-sha-256; every stored password SCRAM")


@control("DB-ROLE-PER-SERVICE", "database", "One unprivileged role per service, owning its own database",
         "If one app is broken into, its role must not reach the other apps' data.",
         ["32", "25"], "high", titles={"ca": "Un rol sense privilegis per servei",
                                       "es": "Un rol sin privilegios por servicio"})
def role_per_service(ctx: Context) -> Outcome:
    dbs_text, _, roles_text = _psql_ok(ctx, ROLES).partition("@@roles")
    owners = {r[0]: r for r in (line.split("|") for line in dbs_text.splitlines()) if len(r) >= 5}
    logins = {r[0]: r[1] for r in (line.split("|") for line in roles_text.splitlines()) if len(r) >= 2}
    wanted = [s for s in DB_SERVICES if ctx.school.has(s)]
    bad, seen = [], []
    used: dict[str, str] = {}
    for s in wanted:
        row = owners.get(s)
        if row is None:
            bad.append(f"no database {s}")
            continue
        owner, sup, createrole, createdb = row[1], row[2] == "t", row[3] == "t", row[4] == "t"
        seen.append(f"{s} owned by {owner}")
        if owner == "postgres" or sup or createrole or createdb:
            bad.append(f"database {s} owned by {owner}" + (" (superuser)" if sup else "")
                       + (" (createrole)" if createrole else "") + (" (createdb)" if createdb else ""))
        if owner in used:
            bad.append(f"role {owner} owns both {used[owner]} and {s}")
        used[owner] = s
    extra = sorted(set(logins) - set(used.keys()) - {"postgres"})
    if extra:
        bad.append(f"other login roles: {', '.join(extra)}")
    supers = sorted(r for r, sup in logins.items() if sup == "t" and r != "postgres")
    if supers:
        bad.append(f"superuser login roles besides postgres: {', '.join(supers)}")
    return verdict(not bad, "; ".join(bad or seen),
                   f"databases {', '.join(wanted)}, each owned by its own login role without superuser, createrole or "
                   "createdb; no other login roles but postgres")
