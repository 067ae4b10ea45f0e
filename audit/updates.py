"""Update controls: security updates really arrive. Every verdict comes from apt and
unattended-upgrades themselves on the host (python3-apt, unattended-upgrade's own origin matcher,
apt-config, systemd), never from reading their config files:

- HOST-APT-SECURITY-SUITE: apt knows the security suite (the Release file's Origin Debian, Label
  Debian-Security, Codename <codename>-security) and its index is fresh;
- HOST-UNATTENDED-UPGRADES: unattended-upgrades would install from that origin, and runs daily;
- HOST-SECURITY-UPDATES-APPLIED: no security update is pending longer than allowed (the outcome:
  it fails whatever keeps updates away: a hold, a blacklist, a broken dpkg, timers off...);
- HOST-REBOOT-PENDING: no reboot-required flag older than allowed.

The limits are the fleet's `updates:`; the ages of pending updates come from the ledger the base
layer's apt hook keeps (deploy/base.py: LEDGER), the pending set itself is computed here.
"""

from __future__ import annotations

import datetime
import json
import re
import shlex
from typing import Any

from schoolctl.audit.catalogue import Context, Outcome, control, evidence, failed, verdict
from schoolctl.audit.host import packages, units

DAY = 86400.0
LEDGER = "/var/lib/schoolctl/security-updates.json"  # deploy/base.py: LEDGER

# Run on the host with python3 and python3-apt: one JSON object (see the keys below).
APT_STATE_PY = r'''
import contextlib, email.utils, importlib.machinery, importlib.util, io, json, os, re, sys, time
out = {"now": time.time()}
try:
    import apt_pkg
except ImportError as e:
    print(json.dumps({"error": "python3-apt is not installed (%s)" % e}))
    sys.exit(0)
apt_pkg.init()
try:
    m = re.search(r"^VERSION_CODENAME=\"?([a-z]+)", open("/etc/os-release").read(), re.M)
except OSError:
    m = None
codename = m.group(1) if m else "trixie"
SEC = ("Debian", "Debian-Security", codename + "-security")
out["suite"] = SEC[2]
lists = apt_pkg.config.find_dir("Dir::State::lists")


def fields(path):
    text = open(path, errors="replace").read()
    return {k: v.group(1).strip() for k in ("Origin", "Label", "Codename", "Suite", "Date", "Valid-Until")
            if (v := re.search(r"^%s:(.*)$" % k, text, re.M))}


def stamp(text):
    try:
        return email.utils.parsedate_to_datetime(text).timestamp()
    except (TypeError, ValueError, IndexError):
        return None


sources = []
sl = apt_pkg.SourceList()
sl.read_main_list()
for meta in sl.list:
    base = meta.uri + (meta.dist if meta.dist.endswith("/") else "dists/" + meta.dist + "/")
    release = next((p for p in (lists + apt_pkg.uri_to_filename(base + n) for n in ("InRelease", "Release"))
                    if os.path.exists(p)), None)
    f = fields(release) if release else {}
    sources.append({"uri": meta.uri, "dist": meta.dist, "release": release, "origin": f.get("Origin"),
                    "label": f.get("Label"), "codename": f.get("Codename"), "date": stamp(f.get("Date")),
                    "valid_until": stamp(f.get("Valid-Until")),
                    "mtime": os.stat(release).st_mtime if release else None})
out["sources"] = sources
cache = apt_pkg.Cache(None)
depcache = apt_pkg.DepCache(cache)
secure = [pf for pf in cache.file_list if (pf.origin, pf.label, pf.codename) == SEC]
out["indexes"] = sorted({pf.site or pf.filename for pf in secure})
uu, blacklist = None, []
try:
    loader = importlib.machinery.SourceFileLoader("unattended_upgrade", "/usr/bin/unattended-upgrade")
    uu = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    with contextlib.redirect_stdout(io.StringIO()):
        loader.exec_module(uu)
    allowed = uu.get_allowed_origins()
    blacklist = apt_pkg.config.value_list("Unattended-Upgrade::Package-Blacklist")

    class Expected:  # the security suite as its Release file says, when apt has no index of it
        origin, label, codename, archive, component, site = SEC[0], SEC[1], SEC[2], "stable-security", "main", ""

    probes = {}
    for pf in secure or [Expected()]:
        probes.setdefault(pf.site or getattr(pf, "filename", "(no index: the expected origin)"), []).append(pf)
    out["uu"] = {"allowed_origins": allowed, "blacklist": blacklist,
                 "matches": [[site, all(uu.is_allowed_origin(pf, allowed) for pf in pfs)]
                             for site, pfs in probes.items()]}
except Exception as e:
    out["uu"] = {"error": "%s: %s" % (type(e).__name__, e)}
pending = {}
for pkg in cache.packages:
    current = pkg.current_ver
    if current is None:
        continue
    best = None
    for ver in pkg.version_list:
        if any((f.origin, f.label, f.codename) == SEC for f, _ in ver.file_list) and \
                apt_pkg.version_compare(ver.ver_str, current.ver_str) > 0 and \
                (best is None or apt_pkg.version_compare(ver.ver_str, best) > 0):
            best = ver.ver_str
    if best:
        name = pkg.get_fullname(True)
        candidate = depcache.get_candidate_ver(pkg)
        listed = None
        if uu is not None:
            try:
                listed = bool(uu.is_pkgname_in_blacklist(name, blacklist))
            except Exception:
                listed = None
        pending["%s=%s" % (name, best)] = {
            "installed": current.ver_str, "candidate": candidate.ver_str if candidate else None,
            "held": pkg.selected_state == apt_pkg.SELSTATE_HOLD, "blacklisted": listed}
out["pending"] = pending
try:
    out["ledger"] = json.load(open(%(ledger)r))
except (OSError, ValueError) as e:
    out["ledger"], out["ledger_error"] = None, "%s: %s" % (type(e).__name__, e)
print(json.dumps(out))
'''.replace("%(ledger)r", repr(LEDGER))
APT_STATE = evidence("python3 -c " + shlex.quote(APT_STATE_PY))
APTCONF = evidence("apt-config dump")
REBOOT = evidence("date +%s; for f in /run/reboot-required /var/run/reboot-required; do [ -e \"$f\" ] && "
                  "stat -L -c '%Y %n' \"$f\"; done; echo @@pkgs; cat /run/reboot-required.pkgs 2>/dev/null || "
                  "cat /var/run/reboot-required.pkgs 2>/dev/null; true")
