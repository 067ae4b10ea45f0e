"""BigBlueButton controls, reading BBB's files: the effective value of a key is the override's
(/etc/bigbluebutton/...) when it sets it, else the packaged default's. They run against the host the
audit connects to: the BBB host for a school with its own (the runner's business), and n/a for a
school on the city pool (the pool is audited as the city's)."""

from __future__ import annotations

import re
from typing import Any

from schoolctl.audit.catalogue import Context, Outcome, control, evidence, verdict

WEB_DEFAULT = "/usr/share/bbb-web/WEB-INF/classes/bigbluebutton.properties"
WEB_OVERRIDE = "/etc/bigbluebutton/bbb-web.properties"
HTML5_DEFAULTS = ("/usr/share/bigbluebutton/html5-client/private/config/settings.yml",
                  "/usr/share/meteor/bundle/programs/server/assets/app/config/settings.yml")
HTML5_OVERRIDE = "/etc/bigbluebutton/bbb-html5.yml"
TURN_FILES = ("/etc/bigbluebutton/turn-stun-servers.xml",
              "/usr/share/bbb-web/WEB-INF/classes/spring/turn-stun-servers.xml")
CRON = "/etc/cron.daily/bigbluebutton"
CRON_CONFIG = "/etc/default/bigbluebutton-cron-config"
RETENTION = "/etc/cron.daily/schoolctl-bbb-retention"
PLACEHOLDER = "330a8b08c3b4c61533e1d0c5ce1ac88f"   # upstream's template securitySalt


def _files(*paths: str) -> str:
    return "; ".join(f"echo '@@{p}'; cat {p} 2>/dev/null || echo '!missing'" for p in paths)


# securitySalt is never part of the evidence: only its length and whether it is the placeholder
WEB = evidence("; ".join(f"echo '@@{p}'; grep -v '^[[:space:]]*securitySalt' {p} 2>/dev/null || echo '!missing'"
                         for p in (WEB_DEFAULT, WEB_OVERRIDE)))
SALT = evidence(f"v=$(cat {WEB_DEFAULT} {WEB_OVERRIDE} 2>/dev/null | sed -n 's/^[[:space:]]*securitySalt=//p' "
                f"| tail -n1);"
                f" echo \"length=${{#v}} placeholder=$([ \"$v\" = {PLACEHOLDER} ] && echo yes || echo no)\"")
HTML5 = evidence(_files(*HTML5_DEFAULTS, HTML5_OVERRIDE))
# the TURN secret (TurnServer's first constructor argument) is left out of the evidence
TURN = evidence("; ".join(f"echo '@@{p}'; if [ -e {p} ]; then grep -v 'constructor-arg index=\"0\" "
                          f"value=\"[A-Za-z0-9+/=_-]\\{{16,\\}}\"' {p}; else echo '!missing'; fi" for p in TURN_FILES))
RETAIN = evidence(_files(CRON_CONFIG, RETENTION) + "; echo '@@raw'; "
                  f"grep -cE '^[[:space:]]*remove_raw_of_published_recordings[[:space:]]*$' {CRON} 2>/dev/null")
OLD = evidence("for d in /var/bigbluebutton/published /var/bigbluebutton/unpublished; do "
               "[ -d $d ] && find $d -mindepth 2 -maxdepth 2 -type d -printf '%T@ %p\\n'; done; "
               "[ -d /var/bigbluebutton/recording/raw ] && find /var/bigbluebutton/recording/raw -mindepth 1 "
               "-maxdepth 1 -type d -printf '%T@ %p\\n'; echo \"@@now $(date +%s)\"")


def own_server(school: Any) -> bool:
    bbb = school.services.bigbluebutton
    return bbb is not None and not bbb.pool


