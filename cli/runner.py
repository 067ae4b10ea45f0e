"""Drive pyinfra for plan and deploy: one pyinfra State per school (isolates failures and avoids
pyinfra 3.10's operation-id merging across hosts), all schools concurrently in gevent greenlets."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gevent
from pyinfra.api import BaseStateCallback, Config, Inventory, State
from pyinfra.api.connect import connect_all, disconnect_all
from pyinfra.api.deploy import add_deploy
from pyinfra.api.exceptions import PyinfraError
from pyinfra.api.operations import run_ops

from schoolctl import connect
from schoolctl.config.model import EffectiveSchool
from schoolctl.connect import no_delay, pyinfra_data
from schoolctl.deploy import ops
from schoolctl.deploy.school import school_deploy, school_rounds, selected_layers
from schoolctl.deploy.sites import build_site
from schoolctl.secrets import DeferredStore, SecretStore, redact

Progress = Callable[[str, str], None]


@dataclass
class Result:
    """The outcome for one school."""

    school: str
    status: str  # planned | changed | unchanged | failed
    changes: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0
    skipped: list[str] = field(default_factory=list)  # apps left out: no release to be had (one line each)
    rolled_back: str | None = None  # failed, and an app's upgrade went back to this version (deploy/upgrade.py)
    notes: list[str] = field(default_factory=list)  # what else the run has to say (e.g. the backup host)
    exit_code: int = 0  # when failed: 2 for bad set-up found before the server was touched (e.g. its vault), else 1

    @property
    def status_text(self) -> str:
        """The status as people read it: `failed (rolled back to 33.0.3)` after an undone upgrade."""
        return f"{self.status} (rolled back to {self.rolled_back})" if self.rolled_back else self.status

    def as_json(self) -> dict[str, Any]:
        return {"school": self.school, "status": self.status, "seconds": round(self.seconds, 2),
                "error": self.error, "skipped": self.skipped, "rolled_back": self.rolled_back,
                "result": self.status_text, "notes": self.notes,
                "changes": [{k: v for k, v in c.items() if k in ("kind", "what", "detail")} for c in self.changes]}


class _Callbacks(BaseStateCallback):
    def __init__(self, school: str, progress: Progress):
        self.school, self.progress = school, progress
        self.connect_error: Any = None  # pyinfra's ConnectError, when the host did not answer

    def host_connect_error(self, state: State, host: Any, error: Any) -> None:  # type: ignore[override]
        self.connect_error = error

    def operation_start(self, state: State, op_hash: str) -> None:  # type: ignore[override]
        self.progress(self.school, ", ".join(state.get_op_meta(op_hash).names))


class _Collect(logging.Handler):
    """Keep pyinfra's warnings and errors about one school's host."""

    def __init__(self, lines: list[str]):
        super().__init__(logging.WARNING)
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _failed_op(state: State, host: Any) -> tuple[str, list[str]]:
    for op_hash in state.get_op_order():
        data = state.ops.get(host, {}).get(op_hash)
        if data is None:
            continue
        meta = data.operation_meta
        if meta.is_complete() and not meta.did_succeed(_raise_if_not_complete=False):
            name = ", ".join(state.get_op_meta(op_hash).names)
            return name, [*meta.stderr_lines[-15:], *([] if meta.stderr_lines else meta.stdout_lines[-15:])]
    return "", []


def _diffs(host: Any, found: list[dict[str, Any]]) -> None:
    """Add a unified diff to each planned file change (secrets never shown)."""
    from pyinfra.facts.files import FileContents

    from schoolctl.cli.plan_view import file_diff

    for c in found:
        f = c.get("file")
        if f is None:
            continue
        old = None
        if c["detail"] == "modify" and not f.secret:
            lines = host.get_fact(FileContents, path=f.path)
            old = "\n".join(lines) if lines else ""
        try:
            c["diff"] = file_diff(f.path, old, f.data.decode(), f.secret)
        except UnicodeDecodeError:
            c["diff"] = "    (binary content)"


class _TargetFailed(Exception):
    """One host of a school could not be planned or deployed; the message says why."""


def _read_ahead(host: Any, rounds: list) -> list[str]:
    """One command right after connecting: the upgrade guards (deploy/upgrade.py: a guard's apply
    only prints its reason and exits 1, it changes nothing) and every operation's fact, read ahead
    so that a deploy with nothing to change costs one round trip (deploy/ops.py: prefetch). Answers
    the reasons of the guards that refuse this deploy."""
    import secrets

    from pyinfra.facts.server import Command

    from schoolctl.deploy.upgrade import is_guard

    before = ops.guard_script([s for r in rounds for s in r.pre_steps if is_guard(s)])
    commands = ops.fact_commands(rounds)
    token = f"--schoolctl-fact-{secrets.token_hex(8)}"
    lines = (host.get_fact(Command, command=ops.prefetch_script(before, commands, token)) or "").splitlines()
    if not any(token in line for line in lines):  # no answer: every fact is read live, and a guard
        return []  # that refuses still fails the deploy in its own operation (round 0's preparation)
    found, outputs = ops.parse_prefetch(lines, commands, token)
    ops.prime(host.name, outputs)
    return [line for line in found if line.strip()]


def _record(host: Any, school: str, result: str, changes: int, days: int, notes: list[str]) -> None:
    """The deploy's line in the server's own run record (schoolctl.server_record), over the deploy's
    connection; a record that cannot be written is a note, never a failed deploy."""
    from schoolctl.server_record import entry, write_pyinfra

    note = write_pyinfra(host, entry("deploy", school, result, changes), days)
    if note:
        notes.append(f"{host.name}: {note}")


def _run_target(name: str, address: str, conn: dict[str, Any], rounds: list, plan: bool,
                progress: Progress, school: str, connected: Callable[[], None] = lambda: None,
                days: int | None = None, notes: list[str] | None = None) -> list[dict[str, Any]]:
    """Plan or deploy one host (the school server, or its BigBlueButton host) in its own State;
    `connected()` runs once the host answered, before any operation. A deploy (not a plan) with
    `days` leaves its line in the server's run record, kept `days` days."""
    ops.reset_changes(name)
    inventory = Inventory(([(name, conn)], {}))
    state = State(inventory=inventory, config=Config(CONNECT_TIMEOUT=connect.CONNECT_TIMEOUT), check_for_changes=plan)
    callbacks = _Callbacks(school, progress)
    state.add_callback_handler(callbacks)
    progress(school, f"connecting to {name}")
    with contextlib.suppress(PyinfraError):
        connect_all(state)
    host = inventory.get_host(name)
    if host in state.failed_hosts or not state.activated_hosts:  # one line: the real cause, what to do
        raise _TargetFailed(connect.connect_failure(conn, callbacks.connect_error, name if name != school else ""))
    no_delay(host)
    failed = True
    try:
        connected()
        refused = _read_ahead(host, rounds)
        if refused:  # an upgrade path the app refuses: say so, before any operation (plan and deploy)
            raise _TargetFailed("\n".join(refused))
        add_deploy(state, school_deploy, rounds)
        if plan:
            _diffs(host, ops.changes(name))
        else:
            run_ops(state)
        failed = host in state.failed_hosts
    except PyinfraError:
        pass
    finally:
        ops.forget(name)
        if not plan and days:
            found = ops.changes(name)
            _record(host, school, "failed" if failed else ("changed" if found else "unchanged"), len(found), days,
                    notes if notes is not None else [])
        disconnect_all(state)
    if host in state.failed_hosts:
        op, lines = _failed_op(state, host)
        raise _TargetFailed(f"{op or 'an operation'} failed on {name}:\n" + "\n".join(lines))
    return ops.changes(name)


