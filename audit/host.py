"""Host controls: SSH, firewall (inbound and egress), updates, time, log retention, telemetry,
technicians' accounts. Every expected value comes from the school's effective config."""

from __future__ import annotations

import json
import re
import shlex
from typing import Any

from schoolctl.audit.catalogue import Context, Expect, Outcome, control, evidence, failed, parse_kv, passed, verdict

SSHD = evidence("sshd -T")
NFT = evidence("nft -j list ruleset")
JOURNALD = evidence("systemd-analyze cat-config systemd/journald.conf")
TIMESYNCD = evidence("systemd-analyze cat-config systemd/timesyncd.conf")
LOGROTATE = evidence("for f in /etc/logrotate.conf /etc/logrotate.d/*; do [ -f \"$f\" ] && "
                     "{ echo \"@@file $f\"; cat \"$f\"; }; done; true")
APTCONF = evidence("apt-config dump")
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


def sshd(ctx: Context) -> dict[str, str]:
    res = ctx.run(SSHD)
    if res.rc != 0:
        raise RuntimeError(f"sshd -T failed: {res.stderr.strip()[-300:]}")
    return parse_kv(res.stdout)


def _sshd_values(ctx: Context, keys: list[str]) -> str:
    conf = sshd(ctx)
    return ", ".join(f"{k} {conf.get(k, '(unset)')}" for k in keys)


# --- SSH ---------------------------------------------------------------------------------------

@control("HOST-SSH-NO-PASSWORD", "host", "SSH accepts no passwords",
         "Password logins can be guessed or phished; keys cannot be brute-forced from the network.",
         ["32"], "high", titles={"ca": "SSH no accepta contrasenyes", "es": "SSH no acepta contraseñas"})
def ssh_no_password(ctx: Context) -> Outcome:
    conf = sshd(ctx)
    ok = conf.get("passwordauthentication") == "no" and conf.get("kbdinteractiveauthentication") == "no"
    return verdict(ok, "sshd -T: " + _sshd_values(ctx, ["passwordauthentication", "kbdinteractiveauthentication"]),
                   "passwordauthentication no, kbdinteractiveauthentication no")


@control("HOST-SSH-ROOT-NO-PASSWORD", "host", "root cannot log in over SSH with a password",
         "root is the first account attackers try; if it logs in at all it must be with a key.",
         ["32"], "high", titles={"ca": "root no entra per SSH amb contrasenya",
                                 "es": "root no entra por SSH con contraseña"})
def ssh_root(ctx: Context) -> Outcome:
    value = sshd(ctx).get("permitrootlogin", "(unset)")
    return verdict(value in ("no", "prohibit-password", "without-password", "forced-commands-only"),
                   f"sshd -T: permitrootlogin {value}", "permitrootlogin no or prohibit-password")


@control("HOST-SSH-KEY-ONLY", "host", "SSH authentication is by public key only",
         "Only technicians holding a registered key may log in to a server holding pupils' data.",
         ["32"], "high", titles={"ca": "SSH només amb clau pública", "es": "SSH solo con clave pública"})
def ssh_key_only(ctx: Context) -> Outcome:
    conf = sshd(ctx)
    methods = conf.get("authenticationmethods", "any")
    ok = methods == "publickey" and conf.get("pubkeyauthentication") == "yes"
    return verdict(ok, "sshd -T: " + _sshd_values(ctx, ["authenticationmethods", "pubkeyauthentication"]),
                   "authenticationmethods publickey, pubkeyauthentication yes")


@control("HOST-SSH-NO-EMPTY-PASSWORDS", "host", "SSH refuses accounts with empty passwords",
         "An account without a password would be open to anyone who can reach the server.",
         ["32"], "high", titles={"ca": "SSH rebutja contrasenyes buides", "es": "SSH rechaza contraseñas vacías"})
def ssh_empty(ctx: Context) -> Outcome:
    value = sshd(ctx).get("permitemptypasswords", "(unset)")
    return verdict(value == "no", f"sshd -T: permitemptypasswords {value}", "permitemptypasswords no")


