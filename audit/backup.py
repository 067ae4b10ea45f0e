"""Backup controls: the school's archives exist off the server, encrypted, fresh, within the
retention policy, and a restore of them was proven recently. The evidence comes from the server's
backup program itself (deploy/backup.py): its last results, and the repository as borg lists it now
over the school's own key (one borg call, prefetched with the other evidence)."""

from __future__ import annotations

import datetime
import functools
import json
import re
from collections.abc import Callable
from typing import Any

from schoolctl.audit.catalogue import Context, Outcome, control, evidence, failed, verdict

STATE = "/var/lib/schoolctl/backup"         # deploy/backup.py: STATE
PROGRAM = "/usr/local/sbin/schoolctl-backup"  # deploy/backup.py: SCRIPT
CONFIG = "/etc/schoolctl/backup/config.json"  # deploy/backup.py: CONFIG
ENCRYPTED = ("repokey-blake2", "keyfile-blake2", "repokey", "keyfile")  # borg's modes that encrypt

# One JSON object: the state files, the repository's URL, the server's own addresses, the timer and
# the repository listed by borg (through the school's append-only key).
READ = r'''
import json, os, socket, subprocess
out = {}
for name in ("last", "last-success", "drill", "drill-success"):
    try:
        out[name] = json.load(open("%(state)s/" + name + ".json"))
    except (OSError, ValueError):
        out[name] = None
try:
    out["repository"] = json.load(open("%(config)s"))["repository"]
except (OSError, ValueError, KeyError):
    out["repository"] = None
addr = subprocess.run(["ip", "-j", "addr"], capture_output=True, text=True).stdout
out["addresses"] = sorted({a["local"] for i in json.loads(addr or "[]") for a in i.get("addr_info", [])})
out["timer"] = [subprocess.run(["systemctl", v, "schoolctl-backup.timer"], capture_output=True,
                               text=True).stdout.strip() for v in ("is-enabled", "is-active")]
host = (out["repository"] or "").split("@", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0].strip("[]")
try:
    out["repository_addresses"] = sorted({i[4][0] for i in socket.getaddrinfo(host, 22)}) if host else []
except OSError as e:
    out["repository_addresses"] = []
    out["resolve_error"] = str(e)
if os.path.exists("%(program)s"):
    p = subprocess.run(["%(program)s", "list"], capture_output=True, text=True, timeout=300)
    try:
        out["list"] = json.loads(p.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        out["list"] = {"status": "failed", "error": (p.stderr or p.stdout).strip()[-400:]}
else:
    out["list"] = None
print(json.dumps(out))
'''
STATE_CMD = evidence("python3 - <<'SCHOOLCTL_PY'\n" + READ % {"state": STATE, "config": CONFIG, "program": PROGRAM}
                     + "SCHOOLCTL_PY")
LEGAL_BACKUP = ["32"]


