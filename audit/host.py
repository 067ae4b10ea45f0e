"""Host controls: time, log retention, telemetry, technicians' accounts (the SSH controls are in
ssh.py, the firewall's in firewall.py, the update controls in updates.py). Every expected value
comes from the school's effective config."""

from __future__ import annotations

import re
import shlex
from typing import Any

from schoolctl.audit.catalogue import Context, Expect, Outcome, control, evidence, failed, parse_kv, verdict

JOURNALD = evidence("systemd-analyze cat-config systemd/journald.conf")
TIMESYNCD = evidence("systemd-analyze cat-config systemd/timesyncd.conf")
LOGROTATE = evidence("for f in /etc/logrotate.conf /etc/logrotate.d/*; do [ -f \"$f\" ] && "
                     "{ echo \"@@file $f\"; cat \"$f\"; }; done; true")
UNITS = evidence("systemctl show -p Id,UnitFileState,ActiveState,ConditionResult unattended-upgrades.service "
                 "apt-daily-upgrade.timer apt-daily.timer systemd-timesyncd.service; echo; systemd-detect-virt; true")
TELEMETRY = ("popularity-contest", "apport", "whoopsie", "ubuntu-report", "apport-noui", "kerneloops")
PKGS = evidence("dpkg-query -W -f='${Package} ${db:Status-Abbrev}\\n' unattended-upgrades "
                + " ".join(TELEMETRY) + " 2>/dev/null; true")


def _admins_cmd(school: Any, expect: Expect) -> list[str]:
    names = " ".join(shlex.quote(a.name) for a in school.admins)
    return [f"for u in {names}; do echo \"@@user $u\"; getent shadow \"$u\" | cut -d: -f1,2; "
            "h=$(getent passwd \"$u\" | cut -d: -f6); [ -n \"$h\" ] && cat \"$h/.ssh/authorized_keys\" "
            "\"$h/.ssh/authorized_keys2\" 2>/dev/null; done; true"]


ADMINS = evidence(_admins_cmd)


# --- units, packages, time -----------------------------------------------------------------------

def units(ctx: Context) -> tuple[dict[str, dict[str, str]], str]:
    text = ctx.run(UNITS).stdout
    blocks, found = text.strip().split("\n\n"), {}
    for block in blocks:
        kv = parse_kv(block, "=")
        if "id" in kv:
            found[kv["id"]] = kv
    virt = blocks[-1].strip().splitlines()[-1] if blocks else ""
    return found, virt


def packages(ctx: Context) -> set[str]:
    return {line.split()[0] for line in ctx.run(PKGS).stdout.splitlines()
            if len(line.split()) > 1 and line.split()[1].startswith("ii")}


def _last_setting(text: str, section: str, key: str) -> str | None:
    current, value = "", None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("["):
            current = line.strip("[]")
        elif current == section and line.startswith(f"{key}="):
            value = line.split("=", 1)[1].strip()
    return value


@control("HOST-TIME-SYNC", "host", "The clock is kept in sync (with the city's NTP servers)",
         "Logs, certificates and retention deadlines are only as right as the clock.",
         ["32"], "low", titles={"ca": "Rellotge sincronitzat", "es": "Reloj sincronizado"})
def time_sync(ctx: Context) -> Outcome:
    u, virt = units(ctx)
    t = u.get("systemd-timesyncd.service", {})
    enabled, active = t.get("unitfilestate") == "enabled", t.get("activestate") == "active"
    container = virt not in ("", "none") and t.get("conditionresult") == "no"
    ntp = _last_setting(ctx.run(TIMESYNCD).stdout, "Time", "NTP") or ""
    wanted = list(ctx.school.fleet.ntp) if not ctx.school.server.lab_name else []
    ok = enabled and (active or container) and all(s in ntp.split() for s in wanted)
    observed = (f"systemd-timesyncd {t.get('unitfilestate', '?')}/{t.get('activestate', '?')}"
                + (f" (in a {virt} container the host's clock is used: condition not met)" if container else "")
                + f"; NTP={ntp or '(distribution default)'}")
    expected = "systemd-timesyncd enabled and active" + (f", NTP servers {' '.join(wanted)}" if wanted else "")
    return verdict(ok, observed, expected)


# --- log retention --------------------------------------------------------------------------------

