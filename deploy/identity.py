"""The school's directory: OpenLDAP (slapd, Debian) with the people and groups the apps log in with.

- Suffix `site.school.ldap_base`; `ou=people`, `ou=groups`, `ou=suspended` (leavers waiting for
  deletion: invisible to the apps, unable to log in); `cn=apps,<base>`, the read-only account the
  apps bind with (reads people and groups, never passwords).
- LDAP over TLS only: slapd listens on `ldapi:///` (root's SASL EXTERNAL) and `ldaps://127.0.0.1:636`
  (loopback only; the firewall keeps 636 closed). Its certificate comes from a small CA made on the
  server itself (`/etc/ldap/tls/ca.crt`); clients trust exactly that CA (`/etc/ldap/ldap.conf`:
  TLS_CACERT + TLS_REQCERT demand). The web certificate is not used: it renews every few weeks
  from an outside ACME CA, while this one only has to be trusted by programs on this server.
- cn=config is ours entirely: the package is preseeded with `slapd/no_configuration` and the
  config is built with slapadd from a rendered LDIF (rebuilt whenever that LDIF changes).
- Password hashes are computed here ({SSHA512} with a salt derived from the secret), so the plain
  admin and apps passwords never travel in a command; the apps password is also left in
  /etc/schoolctl/secrets/ldap_apps (root only, no newline) for app layers' `$(cat ...)`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import shlex
from dataclasses import dataclass
from typing import TYPE_CHECKING

from schoolctl.deploy.render import one_line, render
from schoolctl.deploy.site import Site
from schoolctl.deploy.state import SYSTEM, Directory, File, Layer, Step
from schoolctl.errors import RenderError

if TYPE_CHECKING:
    from schoolctl.secrets import Secret

PACKAGES = ["slapd", "ldap-utils", "openssl"]
HOST = "127.0.0.1"   # in slapd's certificate (IP SAN); not "localhost": libldap swaps that for a reverse lookup
PORT = 636
TLS_DIR = "/etc/ldap/tls"
CA_FILE = f"{TLS_DIR}/ca.crt"
CONF_DIR = "/etc/schoolctl/identity"
STATE_DIR = "/var/lib/schoolctl/identity"
APPS_PASSWORD_FILE = "/etc/schoolctl/secrets/ldap_apps"
ROOT = "gidNumber=0+uidNumber=0,cn=peercred,cn=external,cn=auth"   # root over ldapi:/// (SASL EXTERNAL)
LDAPI = "ldapi:///"
CERT_SCRIPT = "/usr/local/sbin/schoolctl-ldap-cert"
CONFIG_SCRIPT = "/usr/local/sbin/schoolctl-slapd-config"
TEACHERS, STUDENTS, CLASS_PREFIX = "teachers", "students", "class-"
MUST_CHANGE = "pwdReset"   # ppolicy's flag on a person whose password is still the initial one


@dataclass(frozen=True)
class LdapSettings:
    """What an app needs to authenticate against the school's directory."""

    uri: str                    # ldaps://127.0.0.1:636 (certificate checked against ca_file)
    host: str
    port: int
    base_dn: str
    people_dn: str
    groups_dn: str
    suspended_dn: str
    bind_dn: str                # cn=apps,<base>: read-only, cannot read passwords
    bind_password: Secret       # .reveal() for the value; never log it
    bind_password_file: str     # the same on the server (root only, no trailing newline)
    ca_file: str
    moodle_dn: str = ""         # cn=moodle,<base>: Moodle's own bind (reads like cn=apps; may set a
                                # person's password, never read one: Moodle's password change page)
    user_filter: str = "(objectClass=inetOrgPerson)"
    uid_attr: str = "uid"
    mail_attr: str = "mail"
    given_name_attr: str = "givenName"
    family_name_attr: str = "sn"
    display_name_attr: str = "cn"
    role_attr: str = "employeeType"         # teacher | student
    class_attr: str = "departmentNumber"    # the class, e.g. 1A
    group_filter: str = "(objectClass=groupOfNames)"
    group_name_attr: str = "cn"
    member_attr: str = "member"             # full DNs
    member_of_attr: str = "memberOf"        # kept on each person by slapd's memberof overlay
    teachers_group: str = TEACHERS
    students_group: str = STUDENTS
    class_group_prefix: str = CLASS_PREFIX

    def group_dn(self, cn: str) -> str:
        return f"cn={cn},{self.groups_dn}"

    def class_group(self, group: str) -> str:
        """The cn of a class's group: `1A` -> `class-1a`."""
        return class_group_cn(group)

    @property
    def teachers_dn(self) -> str:
        return self.group_dn(self.teachers_group)

    @property
    def students_dn(self) -> str:
        return self.group_dn(self.students_group)