def sections(text: str) -> dict[str, str | None]:
    """`@@path` sections of an evidence output; None for a missing file."""
    out: dict[str, str | None] = {}
    for part in re.split(r"(?m)^@@", text)[1:]:
        name, _, body = part.partition("\n")
        out[name.strip()] = None if body.strip() == "!missing" else body
    return out


def properties(text: str | None) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in (text or "").splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "!")) and "=" in line:
            k, _, v = line.partition("=")
            found[k.strip()] = v.strip()
    return found


def web_settings(ctx: Context) -> dict[str, str]:
    """bbb-web's effective properties: the packaged defaults, overridden by /etc/bigbluebutton's."""
    parts = sections(ctx.run(WEB).stdout)
    if parts.get(WEB_DEFAULT) is None and parts.get(WEB_OVERRIDE) is None:
        raise RuntimeError(f"neither {WEB_DEFAULT} nor {WEB_OVERRIDE} exists: is BigBlueButton installed here?")
    return {**properties(parts.get(WEB_DEFAULT)), **properties(parts.get(WEB_OVERRIDE))}


def _merge(base: Any, over: Any) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        return {**base, **{k: _merge(base.get(k), v) for k, v in over.items()}}
    return over


def html5_settings(ctx: Context) -> dict[str, Any]:
    import yaml  # here: `validate` loads the catalogue, and starts faster without a YAML reader it does not use

    parts = sections(ctx.run(HTML5).stdout)
    merged: Any = {}
    for path in (*HTML5_DEFAULTS, HTML5_OVERRIDE):
        text = parts.get(path)
        if text:
            merged = _merge(merged, yaml.safe_load(text) or {})
    return merged


