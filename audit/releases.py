"""Release controls: the versions ACTUALLY RUNNING on the server (read from the code trees the
deploy switched `current` to, and /etc/os-release), judged by the fleet's support table
(`support:` in fleet.yaml) with schoolctl.releases.findings: past upstream's security support, in no
listed release line, or in the range of a known advisory. One evidence command reads every file.

- Moodle: `$release` of /srv/moodle/current/public/version.php (5.1 and later) or .../version.php
  ('5.0.6+ (Build: 20260403)' -> 5.0.6; a weekly '+' build is judged as its release).
- Nextcloud: `$OC_VersionString` of /srv/nextcloud/current/version.php.
- Etherpad: `version` of /srv/etherpad/current/src/package.json (the ep_etherpad-lite package, the
  release's number; the workspace's own package.json at the top carries another).
- The OS: ID and VERSION_ID of /etc/os-release (the support table's key: debian, line 13).
"""

from __future__ import annotations

import json
import re
from typing import Any

from schoolctl.audit.catalogue import NA, Context, Outcome, control, evidence, verdict
from schoolctl.releases import APPS, TITLES, Finding, findings, line_of

# deploy/artifacts.py's SRV (tests/unit/test_startup.py checks): importing it would cost `validate` requests and jinja2
SRV = "/srv"
OS_RELEASE = "/etc/os-release"
# where each app's version is written in its release tree, first match wins
FILES: dict[str, tuple[str, ...]] = {
    "moodle": (f"{SRV}/moodle/current/public/version.php", f"{SRV}/moodle/current/version.php"),
    "nextcloud": (f"{SRV}/nextcloud/current/version.php",),
    "etherpad": (f"{SRV}/etherpad/current/src/package.json",),
    "os": (OS_RELEASE,),
}
MAX_BYTES = 65536

# Runs on the host: for each item the first readable file, its real path (the release behind
# `current`) and its first 64 KiB; or why none could be read. Nothing secret is in these files.
_READ = r"""
import json, os
out = {}
for key, paths in json.loads(%(files)r).items():
    tried = []
    for p in paths:
        try:
            with open(p, "rb") as f:
                out[key] = {"path": p, "real": os.path.realpath(p), "text": f.read(%(max)d).decode(errors="replace")}
            break
        except OSError as e:
            tried.append(f"{p}: {e.strerror}")
    else:
        out[key] = {"error": "; ".join(tried)}
print(json.dumps(out))
"""
STATE = evidence("python3 - <<'SCHOOLCTL_PY'\n" + _READ % {"files": json.dumps(FILES), "max": MAX_BYTES}
                 + "SCHOOLCTL_PY")

_PHP_STRING = r"""\s*=\s*(?:'((?:[^'\\]|\\.)*)'|"((?:[^"\\]|\\.)*)")\s*;"""
MOODLE_RELEASE = re.compile(r"^\s*\$release" + _PHP_STRING, re.M)
NEXTCLOUD_VERSION = re.compile(r"^\s*\$OC_VersionString" + _PHP_STRING, re.M)
LEADING_VERSION = re.compile(r"^\s*v?(\d+(?:\.\d+)*)")


def state(ctx: Context) -> dict[str, Any]:
    res = ctx.run(STATE)
    if res.rc != 0:
        raise RuntimeError(f"reading the release files failed ({res.rc}): {res.stderr.strip()[-300:]}")
    return json.loads(res.stdout)


def _file(ctx: Context, key: str, what: str) -> dict[str, str]:
    found = state(ctx).get(key) or {"error": "not read"}
    if "text" not in found:
        raise RuntimeError(f"no {what} found on the server ({found.get('error', 'not read')})")
    return found


def _where(found: dict[str, str]) -> str:
    path, real = found["path"], found.get("real") or found["path"]
    return path if real == path else f"{path} -> {real}"


