"""The control model, the registry, and the evidence cache every audit module shares.

A control is metadata (stable id, service, title, why, legal basis, severity) plus ONE check
function `check(ctx) -> Outcome` that reads the real host through a testinfra host (`ctx.host`,
or `ctx.run(cmd)`), and compares what it observed with what the school's effective policy
expects (`ctx.school`, `ctx.expect`). Adding a service's controls is adding `audit/<service>.py`
with `@control(...)` functions: modules are discovered, nothing else to register.

Speed: `CachedHost` is a testinfra Host whose `run()` answers from one prefetch script (every
command the modules declared with `evidence()`, run on the host in ONE ssh command, in parallel
there); anything not prefetched goes to the host as usual. The evidence is fresh for each audit.
"""

from __future__ import annotations

import base64
import dataclasses
import importlib
import json
import pkgutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from testinfra.backend.base import CommandResult
from testinfra.host import Host

from schoolctl.config.model import DB_SERVICES

PASS, FAIL, ERROR, NA = "pass", "fail", "error", "n/a"
# a failing control covered by an accepted risk of the fleet (`accept:`, until its date): evidence kept
ACCEPTED = "accepted"
OUTCOMES = (PASS, FAIL, ERROR, NA)             # what a check may find
STATUSES = (PASS, FAIL, ACCEPTED, ERROR, NA)   # what a result may say (the reports' columns, in this order)
FAILING = (FAIL, ERROR)                        # the statuses that make `schoolctl audit` exit 1
SEVERITIES = ("high", "medium", "low")

# GDPR articles a control may cite, with the words the reports show.
LEGAL = {
    "5(1)(c)": "GDPR Art. 5(1)(c) data minimisation",
    "5(1)(e)": "GDPR Art. 5(1)(e) storage limitation",
    "25": "GDPR Art. 25 data protection by design and by default",
    "32": "GDPR Art. 32 security of processing",
    "44": "GDPR Art. 44 transfers to third countries",
}


@dataclass(frozen=True)
class Outcome:
    """What one check found: status, the evidence observed on the host, and the expected value."""

    status: str
    observed: str = ""
    expected: str = ""

    def __post_init__(self) -> None:
        if self.status not in OUTCOMES:  # `accepted` is the fleet's word on a fail, never a check's
            raise ValueError(f"unknown status {self.status!r}")


def passed(observed: str, expected: str) -> Outcome:
    return Outcome(PASS, observed, expected)


def failed(observed: str, expected: str) -> Outcome:
    return Outcome(FAIL, observed, expected)


def verdict(ok: bool, observed: str, expected: str) -> Outcome:
    return Outcome(PASS if ok else FAIL, observed, expected)


@dataclass(frozen=True)
class Expect:
    """What the school's effective config says the host must look like, computed on the controller.

    `outbound`: the egress allow-list as (proto, address, port); `names`: every name the school
    serves (domain first), which its certificate must cover; `pages`: the names whose start page
    the web controls fetch (default: all names); `inbound`: (proto, port) the firewall may open;
    `trust`: extra CA certificates (PEM) a school's chain may end at (lab ACME, city CA)."""

    names: tuple[str, ...] = ()
    pages: tuple[str, ...] = ()
    trust: tuple[str, ...] = ()
    outbound: tuple[tuple[str, str, int], ...] = ()
    inbound: tuple[tuple[str, int], ...] = ()
    outbound_note: str = ""
    pages_note: str = ""  # why a name's start page is not fetched (e.g. no Jitsi web client deployed)

    def __post_init__(self) -> None:
        if not self.pages:
            object.__setattr__(self, "pages", self.names)


@dataclass
class Context:
    """What a check sees: the host (testinfra), the school (EffectiveSchool) and the expectations;
    `today` is the day support dates are read on (default: today in the fleet's time zone)."""

    host: Any
    school: Any
    expect: Expect
    today: date | None = None

    @property
    def day(self) -> date:
        if self.today is None:
            from schoolctl.releases import today

            self.today = today(self.school.fleet)
        return self.today

    def run(self, command: str) -> CommandResult:
        return self.host.run(command)

    @property
    def policy(self) -> Any:
        return self.school.privacy

    def web_names(self) -> list[str]:
        return list(self.expect.names)