TIMERS = ("apt-daily.timer", "apt-daily-upgrade.timer")


# --- evidence, parsed -----------------------------------------------------------------------------

def apt_state(ctx: Context) -> dict[str, Any]:
    """The host's apt state (APT_STATE_PY's JSON); {"error": ...} when it could not be read."""
    res = ctx.run(APT_STATE)
    try:
        data = json.loads(res.stdout)
    except ValueError:
        return {"error": f"the apt evidence script failed ({res.rc}): {(res.stderr or res.stdout).strip()[-300:]}"}
    return data if isinstance(data, dict) else {"error": f"unexpected apt evidence: {res.stdout[:200]}"}


def apt_values(text: str) -> tuple[dict[str, str], list[str]]:
    """`apt-config dump`: (scalar values, Unattended-Upgrade::Origins-Pattern entries)."""
    values, patterns = {}, []
    for line in text.splitlines():
        m = re.match(r'^(\S+?)(::)? "(.*)";$', line.strip())
        if not m:
            continue
        if m.group(1) == "Unattended-Upgrade::Origins-Pattern" and m.group(2):
            patterns.append(m.group(3))
        else:
            values[m.group(1)] = m.group(3)
    return values, patterns


_UNIT = {"": 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}


def daily(value: str | None) -> bool:
    """An APT::Periodic interval that runs at least once a day: "always", or 1 day or less ("1",
    "12h"); "0", unset or unreadable is off."""
    if value is None:
        return False
    if value.strip() == "always":
        return True
    m = re.fullmatch(r"\s*(\d+)\s*([dhms]?)\s*", value)
    return bool(m) and 0 < int(m.group(1)) * _UNIT[m.group(2)] <= 86400


def when(ts: float | None) -> str:
    if ts is None:
        return "?"
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


def security_sources(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in data.get("sources", []) if (s.get("origin"), s.get("label"), s.get("codename"))
            == ("Debian", "Debian-Security", data.get("suite"))]


def index_age(source: dict[str, Any], now: float) -> float | None:
    """Days since the older of the index's InRelease Date (when the archive signed it) and its
    file's time (when apt stored it): a stale mirror and an apt that stopped updating both age it."""
    stamps = [t for t in (source.get("date"), source.get("mtime")) if t is not None]
    return (now - min(stamps)) / DAY if stamps else None


