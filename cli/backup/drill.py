"""`schoolctl backup verify`: the restore drill. The newest archive of a school is restored onto a
scratch lab host (cli/backup/restore.py), where the people who use it must be able to log in (the
apps' own logins over HTTPS: Moodle's login form, Nextcloud's WebDAV, Etherpad's API) and the
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


def logins(school: EffectiveSchool, address: str, store: SecretStore, work: str) -> dict[str, str]:
    """Moodle's and Nextcloud's own logins with their administrator accounts: 'ok' or why not
    (Etherpad has no login of its own: its pads are counted against the manifest)."""
    vault = store.load(school.id)
    found: dict[str, str] = {}
    if school.has("moodle"):
        fqdn, jar = f"{SERVICE_HOSTS['moodle']}.{school.domain}", f"{work}/moodle.jar"
        _, _, page = _curl(address, fqdn, "/login/index.php", extra=("-c", jar, "-b", jar))
        token = re.search(r'name="logintoken" value="([^"]+)"', page)
        conf = "".join(f'data-urlencode = "{k}={v}"\n' for k, v in (
            ("username", "admin"), ("logintoken", token.group(1) if token else ""),
            ("password", vault["moodle_admin"].reveal())))
        code, head, _ = _curl(address, fqdn, "/login/index.php", conf, ("-c", jar, "-b", jar))
        found["moodle"] = "ok" if code in (302, 303) and "testsession" in head else f"HTTP {code}, no session"
    if school.has("nextcloud"):
        fqdn = f"{SERVICE_HOSTS['nextcloud']}.{school.domain}"
        conf = f'user = "admin:{vault["nextcloud_admin"].reveal()}"\nrequest = "PROPFIND"\n'
        code, _, _ = _curl(address, fqdn, "/remote.php/dav/files/admin/", conf, ("-H", "Depth: 0"))
        found["nextcloud"] = "ok" if code == 207 else f"WebDAV HTTP {code}"
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
        with tempfile.TemporaryDirectory() as work:
            result["logins"] = logins(school, lab.host(name).address, store, work)
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