@dataclass(frozen=True)
class Control:
    id: str
    service: str
    title: str
    why: str
    legal: tuple[str, ...]
    severity: str
    check: Callable[[Context], Outcome]
    applies: Callable[[Any], bool] | None = None
    titles: dict[str, str] = field(default_factory=dict)  # translated titles: {"ca": ..., "es": ...}

    def applicable(self, school: Any) -> bool:
        if self.applies is not None:
            return self.applies(school)
        return applies_to_service(self.service, school)

    def title_in(self, lang: str) -> str:
        return self.titles.get(lang, self.title)

    @property
    def legal_text(self) -> list[str]:
        return [LEGAL[a] for a in self.legal]


def applies_to_service(service: str, school: Any) -> bool:
    """host and web (every school has its landing page): always; database: any service with a
    database; else the service itself."""
    if service in ("host", "web"):
        return True
    if service == "database":
        return any(school.has(s) for s in DB_SERVICES)
    return bool(school.has(service))


REGISTRY: dict[str, Control] = {}


def control(id: str, service: str, title: str, why: str, legal: Iterable[str], severity: str,
            applies: Callable[[Any], bool] | None = None, titles: dict[str, str] | None = None) \
        -> Callable[[Callable[[Context], Outcome]], Callable[[Context], Outcome]]:
    """Register the decorated function as the check of control `id`."""
    legal = tuple(legal)
    unknown = [a for a in legal if a not in LEGAL]
    if unknown or severity not in SEVERITIES:
        raise ValueError(f"{id}: unknown legal basis {unknown} or severity {severity!r}")

    def register(fn: Callable[[Context], Outcome]) -> Callable[[Context], Outcome]:
        if id in REGISTRY and REGISTRY[id].check.__qualname__ != fn.__qualname__:
            raise ValueError(f"control id {id} registered twice")
        REGISTRY[id] = Control(id, service, title, why, legal, severity, fn, applies, titles or {})
        return fn

    return register


# --- evidence: commands prefetched in one ssh round trip ----------------------------------------

Evidence = Callable[[Any, Expect], list[str]]
_EVIDENCE: list[str | Evidence] = []


def evidence(command: str | Evidence) -> Any:
    """Declare a command (or a function school, expect -> commands) whose output checks will ask
    for: the audit runs them all in one script before the checks. Returns its argument."""
    _EVIDENCE.append(command)
    return command


def prefetch_commands(school: Any, expect: Expect) -> list[str]:
    cmds: list[str] = []
    for item in _EVIDENCE:
        cmds += [item] if isinstance(item, str) else item(school, expect)
    return list(dict.fromkeys(cmds))


# Runs on the host with python3 (the base layer installs it): each command under `sh -c`, a few at
# a time, with a timeout; answers JSON {command: [rc, stdout, stderr]}.
_PREFETCH_PY = r"""
import json, subprocess, sys
from concurrent.futures import ThreadPoolExecutor

cmds = json.loads(sys.stdin.read() if len(sys.argv) < 2 else bytes.fromhex(sys.argv[1]).decode())
def one(c):
    try:
        p = subprocess.run(["sh", "-c", c], capture_output=True, timeout=25, stdin=subprocess.DEVNULL)
        return c, [p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")]
    except subprocess.TimeoutExpired:
        return c, [124, "", "timed out after 25 s"]
with ThreadPoolExecutor(6) as ex:
    print(json.dumps(dict(ex.map(one, cmds))))
"""


class CachedHost(Host):
    """A testinfra Host serving `run(cmd)` from a prefetched batch when it can (see module doc)."""

    def __init__(self, host: Host):
        super().__init__(host.backend)
        self.cache: dict[str, CommandResult] = {}
        self.misses: list[str] = []

    def prefetch(self, commands: list[str]) -> None:
        """Run every command in ONE remote command; keep the answers for `run()`."""
        if not commands:
            return
        script = base64.b64encode(_PREFETCH_PY.encode()).decode()
        payload = json.dumps(commands).encode().hex()
        # the script goes to python on stdin: no file on the server, so two audits at once never collide
        remote = f"echo {script} | base64 -d | python3 - {payload}"
        res = self.backend.run(remote)
        if res.rc != 0:
            raise RuntimeError(f"evidence script failed ({res.rc}): {res.stderr.strip()[-500:]}")
        for cmd, (rc, out, err) in json.loads(res.stdout).items():
            self.cache[cmd] = self.backend.result(rc, self.backend.encode(cmd), out.encode(), err.encode())

    def run(self, command: str, *args: str, **kwargs: Any) -> CommandResult:
        if not args and not kwargs and command in self.cache:
            return self.cache[command]
        self.misses.append(command)
        return super().run(command, *args, **kwargs)


