"""Leavers in the apps: every enabled app's `schoolctl.deploy.<app>.delete_user_command`, run for
every leaver in one script on the server, each result reported."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from schoolctl.connect import Session

if TYPE_CHECKING:
    from schoolctl.config.model import EffectiveSchool


# --- leavers in the apps ---------------------------------------------------------------------

def app_hooks(school: EffectiveSchool, name: str) -> list[tuple[str, Callable[..., str]]]:
    """(app, `deploy.<app>.<name>`) for each enabled app whose module defines that function."""
    found = []
    for app in school.enabled:
        try:
            module = importlib.import_module(f"schoolctl.deploy.{app}")
        except ModuleNotFoundError as e:
            if e.name == f"schoolctl.deploy.{app}":
                continue
            raise
        hook = getattr(module, name, None)
        if callable(hook):
            found.append((app, hook))
    return found


def delete_hooks(school: EffectiveSchool) -> list[tuple[str, Callable[..., str]]]:
    """(app, `deploy.<app>.delete_user_command`) for each enabled app whose module defines it."""
    return app_hooks(school, "delete_user_command")


def run_hooks(server: Session, site: Any, hooks: list[tuple[str, Callable[..., str]]], uids: list[str]) \
        -> dict[str, dict[str, str]]:
    """Run every app's delete command for every uid in one script; {uid: {app: "ok" | error}}."""
    jobs = [(uid, app, hook(site, uid)) for uid in uids for app, hook in hooks]
    results: dict[str, dict[str, str]] = {uid: {} for uid in uids}
    if not jobs:
        return results
    script = []
    for i, (_, _, command) in enumerate(jobs):
        script.append(f"if out=$( ( {command} ) 2>&1 </dev/null ); then echo '@@ok {i}'; "
                      f"else echo \"@@fail {i} $?\"; printf '%s\\n' \"$out\" | tail -n 3 | sed 's/^/@@out {i} /'; fi")
    _, out, err = server.run("sh -s", stdin="\n".join(script) + "\n", timeout=1800)
    for line in out.splitlines():
        parts = line.split(" ", 2)
        if len(parts) < 2 or not parts[1].isdigit() or int(parts[1]) >= len(jobs):
            continue
        uid, app, _ = jobs[int(parts[1])]
        if parts[0] == "@@ok":
            results[uid][app] = "ok"
        elif parts[0] == "@@fail":
            results[uid][app] = f"failed (exit {parts[2] if len(parts) > 2 else '?'})"
        elif parts[0] == "@@out" and len(parts) > 2:
            results[uid][app] = results[uid].get(app, "failed") + f": {parts[2]}"
    for uid, app, _ in jobs:
        results[uid].setdefault(app, f"not run ({err.strip()[-200:] or 'no answer'})")
    return results