def _leading(text: str, what: str) -> str:
    m = LEADING_VERSION.match(text)
    if not m:
        raise RuntimeError(f"{what}: {text[:80]!r} holds no version number")
    return m.group(1)


def running(ctx: Context, app: str) -> tuple[str, str]:
    """The version of `app` running on the server, and where it was read ("$release '...' in PATH")."""
    title = TITLES[app]
    found = _file(ctx, app, f"{title} release ({' or '.join(FILES[app])})")
    text, where = found["text"], _where(found)
    if app == "etherpad":
        try:
            raw = json.loads(text).get("version")
        except (ValueError, AttributeError):
            raw = None
        if not isinstance(raw, str):
            raise RuntimeError(f"{where}: no \"version\" in the package file")
        return _leading(raw, where), f"version {raw!r} in {where}"
    pattern, name = (MOODLE_RELEASE, "$release") if app == "moodle" else (NEXTCLOUD_VERSION, "$OC_VersionString")
    m = pattern.search(text)
    if not m:
        raise RuntimeError(f"{where}: no {name} in the file")
    raw = m.group(1) if m.group(1) is not None else m.group(2)
    return _leading(raw, where), f"{name} {raw!r} in {where}"


def os_release(text: str) -> dict[str, str]:
    """/etc/os-release as a dict (KEY=value lines, quotes removed)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key and not key.startswith("#"):
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            out[key] = value
    return out


def _line_state(ctx: Context, app: str, version: str) -> str:
    support = getattr(ctx.school.fleet.support, app)
    line = line_of(support, version)
    if line is None:
        return "in no listed release line"
    if line.security_until is None:
        return f"{line.line}: supported, no end announced"
    return f"{line.line}: upstream security support until {line.security_until.isoformat()}"


def _support(ctx: Context, app: str, version: str, seen: str) -> Outcome:
    """Fail when `version` is past its line's support or in no listed line; n/a with no lines listed."""
    title = TITLES[app]
    support = getattr(ctx.school.fleet.support, app)
    expected = f"a release line with upstream security support on {ctx.day.isoformat()} (fleet.yaml support.{app})"
    if not support.lines:
        return Outcome(NA, f"{title} {version} running ({seen}); fleet.yaml support.{app} lists no release lines "
                           "to judge it by", expected)
    bad = [f for f in findings(ctx.school.fleet, app, version, ctx.day) if f.kind in ("unsupported", "unlisted")]
    if bad:
        return verdict(False, f"{title} {version} running ({seen}); " + "; ".join(_why(f) for f in bad), expected)
    return verdict(True, f"{title} {version} running ({seen}); {_line_state(ctx, app, version)}", expected)


def _why(f: Finding) -> str:
    if f.kind == "unsupported" and f.until is not None:
        return f"{f.line}: upstream security support ended on {f.until.isoformat()}"
    if f.kind == "unlisted":
        return f.message.split(f"{f.version} ", 1)[-1]  # "belongs to no release line in ... (listed: ...)"
    return f.message


def _advisories(ctx: Context, app: str, version: str, seen: str) -> Outcome:
    """Fail when `version` is in the affected range of a known advisory; expected: the fixed version."""
    title = TITLES[app]
    support = getattr(ctx.school.fleet.support, app)
    bad = [f for f in findings(ctx.school.fleet, app, version, ctx.day) if f.kind == "vulnerable"]
    if bad:
        observed = f"{title} {version} running ({seen}); affected by " + "; ".join(
            f"{f.advisory} ({f.severity}, affected {f.affected})" for f in bad)
        expected = "; ".join(f"{title} {f.fixed} or later (fixes {f.advisory})" for f in bad)
        return verdict(False, observed, expected)
    n = len(support.advisories)
    listed = (f"none of the {n} advisor{'y' if n == 1 else 'ies'} of fleet.yaml support.{app} affects it" if n
              else f"fleet.yaml support.{app} lists no advisories")
    return verdict(True, f"{title} {version} running ({seen}); {listed}",
                   f"no version in the range of a known advisory (fleet.yaml support.{app})")


