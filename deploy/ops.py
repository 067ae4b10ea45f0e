"""Coarse pyinfra facts and operations over a whole round of desired state.

Each operation reads everything it manages with ONE fact (one remote command), then yields only
the commands that change something. Each records what it changes, in words, in `changes(host)`,
which `plan` shows and `deploy` summarises.
"""

from __future__ import annotations

import hashlib
import io
import shlex
import tarfile
from collections.abc import Iterator
from typing import Any

from pyinfra import host
from pyinfra.api import FactBase, FileUploadCommand, StringCommand, operation

from schoolctl.deploy.state import Directory, File, Service, Step

APT = ("DEBIAN_FRONTEND=noninteractive apt-get -q -y -o DPkg::Lock::Timeout=300 "
       "-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold")

PENDING = "/var/lib/schoolctl/pending"

_changes: dict[str, list[dict[str, Any]]] = {}
# fact outputs read ahead in one command (prefetch), per host: {fact command: stdout lines}
_ahead: dict[str, dict[str, list[str]]] = {}


def changes(name: str) -> list[dict[str, Any]]:
    """What the operations found to change on host `name` (kind, what, detail)."""
    return _changes.setdefault(name, [])


def reset_changes(name: str) -> None:
    _changes[name] = []


def _record(kind: str, what: str, detail: str = "", **extra: Any) -> None:
    changes(host.name).append({"kind": kind, "what": what, "detail": detail, **extra})


def _q(items: list[str]) -> str:
    return " ".join(shlex.quote(i) for i in items)


# --- facts -----------------------------------------------------------------------------------

class PathStates(FactBase):
    """type, mode, owner, group (and sha256 for regular files) of many paths in one command."""

    def command(self, paths: tuple[str, ...]) -> str:
        qp = _q(list(paths))
        return (f"stat -c '%F|%a|%U|%G|%n' -- {qp} 2>/dev/null; echo '--sha--'; "
                f"sha256sum -- {qp} 2>/dev/null; true")

    def process(self, output: list[str]) -> dict[str, dict[str, Any]]:
        states: dict[str, dict[str, Any]] = {}
        sha = False
        for line in output:
            if line == "--sha--":
                sha = True
            elif sha:
                digest, _, path = line.partition("  ")
                if path in states:
                    states[path]["sha256"] = digest
            else:
                kind, mode, owner, group, path = line.split("|", 4)
                states[path] = {"type": kind, "mode": int(mode, 8), "owner": owner, "group": group}
        return states

    def default(self) -> dict[str, dict[str, Any]]:
        return {}


class PackageStates(FactBase):
    """Which of the given Debian packages are installed; whether dpkg was interrupted."""

    def command(self, packages: tuple[str, ...]) -> str:
        return (f"dpkg-query -W -f='${{Package}}|${{db:Status-Abbrev}}\\n' -- {_q(list(packages))} 2>/dev/null; "
                "ls -A /var/lib/dpkg/updates 2>/dev/null | head -n1 | sed 's/^/!interrupted /'; true")

    def process(self, output: list[str]) -> dict[str, Any]:
        installed = {line.split("|")[0] for line in output if "|" in line and line.split("|")[1].startswith("ii")}
        return {"installed": installed, "interrupted": any(line.startswith("!interrupted") for line in output)}

    def default(self) -> dict[str, Any]:
        return {"installed": set(), "interrupted": False}


class UnitStates(FactBase):
    """Enabled and active state of many systemd units in one command."""

    def command(self, units: tuple[str, ...]) -> str:
        return (f"systemctl show --property=Id,UnitFileState,ActiveState,LoadState,ConditionResult,ConditionTimestamp "
                f"-- {_q(list(units))}; true")

    def process(self, output: list[str]) -> dict[str, dict[str, str]]:
        units: list[dict[str, str]] = [{}]
        for line in output:
            if not line.strip():
                units.append({})
                continue
            key, _, value = line.partition("=")
            units[-1][key] = value
        return {u["Id"]: u for u in units if "Id" in u}

    def default(self) -> dict[str, dict[str, str]]:
        return {}