# --- when ssh itself fails: its own reason, in one line ---------------------------------------------

def ssh_failure(e: BaseException) -> str | None:
    """One line for an ssh that could not run a command at all: ssh's own reason and what to do, as
    schoolctl.connect words it for the deploy too; None for anything else."""
    from schoolctl.connect import testinfra_failure

    why = testinfra_failure(e)
    return f"cannot audit over SSH: {why}" if why else None


# --- discovery and running ------------------------------------------------------------------------

_NOT_CONTROLS = {"catalogue", "ids", "plugin", "runner"}


def load_all() -> dict[str, Control]:
    """Import every audit module (audit/<name>.py but this one, the id list, the plugin, the runner and
    tests); the registry."""
    import schoolctl.audit as audit

    for mod in pkgutil.iter_modules(audit.__path__):
        if mod.name in _NOT_CONTROLS or mod.name.startswith(("test_", "_")):
            continue
        importlib.import_module(f"schoolctl.audit.{mod.name}")
    return REGISTRY


@dataclass(frozen=True)
class ControlResult:
    """One control's result for one school, ready for the reports."""

    control: Control
    status: str
    observed: str
    expected: str
    accepted: Any = None  # the fleet's Acceptance when status is `accepted`: reason, accepted_by, until

    def as_json(self) -> dict[str, Any]:
        from schoolctl.releases import accepted_as_json
        from schoolctl.secrets import redact

        c = self.control
        return {"id": c.id, "service": c.service, "title": c.title, "severity": c.severity,
                "legal": c.legal_text, "status": self.status, "observed": redact(self.observed),
                "expected": redact(self.expected), "why": c.why, "accepted": accepted_as_json(self.accepted)}


def run_control(c: Control, ctx: Context) -> ControlResult:
    if not c.applicable(ctx.school):
        return ControlResult(c, NA, f"{ctx.school.id} does not run {c.service}", "")
    try:
        o = c.check(ctx)
    except Exception as e:  # a broken check or an unexpected host answer is an error, not a crash
        return ControlResult(c, ERROR, ssh_failure(e) or f"{type(e).__name__}: {e}", "")
    return ControlResult(c, o.status, o.observed, o.expected)


def waived(result: ControlResult, school: Any, on: date) -> ControlResult:
    """A failing result the fleet accepts (`accept:` for this control and school, or `*`, until a day
    not yet past) becomes `accepted`, its evidence unchanged; every other result stays as it is
    (a waiver never hides a pass, an error or an n/a; past its `until` it covers nothing)."""
    from schoolctl.releases import acceptance

    if result.status != FAIL:
        return result
    found = acceptance(school.fleet, result.control.id, school.id, on)
    return result if found is None else dataclasses.replace(result, status=ACCEPTED, accepted=found)


def run_controls(ctx: Context, only: Iterable[str] | None = None) -> list[ControlResult]:
    controls = load_all()
    ids = list(only) if only else sorted(controls, key=order_key)
    return [run_control(controls[i], ctx) for i in ids]


_SERVICE_ORDER = ("host", "web", "database", "moodle", "nextcloud", "etherpad", "jitsi", "bigbluebutton")


def order_key(control_id: str) -> tuple[int, str]:
    service = REGISTRY[control_id].service
    return (_SERVICE_ORDER.index(service) if service in _SERVICE_ORDER else len(_SERVICE_ORDER), control_id)


def parse_kv(text: str, sep: str = " ") -> dict[str, str]:
    """`key value` lines (sshd -T, systemctl show with sep='=') as a dict with lower-case keys."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.strip().partition(sep)
        if key:
            out.setdefault(key.lower(), value.strip())
    return out
