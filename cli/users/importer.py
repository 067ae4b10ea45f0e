"""One import: the directory read, the plan made, the leavers deleted from the apps, the initial
passwords written for the secretary (encrypted), the change set applied."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from schoolctl.cli.users.classes import changed, class_hooks, sync_classes
from schoolctl.cli.users.directory import Plan, diff, passwords_csv, passwords_path, to_ldif
from schoolctl.cli.users.ldap import apply_ldif, fetch_directory
from schoolctl.cli.users.leavers import delete_hooks, run_hooks
from schoolctl.cli.users.roster import Person
from schoolctl.connect import Session
from schoolctl.secrets import Secret, generate

if TYPE_CHECKING:
    from schoolctl.config.model import EffectiveSchool
    from schoolctl.secrets import SecretStore


# --- one import ------------------------------------------------------------------------------

@dataclass
class ImportResult:
    school: str
    plan: Plan
    dry_run: bool
    notes: list[str] = field(default_factory=list)
    passwords_file: Path | None = None
    hooks: dict[str, dict[str, str]] = field(default_factory=dict)   # uid -> app -> ok | error
    classes: dict[str, dict[str, Any]] = field(default_factory=dict)  # app -> its class sync's answer
    kept: list[str] = field(default_factory=list)                   # leavers not deleted (a hook failed)
    error: str | None = None
    seconds: float = 0.0
    grace_days: int = 0

    @property
    def status(self) -> str:
        if self.error:
            return "failed"
        if self.plan.empty and not any(changed(a) for a in self.classes.values()):
            return "unchanged"
        return "planned" if self.dry_run else "changed"


def write_passwords(store: SecretStore, school_id: str, text: str, today: date) -> Path:
    """The initial passwords, ansible-vault encrypted with the vault key, for the school's secretary."""
    path = passwords_path(store.directory, school_id, today)
    store.write_encrypted(path, text)
    return path


def import_roster(school: EffectiveSchool, people: list[Person], dry_run: bool, store: SecretStore | None = None,
                  today: date | None = None, server: Session | None = None) -> ImportResult:
    """Make the directory hold exactly the roster (see the module's docstring)."""
    from schoolctl.secrets import SecretStore as Store

    start = time.monotonic()
    store = store or Store()
    today = today or date.today()
    base = school.ldap_base
    with server or Session(school.server, school.id) as srv:
        directory = fetch_directory(srv, base, today)
        plan = diff(people, directory, today, school.privacy.leaver_grace_days)
        result = ImportResult(school.id, plan, dry_run, grace_days=school.privacy.leaver_grace_days)
        if directory.unmanaged:
            result.notes.append(f"{directory.unmanaged} person entr(y/ies) without a schoolctl key left alone")
        if dry_run:
            result.seconds = time.monotonic() - start
            return result
        deleted = list(plan.delete)
        if plan.delete:
            hooks = delete_hooks(school)
            if hooks:
                from schoolctl.deploy.sites import build_site

                site = build_site(school, store, readonly=True)
                result.hooks = run_hooks(srv, site, hooks, [a.uid for a in plan.delete])
                deleted = [a for a in plan.delete if all(v == "ok" for v in result.hooks[a.uid].values())]
                result.kept = [a.uid for a in plan.delete if a not in deleted]
        passwords = {uid: generate(14) for uid, _ in plan.add}
        for value in passwords.values():
            Secret(value)  # registered with the redactor: never printed, even by accident
        if plan.add:
            result.passwords_file = write_passwords(store, school.id, passwords_csv(plan, passwords), today)
        if not plan.empty:
            apply_ldif(srv, to_ldif(plan, passwords, deleted))
        # every import (an unchanged one too: an app deployed since gets its classes) syncs the apps
        result.classes = sync_classes(srv, plan, class_hooks(school))
        failed = [app for app, answer in result.classes.items() if answer.get("error")]
        if failed:
            result.error = f"classes not synced in {', '.join(failed)} (run the import again)"
        if result.kept:
            kept = f"not deleted (an app's delete command failed, still suspended): {', '.join(result.kept)}"
            result.error = f"{result.error}; {kept}" if result.error else kept
    result.seconds = time.monotonic() - start
    return result
