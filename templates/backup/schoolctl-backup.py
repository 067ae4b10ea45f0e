#!/usr/bin/python3
"""schoolctl-backup: this school's archives on the city's backup host, with BorgBackup.

Installed by schoolctl (deploy/backup.py) as /usr/local/sbin/schoolctl-backup; run by
schoolctl-backup.timer every night and by `schoolctl backup`, `backup list`, `restore` and
`backup verify` over SSH. Everything it needs is in /etc/schoolctl/backup/config.json (no value of
it is ever pasted into this program's text). Subcommands, each printing one JSON object:

  create             one archive now: database dumps, the directory, the apps' files and configs
  list               the archives, with the manifest each carries as its comment
  check ARCHIVE      read the whole archive back (every chunk decrypted and authenticated, the dumps
                     against the manifest)
  restore ARCHIVE    put an archive's data back on this server (after a deploy of the school's config),
                     after the same check as `check`: a damaged archive is refused before anything changes
  counts             what the manifest counts, read live (the drill compares the two)
  record-drill       store the drill result given on stdin (the audit reads it)
  recover            after a run that was killed: Nextcloud's maintenance mode off, if that run set it

Two locks: LOCK (one backup at a time) and the maintenance lock (config.json's `maintenance_lock`,
deploy/upgrade.py's MAINTENANCE_LOCK), which the apps' upgrade steps take too, so a backup never
archives a half-upgraded app and never switches an upgrade's maintenance mode off. A run that is
killed (SIGTERM, SIGHUP, SIGINT) still switches maintenance off; one killed harder leaves
MAINTENANCE_MARK behind, and the next run (or `recover`, the service's ExecStopPost) finishes that
job. borg itself resumes from its checkpoints.

Times are UTC: archive names carry their UTC stamp (<school>-YYYY-MM-DDTHHMMSSZ), and `list` gives
each archive's time from it (borg prints the server's local time).
"""

from __future__ import annotations

import datetime
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

CONFIG = Path("/etc/schoolctl/backup/config.json")
STAGING_NAME = "staging"
LOCK = "/run/lock/schoolctl-backup.lock"
MAINTENANCE_WAIT = 3600       # seconds a backup waits for an upgrade to finish
MAINTENANCE_MARK = "maintenance-by-backup"


class Failure(Exception):
    """An expected failure: its message is the reason recorded and shown."""


class Refused(Failure):
    """A failure before anything on this server was changed (its answer says `"changed": false`)."""


def load_config() -> dict:
    return json.loads(CONFIG.read_text())


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def run(argv: list[str], *, env: dict | None = None, cwd: str | None = None, infile: object = None,
        out: object = subprocess.PIPE, timeout: int = 6 * 3600) -> str:
    """Run a command (stdin from `infile`, an open file: root's files reach `runuser` commands so);
    Failure with its last error lines when it fails."""
    proc = subprocess.run(argv, env=env, cwd=cwd, stdin=infile or subprocess.DEVNULL, stdout=out,
                          stderr=subprocess.PIPE, timeout=timeout)
    if proc.returncode not in (0,):
        lines = reason(proc.stderr.decode(errors="replace"))
        raise Failure(f"{os.path.basename(argv[0])} {argv[1] if len(argv) > 1 else ''} failed "
                      f"(exit {proc.returncode}): " + " | ".join(lines))
    return proc.stdout.decode(errors="replace") if isinstance(proc.stdout, bytes) else ""


# what borg prints after an error with a traceback (its sysinfo): no reason in it
_SYSINFO = ("Platform:", "Linux:", "Borg:", "PID:", "sys.argv:", "SSH_ORIGINAL_COMMAND:")


def reason(stderr: str) -> list[str]:
    """The last lines of a command's error output that say why: borg's tracebacks and the platform
    block it prints after them left out (its own message, e.g. "Data integrity error: ...", stays)."""
    kept, traceback = [], False
    for line in stderr.strip().splitlines():
        line = line.removeprefix("Remote: ")  # the backup host's borg serve, relayed
        if line.startswith("Traceback (most recent call last):"):
            traceback = True
        elif traceback and (not line.strip() or line[:1].isspace()):
            continue
        elif traceback:
            traceback = False  # the exception's own line ends the traceback: borg logged its message before
        elif line.strip() and not line.startswith(_SYSINFO):
            kept.append(line.strip())
    return kept[-6:] or stderr.strip().splitlines()[-6:]


