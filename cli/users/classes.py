"""Classes in the apps: after each import, every enabled app whose module defines
`classes_command() -> str` (a shell command reading the payload on its stdin; Moodle: a cohort per
class; Nextcloud: a class folder shared to the class's LDAP group) gets the whole roster's classes in
one JSON payload, all apps in one script on the server; each answers one line `@@<app> {json}` that
says what it changed."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from schoolctl.cli.users.directory import Plan
from schoolctl.cli.users.leavers import app_hooks
from schoolctl.connect import Session
from schoolctl.deploy.identity import class_group_cn

if TYPE_CHECKING:
    from schoolctl.config.model import EffectiveSchool

MARK = "@@"


def payload(plan: Plan) -> dict[str, Any]:
    """What the apps make true: every class (its directory group and members) and who must still
    change the letter's password."""
    return {"classes": {name: {"group": class_group_cn(name), "members": uids}
                        for name, uids in sorted(plan.classes().items())},
            "must_change": sorted(plan.must_change & set(plan.roster))}


def class_hooks(school: EffectiveSchool) -> list[tuple[str, Callable[[], str]]]:
    """(app, `deploy.<app>.classes_command`) for each enabled app whose module defines it."""
    return app_hooks(school, "classes_command")


def script(hooks: list[tuple[str, Callable[[], str]]], data: dict[str, Any]) -> str:
    """One shell script: each app's command with the payload on its stdin (a quoted here-document:
    class names and uids are plain words, and JSON has no line the delimiter could match)."""
    text = json.dumps(data, sort_keys=True)
    lines = []
    for app, hook in hooks:
        lines += [f"if out=$( ( {hook()} ) 2>&1 <<'@@PAYLOAD'", text, "@@PAYLOAD", "); then",
                  f"  printf '%s\\n' \"$out\" | grep '^{{' | tail -n 1 | sed 's/^/{MARK}{app} /'",
                  f"else echo \"{MARK}{app}-failed $?\"; printf '%s\\n' \"$out\" | tail -n 5 | "
                  f"sed 's/^/{MARK}{app}-out /'; fi"]
    return "\n".join(lines) + "\n"


def parse(out: str, apps: list[str]) -> dict[str, dict[str, Any]]:
    """{app: its JSON answer} or {app: {"error": "..."}}."""
    results: dict[str, dict[str, Any]] = {}
    errors: dict[str, list[str]] = {}
    for line in out.splitlines():
        head, _, rest = line.partition(" ")
        if not head.startswith(MARK):
            continue
        name = head[len(MARK):]
        if name in apps:
            try:
                results[name] = json.loads(rest)
            except ValueError:
                errors.setdefault(name, []).append(f"unreadable answer {rest[:200]!r}")
        elif name.endswith("-failed"):
            errors.setdefault(name[:-7], []).insert(0, f"failed (exit {rest})")
        elif name.endswith("-out"):
            errors.setdefault(name[:-4], []).append(rest)
    for app in apps:
        if app in errors and app not in results:
            results[app] = {"error": ": ".join(errors[app])}
        results.setdefault(app, {"error": "no answer"})
    return results


def changed(answer: dict[str, Any]) -> bool:
    return bool(answer.get("error") or answer.get("changes"))


def sync_classes(server: Session, plan: Plan, hooks: list[tuple[str, Callable[[], str]]]) \
        -> dict[str, dict[str, Any]]:
    """Run every app's class command once; {app: answer}."""
    if not hooks:
        return {}
    _, out, err = server.run("sh -s", stdin=script(hooks, payload(plan)), timeout=1800)
    results = parse(out, [app for app, _ in hooks])
    for answer in results.values():
        if answer.get("error") == "no answer" and err.strip():
            answer["error"] = f"no answer: {err.strip()[-300:]}"
    return results


def summary(app: str, answer: dict[str, Any]) -> str:
    """One line per app for the report: what changed, or "unchanged"."""
    if answer.get("error"):
        return f"{app}: classes NOT synced: {answer['error']}"
    notes = "".join(f" (note: {n})" for n in answer.get("notes", []))
    return f"{app}: classes " + ("; ".join(answer.get("changes", [])) or "unchanged") + notes