def dig(tree: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(tree, dict):
            return None
        tree = tree.get(k)
    return tree


@control("BBB-RECORDING-POLICY", "bigbluebutton", "BigBlueButton records only when the policy allows it",
         "Upstream records whole sessions once a room allows recording; a school that has not allowed "
         "recordings must not be able to make one, and none may start by itself.",
         ["5(1)(c)", "25"], "high", applies=own_server,
         titles={"ca": "BigBlueButton només enregistra si la política ho permet",
                 "es": "BigBlueButton solo graba si la política lo permite"})
def recording_policy(ctx: Context) -> Outcome:
    s = web_settings(ctx)
    allowed = ctx.policy.recordings
    want = {"autoStartRecording": "false", "recordFullDurationMedia": "false", "breakoutRoomsRecord": "false"}
    if not allowed:
        want["disableRecordingDefault"] = "true"
    observed = {k: s.get(k, "(unset)") for k in ["disableRecordingDefault", *want]}
    bad = [f"{k}={observed[k]}" for k, v in want.items() if observed[k] != v]
    shown = ", ".join(f"{k}={v}" for k, v in observed.items())
    return verdict(not bad, shown, ", ".join(f"{k}={v}" for k, v in want.items())
                   + f" (privacy.recordings: {str(allowed).lower()})")


@control("BBB-RECORDING-RETENTION", "bigbluebutton", "BigBlueButton recordings are deleted on schedule",
         "Upstream never deletes published recordings and keeps raw data of recorded meetings; each "
         "must go after privacy.recording_retention_days (at once when recordings are not allowed).",
         ["5(1)(e)"], "high", applies=own_server,
         titles={"ca": "Els enregistraments de BigBlueButton s'esborren a temps",
                 "es": "Las grabaciones de BigBlueButton se borran a tiempo"})
def recording_retention(ctx: Context) -> Outcome:
    p = ctx.policy
    keep = p.recording_retention_days if p.recordings else 0
    parts = sections(ctx.run(RETAIN).stdout)
    bad = []
    job = parts.get(RETENTION)
    days = re.search(r"(?m)^days=(\d+)", job or "")
    if days is None:
        bad.append(f"no deletion job ({RETENTION})")
    elif int(days.group(1)) > keep:
        bad.append(f"deletion job keeps {days.group(1)} days")
    cron = properties(parts.get(CRON_CONFIG))
    published = int(cron.get("published_days", "14"))
    if p.recordings and published > keep:
        bad.append(f"published_days={published}")
    if p.recordings and (parts.get("raw") or "0").strip() == "0":
        bad.append("remove_raw_of_published_recordings is off")
    out = ctx.run(OLD).stdout.splitlines()
    now = next((float(x.split()[1]) for x in out if x.startswith("@@now ")), 0.0)
    limit = (keep + 1) * 86400   # the daily job runs once a day
    old = [x.split(" ", 1)[1] for x in out if not x.startswith("@@") and " " in x
           and now - float(x.split(" ", 1)[0]) > limit]
    if old:
        bad.append(f"{len(old)} recording(s) older than {keep + 1} days, e.g. {old[0]}")
    return verdict(not bad, "; ".join(bad) or f"deletion after {days.group(1) if days else '?'} days, nothing older",
                   f"recordings deleted after {keep} day(s)")


@control("BBB-GUESTS", "bigbluebutton", "BigBlueButton lets no guest in without a moderator",
         "Upstream's defaultGuestPolicy ALWAYS_ACCEPT lets anyone with a link into a class.",
         ["25", "32"], "high", applies=own_server,
         titles={"ca": "Cap convidat entra a BigBlueButton sense moderador",
                 "es": "Ningún invitado entra en BigBlueButton sin moderador"})
def guests(ctx: Context) -> Outcome:
    policy = web_settings(ctx).get("defaultGuestPolicy", "ALWAYS_ACCEPT")
    ok = {"ALWAYS_DENY"} | ({"ASK_MODERATOR"} if ctx.policy.guests else set())
    return verdict(policy in ok, f"defaultGuestPolicy={policy}", " or ".join(sorted(ok)))


@control("BBB-API-SECRET", "bigbluebutton", "BigBlueButton's API secret is the school's own",
         "With upstream's placeholder secret anyone can create meetings and join as moderator.",
         ["32"], "high", applies=own_server,
         titles={"ca": "El secret de l'API de BigBlueButton és propi",
                 "es": "El secreto de la API de BigBlueButton es propio"})
def api_secret(ctx: Context) -> Outcome:
    out = ctx.run(SALT).stdout
    length = int(re.search(r"length=(\d+)", out).group(1)) if "length=" in out else 0
    placeholder = "placeholder=yes" in out
    sha1 = "sha1" in web_settings(ctx).get("supportedChecksumAlgorithms", "sha1").split(",")
    bad = (["the upstream placeholder"] if placeholder else []) + ([f"{length} characters"] if length < 24 else []) \
        + (["SHA-1 checksums accepted"] if sha1 else [])
    return verdict(not bad, "; ".join(bad) or f"own secret ({length} characters), no SHA-1 checksums",
                   "an own secret of 24+ characters, sha256 or stronger checksums")


@control("BBB-NO-THIRD-PARTY", "bigbluebutton", "BigBlueButton sends no voice or video to third parties",
         "Browser speech recognition (Web Speech) sends pupils' voices to the browser vendor; external "
         "video players load YouTube and others; the packaged STUN list names stun.freeswitch.org.",
         ["5(1)(c)", "44"], "high", applies=own_server,
         titles={"ca": "BigBlueButton no envia veu ni vídeo a tercers",
                 "es": "BigBlueButton no envía voz ni vídeo a terceros"})
def no_third_party(ctx: Context) -> Outcome:
    html5 = html5_settings(ctx)
    disabled = web_settings(ctx).get("disabledFeatures", "").split(",")
    bad = []
    captions = dig(html5, "public", "app", "audioCaptions")
    if isinstance(captions, dict) and captions.get("enabled") and captions.get("provider", "webspeech") == "webspeech":
        bad.append("audioCaptions with Web Speech")
    if dig(html5, "public", "externalVideoPlayer", "enabled") is not False and "externalVideos" not in disabled:
        bad.append("external video player on")
    fallback = dig(html5, "public", "media", "fallbackStunServer")
    if fallback:
        bad.append(f"fallbackStunServer {fallback}")
    parts = sections(ctx.run(TURN).stdout)
    effective = parts.get(TURN_FILES[0]) if parts.get(TURN_FILES[0]) is not None else parts.get(TURN_FILES[1])
    urls = re.findall(r'value="((?:stuns?|turns?):[^"]+)"', re.sub(r"<!--.*?-->", "", effective or "", flags=re.S))
    domain = ctx.school.domain
    foreign = [u for u in urls if not re.match(rf"^(stuns?|turns?):([a-z0-9.-]+\.)?{re.escape(domain)}[:?]", u)]
    if foreign:
        bad.append("STUN/TURN: " + ", ".join(foreign))
    if effective is None:
        bad.append("no turn-stun-servers.xml")
    return verdict(not bad, "; ".join(bad) or f"no Web Speech, no external videos, STUN/TURN {', '.join(urls)}",
                   f"audioCaptions off (or server-side), external videos off, STUN/TURN only under {domain}")


@control("BBB-LEARNING-DASHBOARD", "bigbluebutton", "BigBlueButton's learning dashboard follows the policy",
         "The dashboard keeps per-pupil activity (talk time, messages, emoji) after each class.",
         ["5(1)(c)", "5(1)(e)"], "medium", applies=own_server,
         titles={"ca": "El tauler d'aprenentatge de BigBlueButton segueix la política",
                 "es": "El panel de aprendizaje de BigBlueButton sigue la política"})
def learning_dashboard(ctx: Context) -> Outcome:
    s = web_settings(ctx)
    days = ctx.policy.learning_dashboard_retention_days
    on = s.get("learningDashboardEnabled", "true") == "true" and "learningDashboard" not in \
        s.get("disabledFeatures", "").split(",")
    delay = int(s.get("learningDashboardCleanupDelayInMinutes", "2") or 0)
    observed = f"learningDashboard {'on' if on else 'off'}, cleanup after {delay} minutes"
    if days == 0:
        return verdict(not on, observed, "off (privacy.learning_dashboard_retention_days: 0)")
    return verdict(not on or 0 < delay <= days * 1440, observed, f"off, or cleaned within {days * 1440} minutes")


# --- the BBB host as a server of the school: the school server's own host and TLS controls -------------

# (the BBB host's control, the school server's control it repeats there); the runner gives the BBB
# host's checks its own expectations (audit/runner.py: bbb_expectations): its name, its ports
SAME_AS_THE_SCHOOL_SERVER = {
    "BBB-HOST-FIREWALL-INBOUND": "HOST-FIREWALL-INBOUND", "BBB-HOST-EGRESS-DENY": "HOST-EGRESS-DENY",
    "BBB-TLS-PROTOCOLS": "WEB-TLS-PROTOCOLS", "BBB-TLS-CIPHERS": "WEB-TLS-CIPHERS",
    "BBB-CERT-VALID": "WEB-CERT-VALID", "BBB-HSTS": "WEB-HSTS",
}
HOST_TITLES = {"en": "BigBlueButton host: ", "ca": "Servidor BigBlueButton: ", "es": "Servidor BigBlueButton: "}


def _same_as_the_school_server() -> None:
    from schoolctl.audit import firewall, web  # noqa: F401  (they register the originals)
    from schoolctl.audit.catalogue import REGISTRY

    for alias, original in SAME_AS_THE_SCHOOL_SERVER.items():
        c = REGISTRY[original]
        control(alias, "bigbluebutton", HOST_TITLES["en"] + c.title, c.why, c.legal, c.severity, applies=own_server,
                titles={lang: HOST_TITLES[lang] + t for lang, t in c.titles.items()})(c.check)


_same_as_the_school_server()
