"""PostgreSQL 17 (Debian): loopback only, SCRAM passwords, one database and role per app that needs
one. Passwords come from the vault, reach the server in a root-only file and travel to psql on
stdin, never on a command line; a changed secret converges (the role step keeps a hash of it)."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from schoolctl.config.model import DB_SERVICES
from schoolctl.deploy.render import integer, plain_name, render
from schoolctl.deploy.site import Site
from schoolctl.deploy.state import SYSTEM, Directory, File, Layer, Service, Step
from schoolctl.secrets import Secret

VERSION = "17"
PORT = 5432
CLUSTER = f"/etc/postgresql/{VERSION}/main"
UNIT = f"postgresql@{VERSION}-main"
SECRETS = "/etc/schoolctl/secrets"
PSQL = "runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1"
BACKUPS = "/var/backups/schoolctl"
KEEP_BACKUPS = 3


def backup_command(database: str) -> str:
    """Shell (root): dump `database` before an app upgrades it, so the old release (kept under its
    versioned path) can be put back with its data: `pg_restore --clean -d <db> <file>`. Custom format
    (compressed), root-only 0600 (it holds personal data); the newest KEEP_BACKUPS per database stay."""
    db = shlex.quote(plain_name(database, "a database name"))
    return (f"install -d -m 0700 {BACKUPS} && f={BACKUPS}/{db}-$(date -u +%Y%m%dT%H%M%SZ).dump && "
            f"(umask 077 && runuser -u postgres -- pg_dump --format=custom {db} > \"$f.part\") && "
            f"mv \"$f.part\" \"$f\" && echo \"backup: $f\" && "
            f"ls -1t {BACKUPS}/{db}-*.dump | tail -n +{KEEP_BACKUPS + 1} | xargs -r rm -f --")


@dataclass(frozen=True)
class DbCredentials:
    """How an app reaches its database."""

    name: str
    user: str
    password: Secret
    host: str = "127.0.0.1"
    port: int = PORT


def databases(site: Site) -> list[str]:
    """The databases this school needs: one per enabled app that keeps its data in PostgreSQL."""
    return [s for s in DB_SERVICES if site.school.has(s)]


def credentials(site: Site, service: str) -> DbCredentials:
    """Database name, role and password of `service` (moodle, nextcloud, etherpad)."""
    if service not in DB_SERVICES:
        raise ValueError(f"{service} has no database (only {', '.join(DB_SERVICES)})")
    return DbCredentials(name=service, user=service, password=site.secret(f"db_{service}"))


def secret_file(service: str) -> str:
    """The root-only file on the server holding `service`'s database password."""
    return f"{SECRETS}/db_{service}"


def _role_step(name: str) -> Step:
    pw = secret_file(name)
    applied = f"{pw}.applied"
    exists = (f"{PSQL} -tAc \"SELECT 1 FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba "
              f"WHERE d.datname = '{name}' AND r.rolname = '{name}' AND r.rolcanlogin\" | grep -qx 1")
    check = f'[ "$(sha256sum < {pw})" = "$(cat {applied} 2>/dev/null)" ] && {exists}'
    sql = render("database/role.sql.j2", db=name)
    # psql reads `\set pw <value>` and the SQL from stdin: the password is on no command line.
    apply = (f"umask 077\n{{ printf '\\\\set pw '; cat {pw}; printf '\\n'; cat <<'SQL'\n{sql}SQL\n}} "
             f"| {PSQL} -d postgres\nsha256sum < {pw} > {applied}")
    return Step(f"database and role {name}", check=check, apply=apply)


def layer(site: Site) -> Layer | None:
    names = databases(site)
    if not names:
        return None
    privacy = site.school.privacy
    full = privacy.access_log == "full"
    prefix = "%m [%p] %q%u@%d %h " if full else "%m [%p] %q%u@%d "
    conf = render("database/postgresql.conf.j2", version=VERSION, port=PORT, full=full, prefix=prefix)
    files = [
        File(f"{CLUSTER}/conf.d/50-schoolctl.conf", conf, "0644", "postgres", "postgres", restart=(UNIT,)),
        File(f"{CLUSTER}/pg_hba.conf", render("database/pg_hba.conf.j2", databases=names), "0640",
             "postgres", "postgres", reload=(UNIT,)),
        File("/etc/logrotate.d/postgresql-common",
             render("database/logrotate.j2", days=integer(privacy.log_retention_days, "privacy.log_retention_days"))),
        *(File(secret_file(n), credentials(site, n).password.reveal(), "0600", secret=True) for n in names),
    ]
    return Layer(
        name="database", round=SYSTEM,
        packages=[f"postgresql-{VERSION}"],
        directories=[Directory("/etc/schoolctl"), Directory(SECRETS, "0700")],
        files=files,
        services=[Service(UNIT)],
        steps=[_role_step(n) for n in names],
    )