_SPAN = {"us": 1e-6, "usec": 1e-6, "ms": 1e-3, "msec": 1e-3, "s": 1, "sec": 1, "second": 1, "seconds": 1,
         "m": 60, "min": 60, "minute": 60, "minutes": 60, "h": 3600, "hr": 3600, "hour": 3600, "hours": 3600,
         "d": 86400, "day": 86400, "days": 86400, "w": 604800, "week": 604800, "weeks": 604800,
         "M": 2629800, "month": 2629800, "months": 2629800, "y": 31557600, "year": 31557600, "years": 31557600}


def timespan_seconds(text: str) -> float:
    """A systemd time span ('7day', '1w 2d', '3600') in seconds; ValueError when unreadable."""
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([A-Za-z]*)", text.strip())
    if not parts or re.sub(r"[\d.\sA-Za-z]", "", text):
        raise ValueError(f"not a time span: {text!r}")
    return sum(float(n) * _SPAN[u or "s"] for n, u in parts)


@control("HOST-JOURNALD-RETENTION", "host", "journald keeps logs no longer than the school's retention",
         "System logs hold user names and addresses; keeping them longer than needed breaks storage limitation.",
         ["5(1)(e)"], "medium", titles={"ca": "journald no guarda registres més del permès",
                                        "es": "journald no guarda registros más de lo permitido"})
def journald(ctx: Context) -> Outcome:
    days = ctx.policy.log_retention_days
    value = _last_setting(ctx.run(JOURNALD).stdout, "Journal", "MaxRetentionSec")
    try:
        seconds = timespan_seconds(value) if value else 0.0
    except (ValueError, KeyError):
        return failed(f"MaxRetentionSec={value} (unreadable)", f"MaxRetentionSec <= {days} days")
    ok = 0 < seconds <= days * 86400
    shown = f"MaxRetentionSec={value} ({seconds / 86400:g} days)" if value else "MaxRetentionSec unset (no time limit)"
    return verdict(ok, f"systemd-analyze cat-config systemd/journald.conf: {shown}",
                   f"MaxRetentionSec <= {days} days (privacy.log_retention_days)")


_PERIOD = {"hourly": 1 / 24, "daily": 1, "weekly": 7, "monthly": 30, "yearly": 365}


def logrotate_stanzas(text: str) -> list[tuple[str, float | None, str]]:
    """(log paths, days kept, why) for each stanza of logrotate.conf and its includes, with the
    global defaults that precede each include. Days kept = min(rotate x period, maxage)."""
    files: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("@@file "):
            current = line[7:].strip()
            files[current] = []
        elif current:
            files[current].append(line)

    def days_of(opts: dict[str, Any]) -> tuple[float | None, str]:
        period, rotate, maxage = _PERIOD[opts.get("period", "weekly")], opts.get("rotate"), opts.get("maxage")
        kept = [v for v in ((rotate * period) if rotate is not None else None, maxage) if v is not None]
        why = f"{opts.get('period', 'weekly')}, rotate {rotate}" + (f", maxage {maxage}" if maxage else "")
        return (min(kept) if kept else None), why

    out: list[tuple[str, float | None, str]] = []

    def parse(lines: list[str], defaults: dict[str, Any], top: bool) -> dict[str, Any]:
        glob = dict(defaults)
        opts: dict[str, Any] | None = None
        paths = ""
        for raw in lines:
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            if line.endswith("{"):
                paths, opts = line[:-1].strip(), dict(glob)
                continue
            if line == "}" and opts is not None:
                kept, why = days_of(opts)
                out.append((paths, kept, why))
                opts = None
                continue
            target = opts if opts is not None else glob
            word, *args = line.split()
            if word in _PERIOD:
                target["period"] = word
            elif word == "rotate" and args:
                target["rotate"] = int(args[0])
            elif word == "maxage" and args:
                target["maxage"] = int(args[0])
            elif word == "include" and args and top and opts is None:
                for name, body in files.items():
                    if name.startswith(args[0].rstrip("/") + "/"):
                        parse(body, glob, False)
        return glob

    main = files.get("/etc/logrotate.conf", [])
    parse(main, {}, True)
    return out


@control("HOST-LOGROTATE-RETENTION", "host", "Rotated logs are kept no longer than the school's retention",
         "Web and application logs hold addresses and page visits; logrotate must delete them in time.",
         ["5(1)(e)"], "medium", titles={"ca": "logrotate no guarda registres més del permès",
                                        "es": "logrotate no guarda registros más de lo permitido"})