MAX_AUTH_TRIES = 3  # DevSec ssh-baseline and Lynis SSH-7408


@control("HOST-SSH-MAX-AUTH-TRIES", "host", f"SSH allows at most {MAX_AUTH_TRIES} authentication attempts",
         "Few attempts per connection slow down guessing and keep the logs readable.",
         ["32"], "medium", titles={"ca": "SSH limita els intents d'autenticació",
                                   "es": "SSH limita los intentos de autenticación"})
def ssh_max_auth(ctx: Context) -> Outcome:
    value = sshd(ctx).get("maxauthtries", "(unset)")
    ok = value.isdigit() and 0 < int(value) <= MAX_AUTH_TRIES
    return verdict(ok, f"sshd -T: maxauthtries {value}", f"maxauthtries <= {MAX_AUTH_TRIES} (DevSec/Lynis baseline)")


@control("HOST-SSH-NO-FORWARDING", "host", "SSH forwards no ports, agents, X11 or tunnels",
         "Forwarding turns the school server into a relay into (or out of) the school network.",
         ["32"], "medium", titles={"ca": "SSH sense reenviaments", "es": "SSH sin reenvíos"})
def ssh_forwarding(ctx: Context) -> Outcome:
    conf = sshd(ctx)
    keys = ["allowtcpforwarding", "allowagentforwarding", "x11forwarding", "permittunnel"]
    return verdict(all(conf.get(k) == "no" for k in keys), "sshd -T: " + _sshd_values(ctx, keys),
                   ", ".join(f"{k} no" for k in keys))


# --- firewall ----------------------------------------------------------------------------------

def ruleset(ctx: Context) -> list[dict[str, Any]]:
    res = ctx.run(NFT)
    if res.rc != 0:
        raise RuntimeError(f"nft -j list ruleset failed: {res.stderr.strip()[-300:]}")
    return json.loads(res.stdout or '{"nftables": []}')["nftables"]


def _values(right: Any) -> list[Any] | None:
    """A match's right side as a list of single values; None when it is a prefix, range or map."""
    if isinstance(right, dict) and "set" in right:
        right = right["set"]
    items = right if isinstance(right, list) else [right]
    return None if any(isinstance(i, dict) for i in items) else items


def _rule_scope(expr: list[dict[str, Any]], hook: str) -> str | list[tuple[str, str, int]] | None:
    """What one accepting rule lets through. 'lo', 'ct', 'icmp' for the harmless ones; a list of
    (proto, address, port) (address '*' on input) when it is narrow; None when it is broad."""
    proto: list[str] = []
    addrs: list[str] | None = None
    ports: list[int] | None = None
    sports: list[tuple[str, int]] = []
    for e in expr:
        m = e.get("match")
        if not m:
            continue
        left, op, vals = m["left"], m["op"], _values(m["right"])
        if op not in ("==", "in"):
            continue  # a negated match narrows nothing we can rely on
        meta, ct, payload = left.get("meta", {}), left.get("ct", {}), left.get("payload", {})
        if meta.get("key") in ("iif", "oif", "iifname", "oifname") and vals == ["lo"]:
            return "lo"
        if ct.get("key") == "state" and vals and set(vals) <= {"established", "related"}:
            return "ct"
        if meta.get("key") == "l4proto" and vals and set(vals) <= {"icmp", "ipv6-icmp"}:
            return "icmp"
        if meta.get("key") == "l4proto" and vals:
            proto = [str(v) for v in vals]
        field = payload.get("field")
        if field == "daddr" and payload.get("protocol") in ("ip", "ip6"):
            addrs = None if vals is None else [str(v) for v in vals]
            if vals is None:
                return None
        if field == "dport":
            if vals is None:
                return None
            proto = [payload.get("protocol", "tcp")]
            ports = [int(v) for v in vals]
        if field == "sport" and vals is not None:
            sports = [(payload.get("protocol", "tcp"), int(v)) for v in vals]
    if hook == "output" and sports and ports is None and addrs is None:
        return [("reply", p, port) for p, port in sports]
    if ports is None or (hook == "output" and addrs is None):
        return None
    return [(p, a, port) for p in proto for a in (addrs or ["*"]) for port in ports]


