"""`schoolctl backup verify`: the restore drill. The newest archive of a school is restored onto a
scratch lab host (cli/backup/restore.py), where the people who use it must be able to log in (the
apps' own logins over HTTPS: Moodle's login form, Nextcloud's WebDAV; as the apps' administrators
and as one person of the restored directory, given a throwaway password on the scratch host) and the
manifest's counts (courses, files, pads, people) must match the restored server; the audit runs
there too. The result is recorded on the school's server (the audit's BACKUP-DRILL-RECENT reads it)
and the scratch host is removed."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import time
from typing import Any

from schoolctl.cli.backup.restore import Say, latest_archive, restore
from schoolctl.cli.backup.school import program
from schoolctl.config.model import SERVICE_HOSTS, EffectiveSchool, Server
from schoolctl.errors import BackupError, SchoolctlError
from schoolctl.secrets import SecretStore


def scratch_name(school_id: str) -> str:
    """The lab host of a school's drill: `drill-<id>`, or a hashed name when that is too long."""
    name = f"drill-{school_id}"
    return name if len(name) <= 20 else f"drill-{hashlib.sha256(school_id.encode()).hexdigest()[:10]}"


def _curl(address: str, fqdn: str, path: str, config: str = "", extra: tuple[str, ...] = ()) -> tuple[int, str, str]:
    """(status, headers, body) of https://fqdn/path on `address` (a lab host); options such as
    credentials in a curl config on stdin, never on a command line."""
    cmd = ["curl", "-sS", "--max-time", "60", "--noproxy", "*", "-k", "--resolve", f"{fqdn}:443:{address}",
           "-D", "/dev/stderr", "-o", "-", "-w", "\n@@%{http_code}", "-K", "-", *extra]
    proc = subprocess.run([*cmd, f"https://{fqdn}{path}"], capture_output=True, text=True, timeout=90,
                          input=config)
    body, _, code = proc.stdout.rpartition("\n@@")
    return int(code or 0), proc.stderr, body


def _moodle_login(address: str, fqdn: str, user: str, password: str, jar: str) -> str:
    """Moodle's own login form (its token, then the POST): 'ok' when it opens a session."""
    _, _, page = _curl(address, fqdn, "/login/index.php", extra=("-c", jar, "-b", jar))
    token = re.search(r'name="logintoken" value="([^"]+)"', page)
    conf = "".join(f'data-urlencode = "{k}={v}"\n' for k, v in (
        ("username", user), ("logintoken", token.group(1) if token else ""), ("password", password)))
    code, head, _ = _curl(address, fqdn, "/login/index.php", conf, ("-c", jar, "-b", jar))
    return "ok" if code in (302, 303) and "testsession" in head else f"HTTP {code}, no session"


def _webdav_login(address: str, fqdn: str, user: str, password: str) -> str:
    """Nextcloud's WebDAV: the user's own files folder answers a PROPFIND (207)."""
    conf = f'user = "{user}:{password}"\nrequest = "PROPFIND"\n'
    code, _, _ = _curl(address, fqdn, f"/remote.php/dav/files/{user}/", conf, ("-H", "Depth: 0"))
    return "ok" if code == 207 else f"WebDAV HTTP {code}"


def _ssha(password: str) -> str:
    """An LDAP {SSHA} value of `password` (salted SHA-1, as slappasswd makes by default)."""
    import base64
    import os

    salt = os.urandom(8)
    return "{SSHA}" + base64.b64encode(hashlib.sha1(password.encode() + salt).digest() + salt).decode()


def person(school: EffectiveSchool, target: Server) -> tuple[str, str] | None:
    """(uid, password) of one active person of the restored directory on the scratch host, given a
    throwaway password there (root over ldapi:///, LDIF on stdin): the drill logs in as somebody of
    the school, not only as the apps' administrators. None when the directory holds nobody."""
    import secrets
    from datetime import date

    from schoolctl.cli.users.ldap import apply_ldif, fetch_directory
    from schoolctl.connect import Session
    from schoolctl.deploy.identity import MUST_CHANGE

    with Session(target, f"{school.id} (drill)") as s:
        found = fetch_directory(s, school.ldap_base, date.today())
        active = sorted((a for a in found.accounts if a.suspended is None), key=lambda a: (a.role != "student", a.uid))
        if not active:
            return None
        chosen, password = active[0], secrets.token_urlsafe(18)
        apply_ldif(s, f"dn: {chosen.dn}\nchangetype: modify\nreplace: userPassword\nuserPassword: "
                      f"{_ssha(password)}\n-\nreplace: {MUST_CHANGE}\n-\n")
    return chosen.uid, password


