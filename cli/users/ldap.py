"""The directory on the school server: one `ldapsearch` of everything and one `ldapmodify` of the
whole change set, as root over ldapi:/// (SASL EXTERNAL), LDIF on stdin (schoolctl.connect.Session)."""

from __future__ import annotations

import shlex
from datetime import date

from schoolctl.cli.users.directory import Directory, parse_ldif, read_directory
from schoolctl.connect import Session
from schoolctl.deploy.identity import MUST_CHANGE
from schoolctl.errors import ServerError

# --- the school server -----------------------------------------------------------------------

SEARCH_ATTRS = ("objectClass", "uid", "cn", "givenName", "sn", "mail", "employeeType", "employeeNumber",
                "departmentNumber", "description", "member", "ou", MUST_CHANGE)
SEARCH_FILTER = "(|(objectClass=inetOrgPerson)(objectClass=groupOfNames)(objectClass=organizationalUnit))"
LDAPI = "-Q -Y EXTERNAL -H ldapi:///"


def search_command(base_dn: str) -> str:
    return (f"ldapsearch {LDAPI} -LLL -o ldif-wrap=no -b {shlex.quote(base_dn)} "
            f"{shlex.quote(SEARCH_FILTER)} {' '.join(SEARCH_ATTRS)}")


def fetch_directory(server: Session, base_dn: str, today: date) -> Directory:
    ok, out, err = server.run(search_command(base_dn))
    if not ok:
        if "No such object" in err or "(32)" in err:
            raise ServerError(f"the directory {base_dn} does not exist on the server: deploy the school first "
                              "(the identity layer)")
        raise ServerError(f"ldapsearch failed: {err.strip()[-500:]}")
    return read_directory(parse_ldif(out), base_dn, today)


def apply_ldif(server: Session, ldif: str) -> None:
    """The whole change set in one ldapmodify run (LDIF on stdin); stops at the first error, and a
    re-run converges because the plan is recomputed from the directory."""
    ok, out, err = server.run(f"ldapmodify {LDAPI}", stdin=ldif)
    if not ok:
        done = out.count("modifying entry") + out.count("adding new entry") + out.count("deleting entry")
        raise ServerError(f"ldapmodify stopped after {done} change(s): {err.strip()[-500:]} "
                          "(run the import again: it starts from what the directory holds now)")