class StepChecks(FactBase):
    """Run every step's check in one command; answer which ones pass."""

    def command(self, checks: tuple[str, ...]) -> str:
        lines = [f"if ( {c} ) >/dev/null 2>&1 </dev/null; then echo {i}:ok; else echo {i}:todo; fi"
                 for i, c in enumerate(checks)]
        return "\n".join(lines)

    def process(self, output: list[str]) -> list[bool]:
        return [line.split(":", 1)[1] == "ok" for line in output if ":" in line]

    def default(self) -> list[bool]:
        return []


# --- reading every fact of a deploy in one command ----------------------------------------------

def path_fact_paths(files: list[File], directories: list[Directory]) -> tuple[tuple[str, ...], str]:
    """The paths `paths()` reads (its own, and the marker of handlers left pending), and the marker."""
    all_paths = tuple(dict.fromkeys([d.path for d in directories] + [f.path for f in files]))
    marker = f"{PENDING}/{hashlib.sha256(' '.join(all_paths).encode()).hexdigest()[:16]}"
    return (*all_paths, marker), marker


def fact_commands(rounds: list[Any]) -> list[str]:
    """The fact command of every operation `school_deploy(rounds)` runs (deploy/school.py), in order."""
    found: list[str] = []
    for r in rounds:
        if r.pre_files:
            found.append(PathStates().command(paths=path_fact_paths(r.pre_files, [])[0]))
        if r.pre_steps:
            found.append(StepChecks().command(checks=tuple(s.check for s in r.pre_steps)))
        if r.packages:
            found.append(PackageStates().command(packages=tuple(r.packages)))
        if r.files or r.directories:
            found.append(PathStates().command(paths=path_fact_paths(r.files, r.directories)[0]))
        if r.services:
            found.append(UnitStates().command(units=tuple(unit_name(s.name) for s in r.services)))
        if r.steps:
            found.append(StepChecks().command(checks=tuple(s.check for s in r.steps)))
    return found


def guard_script(guards: list[Step]) -> str:
    """Shell: each guard's apply where its check fails, its reason on stdout (`exec 2>&1`: dash
    ignores a `2>&1` on this subshell for a nested function's output)."""
    return "\n".join(f"( exec 2>&1\n{guarded(g)}\n) </dev/null || true" for g in guards)


def prefetch_script(before: str, commands: list[str], token: str) -> str:
    """One shell script: `before` (its output first), then each fact command with its output and
    exit status after a `token` line; stdin closed and stderr dropped as pyinfra's facts do."""
    parts = [f"{{\n{before}\n}} </dev/null", f"echo '{token} -'"] if before else []
    for i, command in enumerate(commands):
        parts.append(f"( {command}\n) </dev/null 2>/dev/null; echo \"{token} {i} $?\"")
    return "\n".join(parts)


def parse_prefetch(lines: list[str], commands: list[str], token: str) -> tuple[list[str], dict[str, list[str]]]:
    """(the lines of `before`, {fact command: its stdout lines}) from `prefetch_script`'s output; a
    fact that exited non-zero is left out (read live, with pyinfra's own handling)."""
    before: list[str] = []
    outputs: dict[str, list[str]] = {}
    current: list[str] = []
    for line in lines:
        head, found, tail = line.partition(token)
        if not found:
            current.append(line)
            continue
        if head:  # output without a final newline: the token line was glued to it
            current.append(head)
        index, _, status = tail.strip().partition(" ")
        if index == "-":
            before = current
        elif index.isdigit() and int(index) < len(commands) and status == "0":
            outputs.setdefault(commands[int(index)], current)
        current = []
    return before, outputs


def prime(name: str, outputs: dict[str, list[str]]) -> None:
    """Let host `name`'s operations use these fact outputs until one of them changes something."""
    _ahead[name] = dict(outputs)


def forget(name: str) -> None:
    _ahead.pop(name, None)


def _fact(cls: type[FactBase], **kwargs: Any) -> Any:
    """The fact read ahead for this host when nothing has changed since, else read live."""
    ahead = _ahead.get(host.name)
    if ahead is not None:
        fact = cls()
        lines = ahead.get(fact.command(**kwargs))
        if lines is not None:
            return fact.process(lines) if lines else fact.default()
    return host.get_fact(cls, **kwargs)