def borg_env(cfg: dict) -> dict:
    """borg's settings: the repository, the school's own SSH key and known host, the passphrase file."""
    ssh = (f"ssh -i {cfg['ssh_key']} -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=yes "
           f"-o UserKnownHostsFile={cfg['known_hosts']} -o ConnectTimeout=20 -o ServerAliveInterval=30")
    return {**os.environ, "BORG_REPO": cfg["repository"], "BORG_RSH": ssh,
            "BORG_PASSCOMMAND": f"cat {cfg['passphrase_file']}", "BORG_BASE_DIR": cfg["borg_base"],
            "BORG_HOSTNAME_IS_UNIQUE": "yes", "BORG_RELOCATED_REPO_ACCESS_IS_OK": "no",
            "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "no", "LANG": "C.UTF-8"}


def borg(cfg: dict, *args: str, **kw: object) -> str:
    return run(["borg", *args], env=borg_env(cfg), **kw)  # type: ignore[arg-type]


def psql(db: str, sql: str) -> str:
    return run(["runuser", "-u", "postgres", "--", "psql", "-XAtq", "-v", "ON_ERROR_STOP=1", "-d", db,
                "-c", sql]).strip()


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def running_versions(cfg: dict) -> dict:
    """The release each app runs: the folder its `current` link points at."""
    found = {}
    for app, link in cfg["current"].items():
        target = os.path.realpath(link)
        if os.path.isdir(target):
            found[app] = os.path.basename(target)
    return found


def counts(cfg: dict) -> dict:
    """The manifest's counts, read live: courses, files, pads, people."""
    found: dict = {}
    for name, (db, sql) in cfg["count_queries"].items():
        try:
            found[name] = int(psql(db, sql) or 0)
        except (Failure, ValueError):
            found[name] = None
    if cfg.get("ldap_base"):
        ldif = run(["slapcat", "-b", cfg["ldap_base"]])
        found["directory_people"] = ldif.count("\nobjectClass: inetOrgPerson")
    return found


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".part")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


# --- create ------------------------------------------------------------------------------------

def occ(cfg: dict, *args: str) -> str:
    nc = cfg["nextcloud"]
    return run(["runuser", "-u", nc["user"], "--", nc["php"], "occ", *args], cwd=nc["current"])


def _nextcloud(cfg: dict) -> bool:
    return bool(cfg.get("nextcloud")) and os.path.exists(os.path.join(cfg["nextcloud"]["current"], "occ"))


def maintenance_on(cfg: dict) -> bool:
    """Nextcloud in maintenance mode (True when this run owns it: it switched it on, or an earlier run
    that was killed did and left its mark)."""
    if not _nextcloud(cfg):
        return False
    mark = Path(cfg["state"]) / MAINTENANCE_MARK
    if "enabled" in occ(cfg, "maintenance:mode"):
        return mark.exists()  # else someone else has it on (an admin): leave it to them
    mark.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    mark.write_text(now() + "\n")
    occ(cfg, "maintenance:mode", "--on")
    return True


def maintenance_off(cfg: dict) -> None:
    occ(cfg, "maintenance:mode", "--off")
    (Path(cfg["state"]) / MAINTENANCE_MARK).unlink(missing_ok=True)


def cmd_recover(cfg: dict) -> dict:
    """Maintenance off when a killed run left its mark and no backup runs now."""
    mark = Path(cfg["state"]) / MAINTENANCE_MARK
    if not mark.exists():
        return {"status": "ok", "recovered": False}
    with open(LOCK, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return {"status": "ok", "recovered": False, "note": "a backup is running"}
        if _nextcloud(cfg):
            maintenance_off(cfg)
        else:
            mark.unlink(missing_ok=True)
    return {"status": "ok", "recovered": True}


STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)


