"""Upgrades that keep the data, and the way back, shared by the release apps (Moodle, Nextcloud,
Etherpad). Shell only, built here and run by the apps' steps (and by `schoolctl rollback`).

- A guard (`guard_step`, a pre-step of the app's layer) refuses, before any change to the app, a
  configured version lower than the running one (every app) and, for Nextcloud, one that skips a
  major version. The running version is the name of the release folder `current` points at
  (/srv/<app>/releases/<version>). The guard's apply only explains and exits 1 (it changes
  nothing), so the runner may also run it for `plan` and before a deploy touches the server
  (cli/runner.py: steps whose name starts with GUARD).
- An upgrade (the app's step that switches `current` to a new release while an installed one is
  in use) first writes a rollback point, /var/lib/schoolctl/rollback/<app>: the previous release
  folder, the versions, and the database dump taken just before (deploy.database.backup_command).
  When the upgrade fails, `rollback_function` puts it all back: `current` to the previous release
  (whose folder still holds its own configuration), the dump restored into a fresh database
  (`pg_restore --clean --create`: tables the failed upgrade added go too), the app's services
  restarted and its maintenance mode off; then it prints MARKER (`schoolctl-rolled-back: <app>
  <version>`) as its last line, which the runner turns into `failed (rolled back to <version>)`.
- A rollback point is used once: after a rollback it is kept as `<app>.used-<time>`.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from schoolctl.deploy.database import BACKUPS, backup_command
from schoolctl.deploy.render import plain_name
from schoolctl.deploy.state import Step

POINTS = "/var/lib/schoolctl/rollback"
# held by every upgrade and by the backup program (templates/backup/schoolctl-backup.py, which reads it
# from its config.json: deploy/backup.py config) for as long as an app may be in maintenance mode, so
# neither ends the other's maintenance nor archives a half-upgrade
MAINTENANCE_LOCK = "/run/lock/schoolctl-maintenance.lock"
MAINTENANCE_WAIT = 1800
MARKER = "schoolctl-rolled-back:"
GUARD = "upgrade path: "
MARKER_LINE = re.compile(r"^" + re.escape(MARKER) + r" ([a-z]+) (\S+)\s*$", re.M)

# exit codes of the rollback function (the verb maps 3 and 4 to its exit 2)
NO_POINT, NO_DUMP, FAILED = 3, 4, 1


@dataclass(frozen=True)
class App:
    """What the shared upgrade shell needs to know about one app."""

    name: str                 # nextcloud (also its database's name)
    title: str                # Nextcloud
    stop: str = ""            # shell: quiesce the running release before the switch back
    start: str = ""           # shell: after the database is restored (services, caches, maintenance off)
    relative_link: bool = False   # Moodle's `current` is `releases/<v>` (relative), the others absolute

    @property
    def home(self) -> str:
        return f"/srv/{self.name}"

    @property
    def current(self) -> str:
        return f"{self.home}/current"

    @property
    def point(self) -> str:
        return f"{POINTS}/{self.name}"

    @property
    def database(self) -> str:
        return plain_name(self.name, "a database name")


def running_version(app: App) -> str:
    """Shell: `run` = the version `current` points at (the release folder's name), or empty."""
    return f"run=$(readlink {app.current} 2>/dev/null || true); run=${{run##*/}}"


def _reason(app: App, target: str, school: str, one_major: bool) -> str:
    """Shell function `reason`: prints why `target` is refused, nothing when it is fine."""
    want = shlex.quote(plain_name(target, f"{app.name} version"))
    back = f"schoolctl rollback {plain_name(school, 'school id')} {app.name}"
    lines = [
        "reason() {",
        f"  {running_version(app)}; want={want}",
        '  [ -n "$run" ] && [ "$run" != "$want" ] || return 0',
        "  echo \"$run\" | grep -Eq '^[0-9]+[.][0-9]+' || return 0",
        '  if [ "$(printf \'%s\\n%s\\n\' "$run" "$want" | sort -V | head -n1)" = "$want" ]; then',
        f'    echo "{app.title} $run -> $want is a downgrade; refusing it (the last upgrade can be undone with '
        f'{back}, while its rollback point and dump last)"; return 0',
        "  fi",
    ]
    if one_major:
        lines += [
            '  rm=${run%%.*}; wm=${want%%.*}',
            '  if [ $((wm - rm)) -gt 1 ]; then',
            "    skipped=$(seq -s ', ' $((rm + 1)) $((wm - 1))); path=$(seq -s ' -> ' \"$rm\" \"$wm\")",
            f'    echo "{app.title} $run -> $want skips $skipped; upgrade to $((rm + 1)).x first '
            f'({app.title} upgrades one major version at a time: $path)"',
            "  fi",
        ]
    lines.append("}")
    return "\n".join(lines)


def guard_step(app: App, target: str, school: str, one_major: bool = False) -> Step:
    """A pre-step refusing a downgrade (and, with `one_major`, a skipped major version) before any
    change to the app; its apply only prints the reason (stderr) and exits 1."""
    reason = _reason(app, target, school, one_major)
    return Step(f"{GUARD}{app.name} {target} (no downgrade{', no skipped major' if one_major else ''})",
                check=f'{reason}\n[ -z "$(reason)" ]',
                apply=f'{reason}\nr=$(reason)\necho "$r" >&2\nexit 1')


def is_guard(step: Step) -> bool:
    return step.name.startswith(GUARD)


def maintenance_lock(app: App, fail: str = "exit 1") -> str:
    """Shell: take the maintenance lock for the rest of the script (fd 9), waiting for a running backup
    up to MAINTENANCE_WAIT seconds, else `fail` with nothing changed."""
    return (f"exec 9>{MAINTENANCE_LOCK}\n"
            f"if ! flock -w {MAINTENANCE_WAIT} 9; then echo \"{app.name}: a backup of this server has held "
            f"{MAINTENANCE_LOCK} for {MAINTENANCE_WAIT // 60} minutes; nothing changed, try again later\" >&2; "
            f"{fail}; fi")


def save_point(app: App, target: str) -> str:
    """Shell: write the rollback point. Expects `$old` (what `current` pointed at) and `$f` (the dump,
    from backup_command)."""
    part = f"{app.point}.part"
    return (f"install -d -m 0700 {POINTS} && (umask 077 && "
            f"printf 'app=%s\\nfrom=%s\\nto=%s\\nprevious=%s\\ndump=%s\\nat=%s\\n' {app.name} \"${{old##*/}}\" "
            f"{shlex.quote(target)} \"$old\" \"$f\" \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\" > {part}) && "
            f"mv {part} {app.point}")


def dump(app: App) -> str:
    """Shell: the pre-upgrade dump; leaves its path in `$f` (deploy.database.backup_command)."""
    return backup_command(app.database)


def restore_database(app: App) -> str:
    """Shell: the database replaced by the dump in `$dump` (a fresh database from the dump's own
    definition: owner, encoding, grants), no session left on the old one."""
    db = app.database
    psql = "runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -d postgres"
    return (f"{psql} -c \"ALTER DATABASE {db} ALLOW_CONNECTIONS false\" "
            f"-c \"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}' "
            f"AND pid <> pg_backend_pid()\" >/dev/null\n"
            # a root-only dump: read by root, handed to pg_restore on stdin (a regular file: seekable)
            f"if ! runuser -u postgres -- pg_restore --clean --if-exists --create --exit-on-error --no-password "
            f"-d postgres < \"$dump\"; then\n"
            f"  {psql} -c \"ALTER DATABASE {db} ALLOW_CONNECTIONS true\" >/dev/null 2>&1 || true\n"
            f"  echo \"{app.name}: restoring the database from $dump failed\" >&2; return {FAILED}\n"
            "fi")


def rollback_function(app: App) -> str:
    """Shell defining `schoolctl_rollback_point` (reads and checks the rollback point: sets `prev`,
    `prevdir`, `from`, `to`, `dump`, `at`) and `schoolctl_rollback` (back to the point's release and
    database). Both return NO_POINT (no point, its release folder is gone, or the app no longer runs
    the point's version), NO_DUMP (its dump is gone), FAILED (a step of the way back failed), or 0
    (done: the last line printed is MARKER)."""
    p = app.point
    prevdir = f'{app.home}/$prev' if app.relative_link else '$prev'
    return "\n".join([
        "schoolctl_rollback_point() {",
        f"  if [ ! -f {p} ]; then echo \"{app.name}: no rollback point ({p}): no upgrade of {app.title} by "
        f"schoolctl here that is not rolled back already\" >&2; return {NO_POINT}; fi",
        f"  prev=$(sed -n 's/^previous=//p' {p}); from=$(sed -n 's/^from=//p' {p}); "
        f"to=$(sed -n 's/^to=//p' {p}); dump=$(sed -n 's/^dump=//p' {p}); at=$(sed -n 's/^at=//p' {p})",
        f"  prevdir={prevdir}",
        f"  if [ -z \"$prev\" ] || [ ! -d \"$prevdir\" ]; then echo \"{app.name}: the previous release "
        f"'$prevdir' is gone; nothing to go back to\" >&2; return {NO_POINT}; fi",
        f"  {running_version(app)}",
        f"  if [ \"$run\" != \"$to\" ]; then echo \"{app.name}: runs '$run', but the rollback point is for the "
        f"upgrade $from -> $to; not rolling back\" >&2; return {NO_POINT}; fi",
        f"  case \"$dump\" in {BACKUPS}/{app.database}-*.dump) ;; *) dump=; esac",
        f"  if [ -z \"$dump\" ] || [ ! -s \"$dump\" ]; then echo \"{app.name}: the dump of before the upgrade "
        f"to $to ('$dump') is gone; not rolling back\" >&2; return {NO_DUMP}; fi",
        "}",
        "schoolctl_rollback() {",
        "  schoolctl_rollback_point || return $?",
        f"  echo \"{app.name}: rolling back $to -> $from (release $prevdir, database from $dump, taken $at)\" >&2",
        *(f"  {line}" for line in (app.stop.splitlines() if app.stop else [])),
        f"  ln -sfn \"$prev\" {app.current}.new && mv -T {app.current}.new {app.current} || return {FAILED}",
        *(f"  {line}" for line in restore_database(app).splitlines()),
        *(f"  {line}" for line in (app.start.splitlines() if app.start else [])),
        f"  mv {p} {p}.used-$(date -u +%Y%m%dT%H%M%SZ)",
        f"  echo \"{app.name}: restored release $from ($prevdir) and the database as it was at $at\" >&2",
        f"  echo \"{MARKER} {app.name} $from\" >&2",
        "}",
    ])


RC = "schoolctl-rc="


def describe_command(app: App) -> str:
    """Shell (root): the rollback point as `key=value` lines (from, to, previous, dump, at) and the
    check's result as the last line, `schoolctl-rc=<code>` (always exit 0: the code is in the text)."""
    return (f"set +e\n{rollback_function(app)}\nschoolctl_rollback_point; rc=$?\n"
            'if [ "$rc" = 0 ]; then printf \'from=%s\\nto=%s\\nprevious=%s\\ndump=%s\\nat=%s\\n\' '
            '"$from" "$to" "$prevdir" "$dump" "$at"; fi\n'
            f'echo "{RC}$rc"; exit 0')


def rollback_command(app: App) -> str:
    """Shell (root) for `schoolctl rollback`: the rollback, run; the result's code as the last line of
    stdout (`schoolctl-rc=<code>`), always exit 0."""
    busy = f'echo "{RC}{FAILED}"; exit 0'
    return (f"set +e\n{rollback_function(app)}\n{maintenance_lock(app, busy)}\n"
            f"schoolctl_rollback; rc=$?\necho \"{RC}$rc\"; exit 0")


def result_code(stdout: str) -> int | None:
    """The code of a describe/rollback command's last `schoolctl-rc=` line, or None."""
    codes = [line[len(RC):].strip() for line in (stdout or "").splitlines() if line.startswith(RC)]
    return int(codes[-1]) if codes and codes[-1].isdigit() else None


def on_failure(app: App, what: str) -> str:
    """Shell: after `what` failed in an upgrade: roll back and exit 1 (the marker the last line);
    a rollback that fails too says so and exits 1."""
    return (f"echo \"{app.name}: {what} failed; rolling back\" >&2\n"
            f"if schoolctl_rollback; then exit 1; fi\n"
            f"echo \"{app.name}: THE ROLLBACK FAILED TOO; see above, and the dump in {BACKUPS}\" >&2\nexit 1")


def rolled_back(text: str) -> tuple[str, str] | None:
    """(app, version) of the last MARKER line in a failed step's output, or None."""
    found = MARKER_LINE.findall(text or "")
    return found[-1] if found else None