def _chains(rules: list[dict[str, Any]], hook: str) -> list[dict[str, Any]]:
    """Base chains on `hook`, each with its rules (jumped-to chains' rules inlined) and whether it
    drops by default (policy drop, or an unconditional drop/reject before the end)."""
    chains = {(c["family"], c["table"], c["name"]): dict(c, rules=[])
              for x in rules if (c := x.get("chain"))}
    for x in rules:
        if (r := x.get("rule")) and (key := (r["family"], r["table"], r["chain"])) in chains:
            chains[key]["rules"].append(r["expr"])

    def flatten(key: tuple[str, str, str], depth: int = 0) -> tuple[list[list[dict[str, Any]]], bool]:
        out, closed = [], False
        for expr in chains[key]["rules"]:
            verdicts = [k for e in expr for k in e if k in ("accept", "drop", "reject", "jump", "goto")]
            if any("match" in e for e in expr) is False and verdicts and verdicts[-1] in ("drop", "reject"):
                closed = True
                break
            target = next((e.get("jump") or e.get("goto") for e in expr if "jump" in e or "goto" in e), None)
            if target and depth < 5 and (sub := (key[0], key[1], target["target"])) in chains:
                out += flatten(sub, depth + 1)[0]
            elif "accept" in verdicts:
                out.append(expr)
        return out, closed

    found = []
    for key, c in chains.items():
        if c.get("hook") != hook:
            continue
        accepts, closed = flatten(key)
        found.append({"family": c["family"], "table": c["table"], "name": c["name"],
                      "drop": c.get("policy") == "drop" or closed, "accepts": accepts})
    return found


def _families(family: str) -> set[str]:
    return {"inet": {"ipv4", "ipv6"}, "ip": {"ipv4"}, "ip6": {"ipv6"}}.get(family, set())


def firewall(ctx: Context, hook: str, allowed: set[tuple[str, str, int]]) -> tuple[bool, str]:
    """Whether every IP family meets a default-drop `hook` chain whose accepts stay within `allowed`;
    and the evidence. On output, a rule accepting packets FROM the port of one of the school's own
    inbound services (its replies, `tcp sport 443 accept`) is allowed and shown as such."""
    inbound = set(ctx.expect.inbound)
    chains = _chains(ruleset(ctx), hook)
    covered: set[str] = set()
    notes = []
    for c in chains:
        extra: list[str] = []
        opened: list[str] = []
        replies: list[str] = []
        for expr in c["accepts"]:
            scope = _rule_scope(expr, hook)
            if scope is None:
                extra.append("a broad accept rule (no exact address and port)")
            elif isinstance(scope, list) and scope and scope[0][0] == "reply":
                for _, p, port in scope:
                    replies.append(f"{p} {port}")
                    if (p, port) not in inbound:
                        extra.append(f"anything from {p} port {port} (not a service of the school)")
            elif isinstance(scope, list):
                for p, a, port in scope:
                    item = f"{p} {port}" if hook == "input" else f"{p} {a}:{port}"
                    opened.append(item)
                    if (p, a, port) not in allowed:
                        extra.append(item)
        name = f"{c['family']} {c['table']} {c['name']}"
        policy = "drop" if c["drop"] else "accept"
        notes.append(f"{name}: policy {policy}; accepts {', '.join(opened) or 'nothing'} (+ lo, established, icmp"
                     + (f", replies from the school's own {', '.join(replies)}" if replies else "") + ")"
                     + (f"; NOT ALLOWED: {', '.join(dict.fromkeys(extra))}" if extra else ""))
        if c["drop"] and not extra:
            covered |= _families(c["family"])
    if not chains:
        notes.append(f"no nftables chain on the {hook} hook")
    return covered >= {"ipv4", "ipv6"}, "; ".join(notes)