def logrotate(ctx: Context) -> Outcome:
    days = ctx.policy.log_retention_days
    stanzas = logrotate_stanzas(ctx.run(LOGROTATE).stdout)
    if not stanzas:
        return failed("no logrotate stanza found in /etc/logrotate.conf and /etc/logrotate.d", f"<= {days} days")
    over = [(p, d, w) for p, d, w in stanzas if d is None or d > days]
    shown = "; ".join(f"{p}: {'unlimited' if d is None else f'{d:g} days'} ({w})" for p, d, w in (over or stanzas))
    return verdict(not over, ("too long: " if over else "all within the limit: ") + shown,
                   f"every stanza keeps <= {days} days (privacy.log_retention_days)")


# --- telemetry, accounts ----------------------------------------------------------------------------

@control("HOST-NO-TELEMETRY", "host", "No telemetry packages (popularity-contest, apport, ...)",
         "They send the list of installed software or crash dumps (which may hold personal data) to third parties.",
         ["5(1)(c)", "44"], "medium", titles={"ca": "Sense paquets de telemetria",
                                              "es": "Sin paquetes de telemetría"})
def telemetry(ctx: Context) -> Outcome:
    found = sorted(packages(ctx) & set(TELEMETRY))
    return verdict(not found, f"installed: {', '.join(found)}" if found else "none of them installed",
                   f"none of {', '.join(TELEMETRY)} installed")


def admin_accounts(ctx: Context) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    user = None
    for line in ctx.run(_admins_cmd(ctx.school, ctx.expect)[0]).stdout.splitlines():
        if line.startswith("@@user "):
            user = line[7:].strip()
            found[user] = {"shadow": None, "keys": []}
        elif user and line.startswith(f"{user}:") and found[user]["shadow"] is None:
            found[user]["shadow"] = line.split(":", 1)[1]
        elif user and line.strip() and not line.startswith("#"):
            found[user]["keys"].append(line.strip())
    return found


def _key_id(line: str) -> str:
    parts = line.split()
    for i, p in enumerate(parts):
        if p.startswith(("ssh-", "ecdsa-", "sk-")) and i + 1 < len(parts):
            return f"{p} {parts[i + 1]}"
    return line


@control("HOST-ADMIN-NO-PASSWORD", "host", "Technicians' accounts have no password",
         "A password hash can be cracked offline and used locally (console, sudo); technicians log in with keys.",
         ["32"], "high", titles={"ca": "Els comptes dels tècnics no tenen contrasenya",
                                 "es": "Las cuentas de los técnicos no tienen contraseña"})
def admin_no_password(ctx: Context) -> Outcome:
    accounts, bad, seen = admin_accounts(ctx), [], []
    for a in ctx.school.admins:
        field = (accounts.get(a.name) or {}).get("shadow")
        if field is None:
            bad.append(f"{a.name}: no account")
            continue
        kind = "empty password" if field == "" else "password hash" if "$" in field else f"locked ({field})"
        seen.append(f"{a.name}: {kind}")
        if field == "" or "$" in field:
            bad.append(f"{a.name}: {kind}")
    return verdict(not bad, "/etc/shadow: " + "; ".join(seen + [b for b in bad if "no account" in b]),
                   "each technician's password field locked ('!' or '*'), never a hash or empty")


@control("HOST-ADMIN-KEYS", "host", "Technicians' authorized keys are exactly the fleet's",
         "An unknown key is an unknown person with root on a server holding pupils' data.",
         ["32"], "high", titles={"ca": "Les claus dels tècnics són exactament les de la flota",
                                 "es": "Las claves de los técnicos son exactamente las de la flota"})
def admin_keys(ctx: Context) -> Outcome:
    accounts, bad, seen = admin_accounts(ctx), [], []
    for a in ctx.school.admins:
        have = {_key_id(k) for k in (accounts.get(a.name) or {}).get("keys", [])}
        want = {_key_id(k) for k in a.ssh_keys}
        seen.append(f"{a.name}: {len(have)} key(s)")
        if want - have:
            bad.append(f"{a.name}: {len(want - have)} configured key(s) missing")
        if have - want:
            extra = ", ".join(k.split()[0] + " ..." + k.split()[-1][-12:] for k in sorted(have - want))
            bad.append(f"{a.name}: unknown key(s) {extra}")
    return verdict(not bad, "; ".join(bad or seen), "authorized_keys of each technician = the keys in the config")
