"""`schoolctl restore`: a school's archive onto a server. The school's configuration is deployed
there first (the same vault, so the same keys and passwords) without the apps' installers
(Site.restoring: the archive's databases would replace what they install), then the backup program
puts the archive's data back (databases, directory, files, Nextcloud's own config.php), then a
second deploy converges (the apps' upgrade steps run when the archive's versions are older than the
configured ones). A server that already holds school data is refused unless forced; a restore that
stopped midway may simply be run again (its marker on the server says so)."""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable
from typing import Any

from schoolctl.cli.backup import host
from schoolctl.cli.backup.school import ProgramError, checked_archive, program
from schoolctl.config.model import EffectiveSchool, Server
from schoolctl.connect import Session
from schoolctl.deploy.backup import SCRIPT
from schoolctl.errors import BackupError
from schoolctl.secrets import SecretStore

MARKER = "/var/lib/schoolctl/restoring"
BUSY = "busy:"
HOLDS_DATA = (
    # a restore an interrupted run left going on the server (its SSH session gone): let it finish first
    f"if pgrep -f '{SCRIPT} [r]estore ' >/dev/null; then echo {BUSY}; exit 0; fi\n"
    f"if [ -s {MARKER} ]; then echo \"restoring $(cat {MARKER})\"; exit 0; fi\n"
    "d=''\n"
    "for p in /var/lib/moodle/data/filedir /var/lib/nextcloud/data; do "
    "[ -n \"$(ls -A $p 2>/dev/null)\" ] && d=\"$d $p\"; done\n"
    "if command -v psql >/dev/null; then for db in moodle nextcloud etherpad; do "
    "runuser -u postgres -- psql -XAtqc \"SELECT 1 FROM pg_database WHERE datname = '$db'\" 2>/dev/null "
    "| grep -qx 1 && d=\"$d database:$db\"; done; fi\n"
    "echo \"data:$d\""
)
Say = Callable[[str], None]


def latest_archive(school: EffectiveSchool, store: SecretStore, wanted: str | None) -> str:
    """`wanted` when the repository holds it, else the newest archive (BackupError when none)."""
    from schoolctl.deploy.sites import build_site

    site = build_site(school, store, readonly=True)
    secret = host.passphrase(school.id, store)
    with host.session(site) as s:
        names = [a["name"] for a in host.archives(site, s, secret)
                 if not a["name"].endswith(".checkpoint")]
    if wanted:
        if checked_archive(wanted) not in names:
            raise BackupError(f"{school.id} has no archive {wanted}",
                              f"its archives: {', '.join(names[-5:]) or 'none'}", usage=True)
        return wanted
    if not names:
        raise BackupError(f"{school.id} has no archive yet", f"take one with `schoolctl backup {school.id}`",
                          usage=True)
    return names[-1]


def _deploy(school: EffectiveSchool, store: SecretStore, what: str, restoring: bool = False) -> None:
    from schoolctl.cli.runner import run

    [result] = run([school], plan=False, store=store, restoring=restoring)
    if result.status == "failed":
        raise BackupError(f"{school.id}: the {what} deploy onto {school.server.address} failed: {result.error}")
    if result.skipped:
        raise BackupError(f"{school.id}: the {what} deploy left out {', '.join(result.skipped)}")


def restore(school: EffectiveSchool, target: Server, store: SecretStore, archive: str | None = None,
            force: bool = False, say: Say = lambda line: None) -> dict[str, Any]:
    """Restore `archive` (default: the newest) of `school` onto `target`; what was done, as data."""
    started = time.monotonic()
    moved = school.model_copy(update={"server": target})
    name = latest_archive(moved, store, archive)  # the school's own server may be gone
    with Session(target, f"{school.id} (restore target)") as s:
        ok, out, err = s.run(HOLDS_DATA, timeout=60)
        found = out.strip().splitlines()[-1] if out.strip() else ""
        if not ok:
            raise BackupError(f"cannot inspect {target.address}: {(err or out).strip()[-300:]}")
        if found == BUSY:
            raise BackupError(f"{target.address}: a restore is still putting data back there (an earlier, "
                              "interrupted run's)", "wait until it ends, then run the restore again")
        if found.startswith("data:") and found[5:].strip() and not force:
            raise BackupError(f"{target.address} already holds school data ({found[5:].strip()})",
                              "restore onto an empty server, or add --force to replace its data (what is there now "
                              "is moved aside under /var/lib/schoolctl/backup/replaced/)", usage=True)
        held = found[5:].strip() if found.startswith("data:") else ""  # forced over this data
        s.run(f"install -d -m 0700 /var/lib/schoolctl && echo {shlex.quote(f'{school.id} {name}')} > {MARKER}")
    say(f"{school.id}: restoring {name} onto {target.address}: deploying the school's configuration")
    _deploy(moved, store, "first", restoring=True)  # no app installers: the archive brings the data
    say(f"{school.id}: checking {name} whole, then putting the archive's data back")
    try:
        data = program(target, school.id, "restore", name)
    except ProgramError as e:
        if not e.unchanged:
            raise
        if held:  # the server's own data is untouched: no marker may let a later restore over it unforced
            with Session(target, f"{school.id} (restore target)") as s:
                s.run(f"rm -f {MARKER}")
        raise BackupError(e.message, f"{target.address}'s data was left as it was; a damaged archive stays "
                          f"so: pick another (`schoolctl backup list {school.id}`, then `--archive NAME`)") from None
    say(f"{school.id}: converging (the apps' upgrade steps, settings)")
    _deploy(moved, store, "second")
    live = program(target, school.id, "counts")
    with Session(target, f"{school.id} (restore target)") as s:
        s.run(f"rm -f {MARKER}")
    differ = {k: (v, live["counts"].get(k)) for k, v in data["counts"].items() if live["counts"].get(k) != v}
    return {"school": school.id, "archive": name, "server": target.address, "versions": data["versions"],
            "running": live["versions"], "counts": data["counts"], "restored_counts": live["counts"],
            "differ": differ, "replaced": data.get("replaced"), "seconds": round(time.monotonic() - started, 1)}