def _state(ctx: Context) -> dict[str, Any]:
    res = ctx.run(STATE_CMD)
    try:
        return json.loads(res.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": (res.stderr or res.stdout).strip()[-300:] or f"exit {res.rc}"}


def _age_hours(stamp: str | None, now: datetime.datetime) -> float | None:
    if not stamp:
        return None
    try:
        t = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    except ValueError:
        return None
    return (now - t).total_seconds() / 3600


# the UTC stamp in a name as the backup program makes them (deploy/backup.py: ARCHIVE), checkpoints too
_STAMP = re.compile(r"-(\d{4}-\d\d-\d\dT\d{6})Z(?:\.checkpoint(?:\.\d+)?)?$")


def archive_time(archive: dict[str, Any]) -> datetime.datetime | None:
    """When an archive was taken, in UTC: the stamp of its name (the program names archives by their
    UTC time), else a listed time that carries its zone ("Z" or an offset). borg itself prints the
    server's local time without its offset: such a time is never read as UTC."""
    m = _STAMP.search(archive.get("name") or "")
    if m:
        return datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H%M%S").replace(tzinfo=datetime.UTC)
    try:
        t = datetime.datetime.fromisoformat((archive.get("time") or "").replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo is not None else None


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _needs_backup_host(check: Callable[[Context], Outcome]) -> Callable[[Context], Outcome]:
    """`check`, failing first when the fleet names no backup host."""
    @functools.wraps(check)
    def guarded(ctx: Context) -> Outcome:
        if ctx.school.backup is None:
            return failed("fleet.yaml names no backup host: the school's data exists only on its server",
                          "a `backup:` host in fleet.yaml (README, Backups)")
        return check(ctx)
    return guarded


def _listing_failed(ctx: Context, wanted: str, expected: str) -> Outcome | None:
    """A failure when the state has no repository listing with `wanted` in it."""
    listed = _state(ctx).get("list") or {}
    if listed.get("status") == "failed" or wanted not in listed:
        why = listed.get("error") or _state(ctx).get("error") or "no program"
        return failed(f"the repository could not be listed: {why}", expected)
    return None


def _always(school: Any) -> bool:
    return True


@control("BACKUP-RECENT", "backup", "The school's last good archive is recent",
         "A server holds a school year of pupils' and teachers' work; without a recent archive off the server, "
         "one lost disk or one ransomware run loses it. The nightly timer runs, and the last archive that "
         "reached the backup host is younger than the fleet allows (backup.max_age_hours).", LEGAL_BACKUP, "high",
         applies=_always,
         titles={"ca": "L'última còpia bona de l'escola és recent",
                 "es": "La última copia buena de la escuela es reciente"})
@_needs_backup_host
def recent(ctx: Context) -> Outcome:
    limit = ctx.school.backup.max_age_hours
    s = _state(ctx)
    expected = f"an archive younger than {limit} h, the nightly timer enabled and active"
    if "error" in s:
        return failed(f"the backup state could not be read: {s['error']}", expected)
    good, last = s.get("last-success") or {}, s.get("last") or {}
    age = _age_hours(good.get("finished"), _now())
    why = f"; the last attempt failed: {last.get('error')}" if last.get("status") == "failed" else ""
    timer = s.get("timer") or ["?", "?"]
    if age is None:
        return failed(f"no archive was ever taken{why}", expected)
    shown = f"last good archive {good.get('archive')} {age:.1f} h ago; timer {timer[0]}/{timer[1]}{why}"
    return verdict(age <= limit and timer == ["enabled", "active"], shown, expected)


@control("BACKUP-ENCRYPTED", "backup", "The archives are encrypted",
         "Archives hold every pupil's personal data; on a backup host, a stolen disk or an offsite copy must "
         "reveal nothing. borg's repository reports its encryption mode (repokey-blake2: authenticated "
         "encryption, the key in the school's vault).", LEGAL_BACKUP, "high", applies=_always,
         titles={"ca": "Les còpies estan xifrades", "es": "Las copias están cifradas"})
@_needs_backup_host
def encrypted(ctx: Context) -> Outcome:
    listed = _state(ctx).get("list") or {}
    expected = f"encryption {' or '.join(ENCRYPTED)}"
    if broken := _listing_failed(ctx, "encryption", expected):
        return broken
    mode = listed["encryption"] or "none"
    return verdict(mode in ENCRYPTED, f"{listed.get('repository')}: encryption {mode}", expected)


@control("BACKUP-OFF-SERVER", "backup", "The archives are kept off the school server",
         "A copy on the same server dies with it (disk, fire, ransomware): the repository must be on another "
         "host.", LEGAL_BACKUP, "high", applies=_always,
         titles={"ca": "Les còpies es guarden fora del servidor de l'escola",
                 "es": "Las copias se guardan fuera del servidor de la escuela"})
@_needs_backup_host
def off_server(ctx: Context) -> Outcome:
    s = _state(ctx)
    repo, own = s.get("repository"), set(s.get("addresses") or [])
    expected = "a repository on another host than the school server"
    if not repo:
        return failed("the server's backup program has no repository configured", expected)
    theirs = set(s.get("repository_addresses") or [])
    local = {a for a in theirs if a in own or a.startswith("127.") or a == "::1"}
    if not theirs:
        return failed(f"{repo}: its host does not resolve ({s.get('resolve_error', '?')})", expected)
    return verdict(not local, f"{repo} at {', '.join(sorted(theirs))}" +
                   (f": the school server's own address {', '.join(sorted(local))}" if local else ""), expected)


@control("BACKUP-DRILL-RECENT", "backup", "A restore of the school's archive was proven recently",
         "A backup nobody restored is a hope: `schoolctl backup verify` restores the latest archive onto a "
         "scratch server and checks logins and content there. Its last success must be younger than "
         "backup.drill_max_age_days.", LEGAL_BACKUP, "medium", applies=_always,
         titles={"ca": "S'ha provat fa poc que la còpia de l'escola es pot restaurar",
                 "es": "Se ha probado hace poco que la copia de la escuela se puede restaurar"})
@_needs_backup_host
def drill_recent(ctx: Context) -> Outcome:
    days = ctx.school.backup.drill_max_age_days
    s = _state(ctx)
    good, last = s.get("drill-success") or {}, s.get("drill") or {}
    expected = f"a passed restore drill in the last {days} days"
    age = _age_hours(good.get("finished"), _now())
    why = f"; the last drill failed: {last.get('error')}" if last.get("status") == "failed" else ""
    if age is None:
        return failed(f"no restore drill has passed{why}", expected)
    return verdict(age <= days * 24, f"last passed drill of {good.get('archive')} {age / 24:.1f} days ago{why}",
                   expected)


@control("BACKUP-RETENTION", "backup", "The archives kept do not exceed the retention policy",
         "Backups are not rewritten when a leaver is erased (GDPR Art. 17 in practice): their data stays in older "
         "archives until those expire, so the number and age of archives kept is the bound. The backup host "
         "prunes to backup.retention (schoolctl backup prune).", ["5(1)(e)", "32"], "medium", applies=_always,
         titles={"ca": "Les còpies guardades no superen la política de conservació",
                 "es": "Las copias guardadas no superan la política de conservación"})
@_needs_backup_host
def retention(ctx: Context) -> Outcome:
    r = ctx.school.backup.retention
    listed = _state(ctx).get("list") or {}
    most = r.daily + r.weekly + r.monthly
    expected = (f"at most {most} archives (daily {r.daily}, weekly {r.weekly}, monthly {r.monthly}), none older "
                f"than {r.span_days} days")
    if broken := _listing_failed(ctx, "archives", expected):
        return broken
    found = [a for a in listed["archives"] if ".checkpoint" not in a["name"]]
    now = _now()
    times = [archive_time(a) for a in found]
    ages = [(now - t).total_seconds() / 3600 for t in times if t is not None]
    oldest = max(ages, default=0) / 24
    unknown = sum(t is None for t in times)
    shown = f"{len(found)} archives, the oldest {oldest:.1f} days old (UTC)" + (
        f"; {unknown} without a known time" if unknown else "")
    return verdict(len(found) <= most and oldest <= r.span_days + 1 and not unknown, shown, expected)