def _targets(school: EffectiveSchool, site: Any) -> list[tuple[str, str, dict[str, Any], list]]:
    """The hosts of a school: its server, and its own BigBlueButton host when it has one."""
    from schoolctl.deploy.bbb_host import bbb_rounds, bbb_server
    found = [(school.id, school.server.address, pyinfra_data(school.server, retries=True), school_rounds(site))]
    bbb = bbb_server(site)
    if bbb is not None:
        found.append((f"{school.id}-bbb", bbb.address, pyinfra_data(bbb, retries=True), bbb_rounds(site)))
    return found


def _backup_host(site: Any, pending: DeferredStore, plan: bool, progress: Progress) -> None:
    """Before a deploy renders: the school enrolled on the city's backup host (cli/backup/host.py;
    no connection when the vault says it was done). An unreachable backup host never stops a deploy:
    it is noted, and the school's backups fail (and the audit says so) until the next deploy."""
    from schoolctl.cli.backup.host import enrol
    from schoolctl.errors import SchoolctlError

    if plan:  # a plan shows the host key the vault knows (deploy/sites.py), and never connects to it
        return
    progress(site.id, "backup host")
    try:
        enrol(site, pending)
    except SchoolctlError as e:
        site.notes.append(f"backup host not reached, backups will fail until the next deploy: {e.message}")