def _changing() -> None:
    """An operation is about to change the server: what was read ahead may no longer hold. (A plan
    runs no command: its read-ahead stays valid, and it is kept.)"""
    if not host.state.check_for_changes:
        forget(host.name)


# --- operations ------------------------------------------------------------------------------

UNIT_TYPES = (".service", ".socket", ".timer", ".target", ".path", ".mount", ".slice", ".scope")


def unit_name(name: str) -> str:
    """`nginx` -> `nginx.service`; `php8.4-fpm` -> `php8.4-fpm.service`; `x.timer` stays."""
    return name if name.endswith(UNIT_TYPES) else f"{name}.service"


@operation(is_idempotent=True)
def packages(names: list[str]) -> Iterator[Any]:
    """Install Debian packages (waiting up to 5 minutes for another apt's lock), repairing an
    interrupted dpkg first."""
    state = _fact(PackageStates, packages=tuple(names))
    missing = [n for n in names if n not in state["installed"]]
    if state["interrupted"] or missing:
        _changing()
    if state["interrupted"]:
        _record("repair", "dpkg", "finish an interrupted package installation")
        yield f"{APT} -f install || dpkg --configure -a"
    if missing:
        _record("packages", ", ".join(missing), f"install {len(missing)} package(s)")
        yield f"{APT} update"
        yield f"{APT} install --no-install-recommends {_q(missing)}"


def _mode(text: str) -> int:
    return int(text, 8)