def checked_uid(uid: str) -> str:
    """`uid` when it is a plain directory uid (letters, digits, `._@-`: safe in shell words and URLs
    unquoted); ValueError otherwise. Used by the apps' leaver commands."""
    if not isinstance(uid, str) or not re.fullmatch(r"[A-Za-z0-9._@-]+", uid):
        raise ValueError(f"unexpected uid {uid!r}")
    return uid


def class_group_cn(group: str) -> str:
    return CLASS_PREFIX + re.sub(r"[^a-z0-9]+", "-", group.strip().lower()).strip("-")


def checked_dn(dn: str, what: str) -> str:
    """`dn` when it is one line without `"` or `\\`: it goes, double-quoted, into slapd's access
    rules and limits (`dn.subtree="<dn>"`), where either would end or bend the quoted DN."""
    one_line(dn, what)
    if '"' in dn or "\\" in dn or not dn.strip():
        raise RenderError(f"{what}: {dn!r} cannot be used: it must be one line with no double quote or backslash")
    return dn


def ldap_settings(site: Site) -> LdapSettings:
    base = checked_dn(site.school.ldap_base, "the directory base (dc=<school id>,<identity.base_dn>)")
    return LdapSettings(
        uri=f"ldaps://{HOST}:{PORT}", host=HOST, port=PORT, base_dn=base,
        people_dn=f"ou=people,{base}", groups_dn=f"ou=groups,{base}", suspended_dn=f"ou=suspended,{base}",
        bind_dn=f"cn=apps,{base}", bind_password=site.secret("ldap_apps"), bind_password_file=APPS_PASSWORD_FILE,
        ca_file=CA_FILE, moodle_dn=f"cn=moodle,{base}")


# --- LDIF and password hashes (shared with cli/users.py) -------------------------------------

_SAFE = re.compile(r"^[\x01-\x09\x0b\x0c\x0e-\x1f\x21-\x39\x3b\x3d-\x7f][\x01-\x09\x0b\x0c\x0e-\x7f]*$")


def ldif_line(attr: str, value: str) -> str:
    """`attr: value`, or `attr:: base64` when the value is not a plain LDIF SAFE-STRING (RFC 2849):
    a newline in a value can never add a line or an attribute."""
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9-]*(;[A-Za-z0-9-]+)*", attr):
        raise RenderError(f"not an LDIF attribute name: {attr!r}")
    if value == "":
        return f"{attr}:"
    if _SAFE.fullmatch(value) and not value.endswith(" "):
        return f"{attr}: {value}"
    return f"{attr}:: {base64.b64encode(value.encode()).decode()}"


def ssha512(password: str, salt: bytes) -> str:
    """An {SSHA512} userPassword value (slapd's pw-sha2 module)."""
    digest = hashlib.sha512(password.encode() + salt).digest()
    return "{SSHA512}" + base64.b64encode(digest + salt).decode()


def stable_hash(password: str, dn: str) -> str:
    """{SSHA512} with a salt derived from the password and the DN: the same value on every render,
    so the config files only change when the secret does."""
    salt = hmac.new(password.encode(), f"schoolctl-ldap:{dn}".encode(), hashlib.sha256).digest()[:16]
    return ssha512(password, salt)


# --- the layer -------------------------------------------------------------------------------

def _subject_value(value: str) -> str:
    """A value of `openssl req -subj /CN=...`: one line, with openssl's separators escaped."""
    one_line(value, "certificate subject")
    return value.replace("\\", "\\\\").replace("/", "\\/").replace("+", "\\+")


def _applied(path: str, marker: str) -> str:
    """A cheap, exact check: the file's hash equals the one recorded when it was last applied."""
    return f'[ "$(sha256sum < {path})" = "$(cat {marker} 2>/dev/null)" ]'