def parse_reboot(text: str) -> tuple[float | None, float | None, list[str]]:
    """(now, the flag's mtime or None, packages) from REBOOT's output."""
    head, _, pkgs = text.partition("@@pkgs")
    lines = head.split()
    now = float(lines[0]) if lines and lines[0].isdigit() else None
    stamps = [float(m.group(1)) for m in re.finditer(r"^(\d+) \S+$", head, re.M)]
    flag = min(stamps) if stamps else None
    return now, flag, sorted({p.strip() for p in pkgs.splitlines() if p.strip()})


def ledger_ages(data: dict[str, Any]) -> dict[str, float | None]:
    """Days each pending update has waited, from the ledger; None when the ledger does not know it."""
    now, seen = data.get("now", 0.0), ((data.get("ledger") or {}).get("pending") or {})
    ages: dict[str, float | None] = {}
    for key in data.get("pending", {}):
        first = seen.get(key)
        try:
            ts = datetime.datetime.strptime(first, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC).timestamp()
            ages[key] = max(0.0, (now - ts) / DAY)
        except (TypeError, ValueError):
            ages[key] = None
    return ages


# --- controls -------------------------------------------------------------------------------------

@control("HOST-APT-SECURITY-SUITE", "host", "apt has the security suite, with a fresh index",
         "Without Debian's security suite, or with an old copy of its index, no security fix can ever be installed.",
         ["32"], "high", titles={"ca": "apt té el repositori de seguretat, amb l'índex al dia",
                                 "es": "apt tiene el repositorio de seguridad, con el índice al día"})
def security_suite(ctx: Context) -> Outcome:
    limit = ctx.school.fleet.updates.index_max_age_days
    data = apt_state(ctx)
    suite = data.get("suite", "trixie-security")
    expected = (f"apt knows Origin Debian, Label Debian-Security, Codename {suite}, each index of it at most "
                f"{limit} day(s) old (updates.index_max_age_days; the older of its InRelease Date and the file's time)")
    if "error" in data:
        return failed(data["error"], expected)
    found = security_sources(data)
    if not found:
        seen = "; ".join(f"{s['uri']} {s['dist']} ({s.get('label') or 'not fetched'})" for s in data["sources"])
        return failed(f"apt knows no {suite} suite of Debian-Security; its sources: {seen or 'none'}", expected)
    now, shown, fresh = data["now"], [], True
    for s in found:  # each one: a security source that stopped syncing is stale even beside a fresh one
        age = index_age(s, now)
        ok = age is not None and age <= limit
        fresh = fresh and ok
        shown.append(f"{suite} from {s['uri']}: InRelease Date {when(s.get('date'))}, stored {when(s.get('mtime'))}, "
                     + (f"{age:.1f} days old" if age is not None else "age unknown")
                     + (f", valid until {when(s['valid_until'])}" if s.get("valid_until") else "")
                     + ("" if ok else f" (stale: older than {limit} day(s))"))
    return verdict(fresh, "; ".join(shown), expected)


@control("HOST-UNATTENDED-UPGRADES", "host", "Security updates install themselves every day",
         "Known holes closed within a day are the cheapest protection a school server gets.",
         ["32"], "high", titles={"ca": "Actualitzacions de seguretat automàtiques",
                                 "es": "Actualizaciones de seguridad automáticas"})