def _tar(files: list[File]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for f in files:
            info = tarfile.TarInfo(f.path.lstrip("/"))
            info.size, info.mode, info.mtime = len(f.data), _mode(f.mode), 0
            info.uname, info.gname = f.owner, f.group
            tar.addfile(info, io.BytesIO(f.data))
    return buf.getvalue()


def file_changes(files: list[File], dirs: list[Directory], states: dict[str, dict[str, Any]]) \
        -> tuple[list[Directory], list[File], list[File]]:
    """(directories to create or fix, files to write, files whose mode/owner only need fixing)."""
    fix_dirs = [d for d in dirs if (s := states.get(d.path)) is None or s["type"] != "directory"
                or (s["mode"], s["owner"], s["group"]) != (_mode(d.mode), d.owner, d.group)]
    write, perms = [], []
    for f in files:
        s = states.get(f.path)
        if f.absent:
            if s is not None:
                write.append(f)
            continue
        if s is None or s["type"] != "regular file" or s.get("sha256") != hashlib.sha256(f.data).hexdigest():
            write.append(f)
        elif (s["mode"], s["owner"], s["group"]) != (_mode(f.mode), f.owner, f.group):
            perms.append(f)
    return fix_dirs, write, perms


@operation(is_idempotent=True)
def paths(files: list[File], directories: list[Directory]) -> Iterator[Any]:
    """Directories and files with exact content, mode and owner, all checked in one command and
    written in one upload; then reload/restart the units whose files changed."""
    # the marker: handlers still owed by an earlier run that died or failed a check after writing its files
    read, marker = path_fact_paths(files, directories)
    states = _fact(PathStates, paths=read)
    pending = marker in states
    fix_dirs, write, perms = file_changes(files, directories, states)
    remove = [f for f in write if f.absent]
    write = [f for f in write if not f.absent]
    # record everything before the first yield: a plan advances the generator only that far
    for d in fix_dirs:
        _record("directory", d.path, "create" if d.path not in states else "fix mode/owner")
    for f in remove:
        _record("file", f.path, "remove")
    for f in write:
        _record("file", f.path, "create" if f.path not in states else "modify", file=f,
                old_sha256=states.get(f.path, {}).get("sha256"))
    for f in perms:
        _record("file", f.path, "fix mode/owner")
    touched = write + perms + remove
    if pending:
        _record("handlers", "reloads and checks left pending by an earlier run", "run them again")
        touched = list(dict.fromkeys([*touched, *files]))
    handlers = any(f.check or f.then or f.reload or f.restart for f in touched)
    if touched or fix_dirs:
        _changing()
    if handlers and not pending:
        yield f"install -d -m 0700 {PENDING} && touch {marker}"
    if fix_dirs:
        yield " && ".join(f"install -d -m {shlex.quote(d.mode)} -o {shlex.quote(d.owner)} -g {shlex.quote(d.group)} "
                          f"{shlex.quote(d.path)}" for d in fix_dirs)
    if remove:
        yield f"rm -f -- {_q([f.path for f in remove])}"
    if write:
        data = _tar(write)
        temp = f"/root/.schoolctl-upload-{hashlib.sha256(data).hexdigest()[:16]}.tar"
        yield FileUploadCommand(io.BytesIO(data), temp)
        yield StringCommand(f"umask 077; tar -x --touch --same-owner --same-permissions -f {temp} -C / && rm -f {temp}")
    if perms:
        yield " && ".join(f"chown {shlex.quote(f'{f.owner}:{f.group}')} {shlex.quote(f.path)} && "
                          f"chmod {shlex.quote(f.mode)} {shlex.quote(f.path)}" for f in perms)
    if any(f.path.startswith(("/etc/systemd/", "/lib/systemd/", "/usr/lib/systemd/")) for f in touched):
        yield "systemctl daemon-reload"
    for f in touched:
        if f.check:
            yield f.check
    yield from dict.fromkeys(f.then for f in touched if f.then)
    reloads = list(dict.fromkeys(u for f in touched for u in f.reload))
    restarts = list(dict.fromkeys(u for f in touched for u in f.restart))
    reloads = [u for u in reloads if u not in restarts]
    if reloads:
        yield f"systemctl try-reload-or-restart {_q([unit_name(u) for u in reloads])}"
    if restarts:
        yield f"systemctl try-restart {_q([unit_name(u) for u in restarts])}"
    if handlers:
        yield f"rm -f {marker}"


@operation(is_idempotent=True)
def services(units: list[Service]) -> Iterator[Any]:
    """Units enabled and running (or stopped and disabled), checked in one command."""
    states = _fact(UnitStates, units=tuple(unit_name(s.name) for s in units))
    commands = []
    for s in units:
        name = unit_name(s.name)
        st = states.get(name, {})
        enabled = st.get("UnitFileState") in ("enabled", "static", "generated", "alias", "indirect")
        # a unit whose conditions say it does not belong here (e.g. timesyncd in a container) is fine
        active = st.get("ActiveState") == "active" or (
            enabled and st.get("ConditionResult") == "no" and bool(st.get("ConditionTimestamp")))
        if s.running and not s.start:
            if not enabled:
                _record("service", name, "enable")
                commands.append(f"systemctl enable {shlex.quote(name)}")
        elif s.running and not (enabled and active):
            _record("service", name, "enable and start" if not enabled else "start")
            commands.append(f"systemctl enable --now {shlex.quote(name)}" if st.get("UnitFileState") != "static"
                            else f"systemctl start {shlex.quote(name)}")
        elif not s.running and (enabled or active) and st.get("LoadState") == "loaded":
            _record("service", name, "stop and disable")
            commands.append(f"systemctl disable --now {shlex.quote(name)}")
    if commands:
        _changing()
    yield from commands


def guarded(step: Step) -> str:
    """Shell: the step's `apply`, only when its `check` fails (the check's output discarded)."""
    return f"if ! ( {step.check} ) >/dev/null 2>&1 </dev/null; then\n{step.apply}\nfi"


@operation(is_idempotent=True)
def steps(items: list[Step]) -> Iterator[Any]:
    """Guarded steps: every check runs in one command; each step still to do runs its `apply`,
    re-checking first (an earlier step may have satisfied it)."""
    done = _fact(StepChecks, checks=tuple(s.check for s in items))
    todo = [s for s, ok in zip(items, done + [False] * (len(items) - len(done)), strict=True) if not ok]
    for step in todo:
        _record("step", step.name)
    if todo:
        _changing()
    for step in todo:
        if step.upload:
            yield FileUploadCommand(step.upload[0], step.upload[1])
        script = guarded(step)
        yield f"timeout {step.timeout} sh -ec {shlex.quote(script)}"