def layer(site: Site) -> Layer:
    s = ldap_settings(site)
    admin_dn = f"cn=admin,{s.base_dn}"
    admin_hash = stable_hash(site.secret("ldap_admin").reveal(), admin_dn)
    apps_password = s.bind_password.reveal()
    apps_hash = stable_hash(apps_password, s.bind_dn)
    tls = {"ca": CA_FILE, "cert": f"{TLS_DIR}/ldap.crt", "key": f"{TLS_DIR}/ldap.key"}
    config_ldif, tree_ldif, apps_ldif = (f"{CONF_DIR}/slapd-config.ldif", f"{CONF_DIR}/tree.ldif",
                                         f"{CONF_DIR}/apps-password.ldif")
    config_marker, apps_marker = f"{STATE_DIR}/config.applied", f"{STATE_DIR}/apps-password.applied"
    moodle_ldif, moodle_pw_ldif = f"{CONF_DIR}/moodle-account.ldif", f"{CONF_DIR}/moodle-password.ldif"
    moodle_marker = f"{STATE_DIR}/moodle-account.applied"
    moodle_hash = stable_hash(site.secret("ldap_moodle").reveal(), s.moodle_dn)
    cert_marker = f"{STATE_DIR}/cert.applied"
    ous = [(s.people_dn, "people"), (s.groups_dn, "groups"), (s.suspended_dn, "suspended")]
    dc = s.base_dn.split(",", 1)[0].split("=", 1)[1]
    names = [HOST, "localhost"]
    san = ",".join(f"IP:{n}" if re.match(r"^[0-9.:]+$", n) else f"DNS:{n}" for n in names)
    ldapi = f"-Q -Y EXTERNAL -H {LDAPI}"
    files = [
        File("/etc/default/slapd", render("identity/slapd-default.j2", services=f"{LDAPI} {s.uri}/"),
             restart=("slapd",)),
        File("/etc/ldap/ldap.conf", render("identity/ldap.conf.j2", base=s.base_dn, uri=s.uri, ca_file=CA_FILE)),
        File(config_ldif, render("identity/slapd-config.ldif.j2", s=s, tls=tls, root=ROOT, admin_dn=admin_dn,
                                 admin_hash=admin_hash), "0600", secret=True),
        File(tree_ldif, render("identity/tree.ldif.j2", s=s, dc=dc, org_line=ldif_line("o", site.school.name),
                               ous=ous, apps_hash=apps_hash), "0600", secret=True),
        File(apps_ldif, render("identity/apps-password.ldif.j2", s=s, dn=s.bind_dn, apps_hash=apps_hash), "0600",
             secret=True),
        File(moodle_ldif, render("identity/moodle-account.ldif.j2", s=s, moodle_hash=moodle_hash), "0600",
             secret=True),
        File(moodle_pw_ldif, render("identity/apps-password.ldif.j2", s=s, dn=s.moodle_dn, apps_hash=moodle_hash),
             "0600", secret=True),
        File(APPS_PASSWORD_FILE, apps_password, "0600", secret=True),
        File(CERT_SCRIPT, render("identity/ldap-cert.sh.j2", dir=TLS_DIR, names=names, san=san, script=CERT_SCRIPT,
                                 marker=cert_marker,
                                 ca_cn=_subject_value(f"{site.id} school internal CA (LDAP)")), "0755"),
        File(CONFIG_SCRIPT, render("identity/slapd-config.sh.j2", config=config_ldif, tree=tree_ldif,
                                   marker=config_marker), "0755"),
    ]
    cert_ok = (f"openssl verify -CAfile {CA_FILE} {tls['cert']} && openssl x509 -checkend 2592000 -noout -in "
               f"{tls['cert']} && openssl x509 -checkend 31536000 -noout -in {CA_FILE} && "
               f"[ \"$(stat -c %G:%a {tls['key']})\" = openldap:640 ] && {_applied(CERT_SCRIPT, cert_marker)}")
    return Layer(
        name="identity", round=SYSTEM,
        # no Debian default directory: cn=config is built from our LDIF (the slapd service fails
        # until then, so it is started by the configuration step, not listed in `services`)
        pre_steps=[Step("slapd preseed (no default configuration)",
                        check="debconf-show slapd 2>/dev/null | grep -q 'slapd/no_configuration: true'",
                        apply="echo 'slapd slapd/no_configuration boolean true' | debconf-set-selections")],
        packages=PACKAGES,
        directories=[Directory(CONF_DIR, "0700"), Directory(STATE_DIR, "0700")],
        files=files,
        steps=[
            Step("LDAP certificate from the school's internal CA", check=cert_ok, apply=CERT_SCRIPT),
            Step("slapd configuration (cn=config)", check=_applied(config_ldif, config_marker), apply=CONFIG_SCRIPT),
            Step("slapd running", check="systemctl is-active -q slapd && systemctl is-enabled -q slapd",
                 apply="systemctl enable slapd && systemctl restart slapd"),
            Step("LDAP apps account password", check=_applied(apps_ldif, apps_marker),
                 apply=f"ldapmodify {ldapi} -f {apps_ldif} >/dev/null && sha256sum < {apps_ldif} > {apps_marker}"),
            # the entry is added once; later its password is replaced (the LDIF's hash changes with the secret)
            Step("LDAP account Moodle binds with (cn=moodle)", check=_applied(moodle_pw_ldif, moodle_marker),
                 apply=(f"if ldapsearch {ldapi} -LLL -s base -b {shlex.quote(s.moodle_dn)} dn >/dev/null 2>&1; "
                        f"then ldapmodify {ldapi} -f {moodle_pw_ldif} >/dev/null; "
                        f"else ldapadd {ldapi} -f {moodle_ldif} >/dev/null; fi && "
                        f"sha256sum < {moodle_pw_ldif} > {moodle_marker}")),
        ],
    )