@control("HOST-FIREWALL-INBOUND", "host", "Inbound traffic is dropped but for the school's service ports",
         "Every open port is a way in to pupils' data; only the services the school runs may be reachable.",
         ["32", "25"], "high", titles={"ca": "Tallafoc d'entrada: només els ports dels serveis",
                                       "es": "Cortafuegos de entrada: solo los puertos de los servicios"})
def firewall_inbound(ctx: Context) -> Outcome:
    allowed = {(p, "*", port) for p, port in ctx.expect.inbound}
    ok, observed = firewall(ctx, "input", allowed)
    ports = ", ".join(f"{p} {port}" for p, port in ctx.expect.inbound)
    return verdict(ok, f"nft -j list ruleset: {observed}", f"input policy drop; accept only {ports}")


@control("HOST-EGRESS-DENY", "host", "Outbound traffic is dropped but for the city's allow-list",
         "Apps' own 'offline' switches are not a guarantee (some plugins ignore them): only the firewall "
         "can promise that no pupil data leaves the city's servers.",
         ["44", "25", "32"], "high", titles={"ca": "Trànsit de sortida: només la llista permesa",
                                             "es": "Tráfico de salida: solo la lista permitida"})
def egress(ctx: Context) -> Outcome:
    allowed = set(ctx.expect.outbound)
    listed = ", ".join(f"{p} {a}:{port}" for p, a, port in ctx.expect.outbound) or "nothing"
    if ctx.policy.outbound == "allow":
        _, observed = firewall(ctx, "output", allowed)
        return passed(f"{observed}. The school's policy (privacy.outbound: allow) allows outbound traffic",
                      "privacy.outbound: allow, so no egress filter is required")
    ok, observed = firewall(ctx, "output", allowed)
    return verdict(ok, f"nft -j list ruleset: {observed}",
                   f"output policy drop; accept only the allow-list: {listed}{ctx.expect.outbound_note} "
                   "(and replies from the ports of the school's own inbound services)")


# --- updates, time -------------------------------------------------------------------------------

def _apt(ctx: Context) -> tuple[dict[str, str], list[str]]:
    values, patterns = {}, []
    for line in ctx.run(APTCONF).stdout.splitlines():
        m = re.match(r'^(\S+?)(::)? "(.*)";$', line.strip())
        if not m:
            continue
        if m.group(1) == "Unattended-Upgrade::Origins-Pattern" and m.group(2):
            patterns.append(m.group(3))
        else:
            values[m.group(1)] = m.group(3)
    return values, patterns


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


@control("HOST-UNATTENDED-UPGRADES", "host", "Security updates install themselves every day",
         "Known holes closed within a day are the cheapest protection a school server gets.",
         ["32"], "high", titles={"ca": "Actualitzacions de seguretat automàtiques",
                                 "es": "Actualizaciones de seguridad automáticas"})
def unattended(ctx: Context) -> Outcome:
    values, patterns = _apt(ctx)
    u, _ = units(ctx)
    timer = u.get("apt-daily-upgrade.timer", {})
    installed = "unattended-upgrades" in packages(ctx)
    security = [p for p in patterns if "security" in p.lower()]
    ok = (installed and values.get("APT::Periodic::Unattended-Upgrade") == "1"
          and values.get("APT::Periodic::Update-Package-Lists") == "1" and bool(security)
          and timer.get("unitfilestate") == "enabled" and timer.get("activestate") == "active")
    observed = (f"package {'installed' if installed else 'absent'}; "
                f"Update-Package-Lists {values.get('APT::Periodic::Update-Package-Lists', '(unset)')}; "
                f"Unattended-Upgrade {values.get('APT::Periodic::Unattended-Upgrade', '(unset)')}; "
                f"security origins {sorted(set(security)) or 'none'}; apt-daily-upgrade.timer "
                f"{timer.get('unitfilestate', '?')}/{timer.get('activestate', '?')}")
    return verdict(ok, observed, "unattended-upgrades installed; Update-Package-Lists 1; Unattended-Upgrade 1; "
                                 "a Debian-Security origin; apt-daily-upgrade.timer enabled and active")


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