def unattended(ctx: Context) -> Outcome:
    values, _ = apt_values(ctx.run(APTCONF).stdout)
    data, found = apt_state(ctx), units(ctx)[0]
    suite = data.get("suite", "trixie-security")
    installed = "unattended-upgrades" in packages(ctx)
    lists = values.get("APT::Periodic::Update-Package-Lists")
    upgrade = values.get("APT::Periodic::Unattended-Upgrade")
    uu = data.get("uu") or {"error": data.get("error", "no answer")}
    matches = uu.get("matches") or []
    refused = [site for site, ok in matches if not ok]
    causes = []
    if not installed:
        causes.append("unattended-upgrades not installed")
    if not daily(lists):
        causes.append(f"Update-Package-Lists {lists or '(unset)'}")
    if not daily(upgrade):
        causes.append(f"Unattended-Upgrade {upgrade or '(unset)'}")
    if "error" in uu:
        causes.append(f"unattended-upgrade's origin matcher cannot be asked: {uu['error']}")
    elif not matches or refused:
        causes.append(f"unattended-upgrade would not install from {suite} ({', '.join(refused) or 'no origin'}); "
                      f"its allowed origins: {uu.get('allowed_origins')}")
    timers = []
    for t in TIMERS:
        u = found.get(t, {})
        timers.append(f"{t} {u.get('unitfilestate', '?')}/{u.get('activestate', '?')}")
        if u.get("unitfilestate") != "enabled" or u.get("activestate") != "active":
            causes.append(f"{t} {u.get('unitfilestate', '?')}/{u.get('activestate', '?')}")
    allowed = ", ".join(f"{site}: {'allowed' if ok else 'NOT allowed'}" for site, ok in matches) or "none"
    observed = (f"package {'installed' if installed else 'absent'}; Update-Package-Lists {lists or '(unset)'}; "
                f"Unattended-Upgrade {upgrade or '(unset)'}; unattended-upgrade's matcher for {suite}: {allowed}; "
                + "; ".join(timers))
    return verdict(not causes, (f"cause: {'; '.join(causes)} -- " if causes else "") + observed,
                   f"unattended-upgrades installed; Update-Package-Lists and Unattended-Upgrade daily; "
                   f"unattended-upgrade's own matcher allows the {suite} origin (Debian, Debian-Security); "
                   f"{' and '.join(TIMERS)} enabled and active")


@control("HOST-SECURITY-UPDATES-APPLIED", "host", "No security update waits longer than allowed",
         "An update that is published but never installed protects nobody; this catches every reason it stays out.",
         ["32"], "high", titles={"ca": "Cap actualització de seguretat espera més del permès",
                                 "es": "Ninguna actualización de seguridad espera más de lo permitido"})
def security_applied(ctx: Context) -> Outcome:
    limit = ctx.school.fleet.updates.security_within_days
    data = apt_state(ctx)
    suite = data.get("suite", "trixie-security")
    expected = f"no update from {suite} pending longer than {limit} day(s) (updates.security_within_days)"
    if "error" in data:
        return failed(data["error"], expected)
    if not data.get("indexes"):
        return failed(f"apt has no index of {suite}: pending security updates cannot be known "
                      "(see HOST-APT-SECURITY-SUITE)", expected)
    pending, ages = data.get("pending", {}), ledger_ages(data)
    if not pending:
        return verdict(True, f"no security update pending (apt's {suite} index from {', '.join(data['indexes'])})",
                       expected)
    late, shown = [], []
    for key in sorted(pending):
        p, age = pending[key], ages[key]
        why = [w for w, on in (("held", p.get("held")), ("in Package-Blacklist", p.get("blacklisted"))) if on]
        if p.get("candidate") and p["candidate"] != key.split("=", 1)[1]:
            why.append(f"apt's candidate is {p['candidate']}")
        over = age is not None and age > limit
        late += [key] if over else []
        shown.append(f"{key} (installed {p.get('installed')}; "
                     + (f"pending {age:.1f} days" if age is not None else "not in the ledger yet: seen now, 0 days")
                     + (f", over {limit}" if over else "") + "".join(f"; {w}" for w in why) + ")")
    if data.get("ledger") is None:
        shown.append(f"no ledger ({data.get('ledger_error', 'unreadable')})")
    head = (f"{len(late)} of {len(pending)} pending security update(s) waiting longer than {limit} day(s): "
            if late else f"{len(pending)} pending security update(s), none waiting longer than {limit} day(s): ")
    return verdict(not late, head + "; ".join(shown), expected)


@control("HOST-REBOOT-PENDING", "host", "A reboot that updates need is not left pending",
         "A fixed kernel or C library protects nothing until the server restarts into it.",
         ["32"], "medium", titles={"ca": "Cap reinici necessari queda pendent massa temps",
                                   "es": "Ningún reinicio necesario queda pendiente demasiado tiempo"})
def reboot_pending(ctx: Context) -> Outcome:
    limit = ctx.school.fleet.updates.reboot_within_days
    expected = f"no reboot-required flag older than {limit} day(s) (updates.reboot_within_days)"
    now, flag, pkgs = parse_reboot(ctx.run(REBOOT).stdout)
    if flag is None:
        return verdict(True, "no /run/reboot-required flag", expected)
    age = ((now or flag) - flag) / DAY
    return verdict(age <= limit, f"/run/reboot-required since {when(flag)} ({age:.1f} days); packages: "
                                 f"{', '.join(pkgs) or '(reboot-required.pkgs empty)'}", expected)