def _interrupted(signum: int, frame: object) -> None:
    """The first stop signal ends the run through its `finally`s; later ones may not cut them short."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    raise Failure(f"interrupted by signal {signal.Signals(signum).name}")


def _wait_for(path: str, seconds: int) -> IO[str]:
    """The exclusive lock of `path` (an open file holding it), waiting up to `seconds` for its holder."""
    f = open(path, "w")  # noqa: SIM115 (returned: the caller's `with` closes it)
    deadline = time.monotonic() + seconds
    while True:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return f
        except BlockingIOError:
            if time.monotonic() > deadline:
                f.close()
                raise Refused(f"an upgrade held the maintenance lock for over {seconds // 60} minutes") from None
            time.sleep(5)


def _maintenance_lock(cfg: dict) -> IO[str]:
    """The maintenance lock the apps' upgrades take too (its path from config.json: deploy/upgrade.py)."""
    return _wait_for(cfg["maintenance_lock"], MAINTENANCE_WAIT)


def stage(cfg: dict, staging: Path) -> dict:
    """Dumps, the directory, the apps' own configs and the manifest, into `staging` (root only)."""
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True, mode=0o700)
    dumps = {}
    for db in cfg["databases"]:
        target = staging / f"{db}.dump"
        with target.open("wb") as f:
            run(["runuser", "-u", "postgres", "--", "pg_dump", "--format=custom", db], out=f)
        dumps[target.name] = {"sha256": sha256(target), "bytes": target.stat().st_size}
    if cfg.get("ldap_base"):
        target = staging / "directory.ldif"
        with target.open("wb") as f:
            run(["slapcat", "-b", cfg["ldap_base"]], out=f)
        dumps[target.name] = {"sha256": sha256(target), "bytes": target.stat().st_size}
    for name, source in cfg["configs"].items():
        if os.path.exists(source):
            shutil.copy2(source, staging / name)
            dumps[name] = {"sha256": sha256(staging / name), "bytes": (staging / name).stat().st_size}
    manifest = {"school": cfg["school"], "created": now(), "schoolctl": cfg["schoolctl_version"],
                "versions": running_versions(cfg), "counts": counts(cfg), "files": dumps,
                "paths": cfg["paths"]}
    write_json(staging / "manifest.json", manifest)
    return manifest


def create(cfg: dict) -> dict:
    state = Path(cfg["state"])
    staging = state / STAGING_NAME
    name = f"{cfg['school']}-{time.strftime('%Y-%m-%dT%H%M%SZ', time.gmtime())}"
    started = time.time()
    held = _maintenance_lock(cfg)
    switched = False
    try:
        switched = maintenance_on(cfg)
        manifest = stage(cfg, staging)
        comment = json.dumps({k: manifest[k] for k in ("school", "schoolctl", "versions", "counts")},
                             sort_keys=True, separators=(",", ":"))
        args = ["create", "--json", "--compression", "zstd,3", "--one-file-system", "--exclude-caches",
                "--checkpoint-interval", "600", "--comment", comment.replace("{", "{{").replace("}", "}}")]
        for pattern in cfg["excludes"]:
            args += ["--exclude", pattern]
        paths = [str(staging)] + [p for p in cfg["paths"] if os.path.exists(p)]
        stats = json.loads(borg(cfg, *args, f"::{name}", *paths))
    finally:
        try:
            if switched:
                maintenance_off(cfg)
        finally:
            held.close()
    a = stats["archive"]["stats"]
    return {"status": "ok", "archive": name, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "finished": now(), "seconds": round(time.time() - started, 1),
            "original_size": a["original_size"], "compressed_size": a["compressed_size"],
            "deduplicated_size": a["deduplicated_size"], "files": a["nfiles"],
            "encryption": stats.get("encryption", {}).get("mode", ""), "repository": cfg["repository"],
            "versions": manifest["versions"], "counts": manifest["counts"]}