def _backup_repository(site: Any, store: SecretStore) -> None:
    """After a deploy: the school's repository exists and its key is in the vault."""
    from schoolctl.cli.backup.host import ensure_repository
    from schoolctl.errors import SchoolctlError

    try:
        if ensure_repository(site, store):
            site.notes.append("backup repository created on the backup host (repokey-blake2); its key is in the vault")
    except SchoolctlError as e:
        site.notes.append(f"backup repository not created yet: {e.message}")


def run_school(school: EffectiveSchool, store: SecretStore, plan: bool, progress: Progress,
               restoring: bool = False) -> Result:
    """Plan or deploy one school (its server, then its BigBlueButton host); never raises. New
    secrets are generated in memory and written to the vault only once the school's server answered:
    a deploy that cannot reach it leaves the vault as it was (a plan never writes). `restoring`: the
    first deploy of a restore (deploy/site.py: Site.restoring)."""
    start = time.monotonic()
    sid = school.id
    found: list[dict[str, Any]] = []
    try:
        progress(sid, "preparing")
        pending = DeferredStore(store)  # new secrets: in memory until the server answered
        site = build_site(school, pending, readonly=plan)
        site.restoring = restoring
        backups = school.backup is not None and site.backup_address and "backup" in selected_layers()
        if backups:
            _backup_host(site, pending, plan, progress)
        for name, address, conn, rounds in _targets(school, site):
            changes = _run_target(name, address, conn, rounds, plan, progress, sid, connected=pending.flush,
                                  days=school.privacy.log_retention_days, notes=site.notes)
            found += changes if name == sid else [{**c, "what": f"{name}: {c['what']}"} for c in changes]
        if backups and not plan:
            _backup_repository(site, store)
        status = "planned" if plan else ("changed" if found else "unchanged")
        return Result(sid, status, found, seconds=time.monotonic() - start, skipped=list(site.skipped),
                      notes=list(site.notes))
    except Exception as e:  # one school's failure never stops the others
        from schoolctl.deploy.upgrade import rolled_back
        from schoolctl.errors import INPUT, RUNTIME, SchoolctlError

        error = str(e) if isinstance(e, _TargetFailed | SchoolctlError) else f"{type(e).__name__}: {e}"
        back = rolled_back(error) if isinstance(e, _TargetFailed) else None
        setup = isinstance(e, SchoolctlError) and e.exit_code == INPUT and not found
        result = Result(sid, "failed", found + ops.changes(sid), error=redact(error), seconds=time.monotonic() - start,
                        rolled_back=back[1] if back else None, exit_code=INPUT if setup else RUNTIME)
    progress(sid, f"{result.status_text} in {result.seconds:.1f}s")  # the error itself: in the summary
    return result


def run(schools: list[EffectiveSchool], plan: bool, progress: Progress | None = None,
        store: SecretStore | None = None, parallel: int = 20, restoring: bool = False) -> list[Result]:
    """Plan or deploy every school concurrently, at most `parallel` at once; results in the
    schools' order. pyinfra's own log goes to the root logger only with -v/--debug (cli/logs.py)."""
    from gevent.pool import Pool

    from schoolctl.cli.logs import shows_libraries

    store = store or SecretStore()
    progress = progress or (lambda school, what: None)
    lines: list[str] = []
    handler = _Collect(lines)
    pyinfra_log = logging.getLogger("pyinfra")
    pyinfra_log.addHandler(handler)
    propagate = pyinfra_log.propagate
    pyinfra_log.propagate = shows_libraries()
    pool = Pool(max(1, parallel))
    try:
        jobs = [pool.spawn(run_school, s, store, plan, progress, restoring) for s in schools]
        gevent.joinall(jobs)
    finally:
        pyinfra_log.removeHandler(handler)
        pyinfra_log.propagate = propagate
    return [j.value if j.successful() else Result(s.id, "failed", error=redact(str(j.exception)))
            for j, s in zip(jobs, schools, strict=True)]