WHY_SUPPORT = ("Past the end of upstream security support no fix is published for new vulnerabilities, so the "
               "pupils' data sits on software nobody patches (the dates: fleet.yaml `support:`).")
WHY_ADVISORY = ("A version in the range of a published advisory can be attacked with a known method; the fix is "
                "in the version named (fleet.yaml `support:` advisories).")


# the app's name in Catalan and Spanish titles ("de Moodle", "d'Etherpad")
_OF = {"moodle": ("de Moodle", "de Moodle"), "nextcloud": ("de Nextcloud", "de Nextcloud"),
       "etherpad": ("d'Etherpad", "de Etherpad")}


def _app_controls(app: str) -> None:
    """Register APP-RELEASE-SUPPORTED and APP-NO-KNOWN-VULNERABILITY for one app."""
    title, (ca, es) = TITLES[app], _OF[app]

    def supported(ctx: Context) -> Outcome:
        return _support(ctx, app, *running(ctx, app))

    def no_vulnerability(ctx: Context) -> Outcome:
        return _advisories(ctx, app, *running(ctx, app))

    control(f"{app.upper()}-RELEASE-SUPPORTED", app, f"The running {title} release has upstream security support",
            WHY_SUPPORT, ["32"], "high",
            titles={"ca": f"La versió {ca} en marxa té suport de seguretat",
                    "es": f"La versión {es} en marcha tiene soporte de seguridad"})(supported)
    control(f"{app.upper()}-NO-KNOWN-VULNERABILITY", app, f"The running {title} release has no known vulnerability",
            WHY_ADVISORY, ["32"], "high",
            titles={"ca": f"La versió {ca} en marxa no té vulnerabilitats conegudes",
                    "es": f"La versión {es} en marcha no tiene vulnerabilidades conocidas"})(no_vulnerability)


for _app in APPS:
    _app_controls(_app)


@control("HOST-OS-SUPPORTED", "host", "The server's OS release has security support and no known vulnerability",
         "An OS release past its security support gets no more fixes for the kernel, OpenSSH, nginx, PHP or "
         "PostgreSQL under every service of the school (the dates: fleet.yaml `support:`).", ["32"], "high",
         titles={"ca": "La versió del sistema operatiu del servidor té suport de seguretat",
                 "es": "La versión del sistema operativo del servidor tiene soporte de seguridad"})
def os_supported(ctx: Context) -> Outcome:
    found = _file(ctx, "os", OS_RELEASE)
    info = os_release(found["text"])
    os_id, version = info.get("ID", ""), info.get("VERSION_ID", "")
    shown = f"{info.get('PRETTY_NAME') or os_id or '?'} (ID={os_id or '?'}, VERSION_ID={version or '(unset)'})"
    fields = type(ctx.school.fleet.support).model_fields
    expected = f"an OS release with security support on {ctx.day.isoformat()} (fleet.yaml support.{os_id or 'debian'})"
    if not os_id or os_id not in fields:
        return verdict(False, f"{shown}: fleet.yaml support has no table for {os_id or 'this OS'} "
                              f"(it has {', '.join(fields)})", expected)
    if not version:
        return verdict(False, f"{shown}: no VERSION_ID (a testing or unstable release has no security support)",
                       expected)
    if not getattr(ctx.school.fleet.support, os_id).lines:
        return Outcome(NA, f"{shown}: fleet.yaml support.{os_id} lists no release lines to judge it by", expected)
    bad = findings(ctx.school.fleet, os_id, version, ctx.day)
    if bad:
        return verdict(False, f"{shown}; " + "; ".join(
            _why(f) if f.kind != "vulnerable" else f"affected by {f.advisory} ({f.severity}), fixed in {f.fixed}"
            for f in bad), expected)
    return verdict(True, f"{shown}; {_line_state(ctx, os_id, version)}", expected)