def cmd_create(cfg: dict) -> dict:
    state = Path(cfg["state"])
    with open(LOCK, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Failure("another backup of this server is running") from None
        try:
            result = create(cfg)
        except (Failure, OSError, subprocess.SubprocessError, ValueError, KeyError) as e:
            result = {"status": "failed", "finished": now(), "error": str(e)[-800:],
                      "repository": cfg["repository"]}
    write_json(state / "last.json", result)
    if result["status"] == "ok":
        write_json(state / "last-success.json", result)
    return result


# --- list, check -------------------------------------------------------------------------------

STAMP = re.compile(r"-(\d{4})-(\d\d)-(\d\d)T(\d\d)(\d\d)(\d\d)Z(?:\.checkpoint(?:\.\d+)?)?$")


def archive_time(name: str, start: str | None) -> str | None:
    """An archive's time in UTC (YYYY-MM-DDTHH:MM:SSZ): the stamp of its name, which `create` takes in
    UTC; else borg's start time, read as this server's local time unless it carries its offset."""
    m = STAMP.search(name)
    if m:
        y, mo, d, h, mi, s = m.groups()
        return f"{y}-{mo}-{d}T{h}:{mi}:{s}Z"
    if not start:
        return None
    try:
        t = datetime.datetime.fromisoformat(start)
    except ValueError:
        return None
    return t.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")  # naive: local time


def cmd_list(cfg: dict) -> dict:
    info = json.loads(borg(cfg, "info", "--json", "--glob-archives", f"{cfg['school']}-*"))
    archives = []
    for a in info.get("archives", []):
        try:
            meta = json.loads(a.get("comment") or "{}")
        except ValueError:
            meta = {}
        s = a.get("stats", {})
        archives.append({"name": a["name"], "time": archive_time(a["name"], a.get("start")),
                         "original_size": s.get("original_size"),
                         "deduplicated_size": s.get("deduplicated_size"), "files": s.get("nfiles"),
                         "versions": meta.get("versions", {}), "counts": meta.get("counts", {}),
                         "schoolctl": meta.get("schoolctl")})
    archives.sort(key=lambda a: a["time"] or "")
    return {"archives": archives, "encryption": info.get("encryption", {}).get("mode", ""),
            "repository": cfg["repository"]}


def verify(cfg: dict, archive: str) -> dict:
    """Every chunk of `archive` read back and authenticated (`borg extract --dry-run`), its staging
    folder extracted and every dump checked against the manifest's sha256; the manifest (with
    `_folder`, where the staging folder now is). Refused (nothing on this server changed) otherwise."""
    try:
        borg(cfg, "extract", "--dry-run", f"::{archive}")
    except Failure as e:
        raise Refused(f"archive {archive} is damaged or unreadable: {e}; refusing it") from None
    try:
        return _extract_staging(cfg, archive)
    except Refused:
        raise
    except (Failure, OSError, ValueError, KeyError) as e:
        raise Refused(f"archive {archive}: its manifest and dumps cannot be read back: {e}; refusing it") from None


def cmd_check(cfg: dict, archive: str) -> dict:
    """The whole archive read back and checked (verify)."""
    started = time.time()
    manifest = verify(cfg, archive)
    return {"status": "ok", "archive": archive, "seconds": round(time.time() - started, 1),
            "versions": manifest["versions"], "counts": manifest["counts"]}


def _extract_staging(cfg: dict, archive: str) -> dict:
    """The archive's staging folder (dumps, manifest) into the restore folder, checked against the manifest."""
    into = Path(cfg["state"]) / "restore"
    if into.exists():
        shutil.rmtree(into)
    into.mkdir(parents=True, mode=0o700)
    staged = str(Path(cfg["state"]) / STAGING_NAME).lstrip("/")
    borg(cfg, "extract", f"::{archive}", staged, cwd=str(into))
    folder = into / staged
    manifest = json.loads((folder / "manifest.json").read_text())
    for name, meta in manifest["files"].items():
        path = folder / name
        if not path.is_file() or sha256(path) != meta["sha256"]:
            raise Refused(f"archive {archive} is damaged: {name} does not match its manifest; refusing it")
    if manifest.get("school") != cfg["school"]:
        raise Refused(f"archive {archive} belongs to {manifest.get('school')}, not {cfg['school']}")
    manifest["_folder"] = str(folder)
    return manifest


# --- restore -----------------------------------------------------------------------------------

def _version_key(v: str) -> tuple:
    return tuple(int(p) if p.isdigit() else 0 for p in v.split("."))


def cmd_restore(cfg: dict, archive: str) -> dict:
    with _maintenance_lock(cfg):
        return restore(cfg, archive)


def restore(cfg: dict, archive: str) -> dict:
    """The archive's data back on this server. The whole archive is verified first (as `check` does),
    and its releases compared with the running ones, before any unit is stopped or any data touched:
    a damaged archive is Refused with this server as it was."""
    started = time.time()
    try:
        manifest = verify(cfg, archive)
    except Refused as e:
        raise Refused(f"{e}; nothing on this server was changed") from None
    folder = Path(manifest.pop("_folder"))
    running = running_versions(cfg)
    newer = [f"{app} {v} (this server runs {running[app]})" for app, v in manifest["versions"].items()
             if app in running and _version_key(v) > _version_key(running[app])]
    if newer:
        raise Refused("the archive holds newer releases than this server runs: " + ", ".join(newer) +
                      "; set those versions in the school's file and deploy before restoring")
    aside = Path(cfg["state"]) / "replaced" / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    for unit in cfg["stop_units"]:
        subprocess.run(["systemctl", "stop", unit], stderr=subprocess.DEVNULL)
    try:
        for db in cfg["databases"]:
            dump = folder / f"{db}.dump"
            psql("postgres", f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}' "
                             "AND pid <> pg_backend_pid()")
            with dump.open("rb") as f:
                run(["runuser", "-u", "postgres", "--", "pg_restore", "--clean", "--if-exists", "--create",
                     "--exit-on-error", "-d", "postgres"], infile=f)
        if cfg.get("ldap_base") and (folder / "directory.ldif").exists():
            run(["systemctl", "stop", "slapd"])
            db_dir = Path(cfg["ldap_db"])
            (aside / "ldap").mkdir(parents=True, mode=0o700)
            for item in db_dir.iterdir():
                shutil.move(str(item), aside / "ldap" / item.name)
            run(["slapadd", "-q", "-b", cfg["ldap_base"], "-l", str(folder / "directory.ldif")])
            run(["chown", "-R", "openldap:openldap", str(db_dir)])
            run(["systemctl", "start", "slapd"])
        for path in cfg["data_paths"]:
            if os.path.exists(path):
                (aside / "files").mkdir(parents=True, exist_ok=True, mode=0o700)
                shutil.move(path, aside / "files" / path.strip("/").replace("/", "_"))
        wanted = [p.lstrip("/") for p in cfg["data_paths"]]
        borg(cfg, "extract", f"::{archive}", *wanted, cwd="/")
        for name, target in cfg["restore_configs"].items():
            if (folder / name).exists() and os.path.isdir(os.path.dirname(target)):
                shutil.copy2(folder / name, target)
                owner = cfg["config_owners"].get(name)
                if owner:
                    shutil.chown(target, *owner.split(":"))
    finally:
        for unit in cfg["start_units"]:
            subprocess.run(["systemctl", "start", unit], stderr=subprocess.DEVNULL)
    if "nextcloud-config.php" in cfg["restore_configs"]:
        occ(cfg, "maintenance:mode", "--off")  # the archive's config.php was taken in maintenance mode
    return {"status": "ok", "archive": archive, "seconds": round(time.time() - started, 1),
            "versions": manifest["versions"], "counts": manifest["counts"], "replaced": str(aside)}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("create", "list", "check", "restore", "counts", "record-drill", "recover"):
        print(__doc__, file=sys.stderr)
        return 2
    os.umask(0o077)
    for sig in STOP_SIGNALS:
        signal.signal(sig, _interrupted)
    cfg = load_config()
    try:
        if argv[0] == "create":
            result = cmd_create(cfg)
        elif argv[0] == "list":
            result = cmd_list(cfg)
        elif argv[0] == "recover":
            result = cmd_recover(cfg)
        elif argv[0] == "counts":
            result = {"counts": counts(cfg), "versions": running_versions(cfg)}
        elif argv[0] == "record-drill":
            result = json.loads(sys.stdin.read())
            write_json(Path(cfg["state"]) / "drill.json", result)
            if result.get("status") == "ok":
                write_json(Path(cfg["state"]) / "drill-success.json", result)
        elif len(argv) != 2:
            raise Failure(f"{argv[0]} needs the archive's name")
        elif argv[0] == "check":
            result = cmd_check(cfg, argv[1])
        else:
            result = cmd_restore(cfg, argv[1])
    except Failure as e:
        answer = {"status": "failed", "error": str(e)}
        if isinstance(e, Refused):
            answer["changed"] = False
        print(json.dumps(answer))
        return 1
    print(json.dumps(result, sort_keys=True))
    return 0 if result.get("status", "ok") == "ok" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