def logins(school: EffectiveSchool, address: str, store: SecretStore, work: str,
           someone: tuple[str, str] | None = None) -> dict[str, str]:
    """Moodle's and Nextcloud's own logins with their administrator accounts and, given `someone`
    (uid, password), as that person of the directory (Moodle's LDAP login, their Nextcloud files):
    'ok' or why not (Etherpad has no login of its own: its pads are counted against the manifest)."""
    vault = store.load(school.id)
    found: dict[str, str] = {}
    if school.has("moodle"):
        fqdn = f"{SERVICE_HOSTS['moodle']}.{school.domain}"
        found["moodle"] = _moodle_login(address, fqdn, "admin", vault["moodle_admin"].reveal(), f"{work}/moodle.jar")
        if someone:
            found[f"moodle as {someone[0]}"] = _moodle_login(address, fqdn, *someone, f"{work}/person.jar")
    if school.has("nextcloud"):
        fqdn = f"{SERVICE_HOSTS['nextcloud']}.{school.domain}"
        found["nextcloud"] = _webdav_login(address, fqdn, "admin", vault["nextcloud_admin"].reveal())
        if someone:
            found[f"nextcloud as {someone[0]}"] = _webdav_login(address, fqdn, *someone)
    return found


def drill(school: EffectiveSchool, store: SecretStore, say: Say = lambda line: None) -> dict[str, Any]:
    """Restore the newest archive onto a scratch lab host, check it, record the result, remove the host."""
    import tempfile

    from schoolctl.audit.runner import audit_school
    from schoolctl.lab import Lab

    started = time.monotonic()
    name = scratch_name(school.id)
    lab = Lab()
    lab.down([name])
    result: dict[str, Any] = {"school": school.id, "scratch_host": name}
    try:
        newest = latest_archive(school, store, None)
        result["archive"] = newest
        say(f"{school.id}: reading {newest} back whole (every chunk authenticated, the dumps against the manifest)")
        program(school.server, school.id, "check", newest)
        lab.up([name], timeout=180)
        target = Server(address=f"lab:{name}")
        done = restore(school, target, store, archive=newest, force=True, say=say)
        result.update(archive=done["archive"], versions=done["versions"], counts=done["counts"],
                      restored_counts=done["restored_counts"])
        problems = [f"{k}: archive {a}, restored {b}" for k, (a, b) in done["differ"].items()]
        someone = person(school, target) if school.has("moodle") or school.has("nextcloud") else None
        result["person"] = someone[0] if someone else None
        with tempfile.TemporaryDirectory() as work:
            result["logins"] = logins(school, lab.host(name).address, store, work, someone)
        problems += [f"{app} login: {why}" for app, why in result["logins"].items() if why != "ok"]
        moved = school.model_copy(update={"server": target})
        audited = audit_school(moved)
        if audited.error:
            problems.append(f"audit: {audited.error}")
        failing = [r.control.id for r in audited.controls if r.status in ("fail", "error")
                   and not r.control.id.startswith("BACKUP-")]
        result["audit_failures"] = failing
        problems += [f"audit: {c} fails on the restored server" for c in failing]
        result["status"] = "failed" if problems else "ok"
        if problems:
            result["error"] = "; ".join(problems)
    except SchoolctlError as e:
        result.update(status="failed", error=e.message)
    finally:
        lab.down([name])
        _home(school, lab)
    result["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    result["seconds"] = round(time.monotonic() - started, 1)
    try:
        program(school.server, school.id, "record-drill", stdin=json.dumps(result))
        result["recorded"] = True
    except SchoolctlError as e:
        result["recorded"] = False
        result["record_error"] = e.message
    if result["status"] != "ok":
        archive = f" on archive {result['archive']}" if result.get("archive") else ""
        raise BackupError(f"{school.id}: the restore drill failed{archive}: {result.get('error')}", "")
    return result


def _home(school: EffectiveSchool, lab: Any) -> None:
    """The lab's DNS names of the school point at its own lab host again (the drill borrowed them)."""
    from schoolctl.deploy.site import Site

    if not school.server.lab_name:
        return
    try:
        address = lab.host(school.server.lab_name).address
    except SchoolctlError:
        return
    site = Site(school=school, secret=lambda n, length=32: None)  # type: ignore[arg-type,return-value]
    for n in site.names:
        lab.register_domain(n, address)
