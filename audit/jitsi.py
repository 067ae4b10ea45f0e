"""Jitsi Meet controls: nothing leaves the school (config.js, videobridge STUN), only the school's
people open rooms (prosody), guests and lobby per policy, the school's own TURN with private
networks out of reach, no recording, and the school's first language. Each reads the real files on
the school server."""

from __future__ import annotations

import json
import re
from typing import Any

from schoolctl.audit.catalogue import Context, Outcome, control, evidence, verdict

# what prosody loads: its main file, and conf.d only when that file includes it (Debian's default does;
# schoolctl's does not, so files jitsi-meet-prosody's postinst leaves there are not in effect)
PROSODY = evidence("f=/etc/prosody/prosody.cfg.lua; cat $f 2>/dev/null; "
                   "if grep -qE '^[[:space:]]*Include[[:space:]]+.conf\\.d/' $f 2>/dev/null; then "
                   "cat /etc/prosody/conf.d/*.cfg.lua 2>/dev/null; fi")
# never the secret itself: its line is dropped, only whether it is set (16+ characters) is told
TURN = evidence("f=/etc/turnserver.conf; grep -v '^[[:space:]]*static-auth-secret' $f 2>/dev/null || echo '!missing'; "
                "echo \"@@secret $(grep -c '^static-auth-secret=.\\{16,\\}' $f 2>/dev/null)\"")
JVB = evidence("for f in /etc/jitsi/videobridge/jvb.conf /etc/jitsi/videobridge/sip-communicator.properties; do "
               "echo \"@@$f\"; cat \"$f\" 2>/dev/null || echo '!missing'; done")


def meet(school: Any) -> str:
    return f"meet.{school.domain}"


def config_cmd(school: Any) -> str:
    return f"cat /etc/jitsi/meet/{meet(school)}-config.js 2>/dev/null || echo '!missing'"


def interface_cmd(school: Any) -> str:
    return f"cat /etc/jitsi/meet/{meet(school)}-interface_config.js 2>/dev/null || echo '!missing'"


evidence(lambda school, expect: [config_cmd(school), interface_cmd(school)] if school.has("jitsi") else [])


def code(js: str) -> str:
    """JavaScript/Lua/HOCON without comments (// -- #), which may cite upstream's defaults."""
    js = re.sub(r"/\*.*?\*/", "", js, flags=re.S)
    return re.sub(r"(^|\s)(//|--|#).*$", "", js, flags=re.M)


def foreign_hosts(text: str, domain: str) -> list[str]:
    """Hosts named in URLs or STUN/TURN addresses that are not the school's own."""
    found = re.findall(r"(?:https?|wss?|stuns?|turns?):(?://)?([a-z0-9.-]+\.[a-z]{2,})", code(text), re.I)
    found += re.findall(r"['\"]([a-z0-9.-]+\.(?:jitsi\.net|jit\.si|google\.com|callstats\.io|gravatar\.com))",
                        code(text), re.I)
    return sorted({h for h in found if not (h == domain or h.endswith("." + domain))})


def js_key(text: str, key: str) -> str | None:
    """The value of `key:` in config.js (first occurrence outside comments), as written."""
    m = re.search(rf"(?:^|[\s{{,]){re.escape(key)}\s*:\s*([^,\n}}]+(?:}})?)", code(text), re.M)
    return m.group(1).strip() if m else None


def nested(text: str, key: str, sub: str) -> str | None:
    """`key: { ... sub: value ... }` on one line or a block."""
    m = re.search(rf"(?:^|[\s{{,]){re.escape(key)}\s*:\s*{{([^}}]*)}}", code(text), re.M | re.S)
    if not m:
        return None
    inner = re.search(rf"\b{re.escape(sub)}\s*:\s*([^,\s}}]+)", m.group(1))
    return inner.group(1) if inner else None


def _config(ctx: Context) -> str:
    text = ctx.run(config_cmd(ctx.school)).stdout
    if text.strip() == "!missing":
        raise RuntimeError(f"/etc/jitsi/meet/{meet(ctx.school)}-config.js is missing")
    return text


def js_string(value: str | None) -> str | None:
    """A value js_key read, without its quotes when it is a plain JavaScript string literal."""
    m = re.fullmatch(r"(['\"])([^'\"\\]*)\1", value or "")
    return m.group(2) if m else value


@control("JITSI-LANGUAGE", "jitsi", "Jitsi Meet's default language is the school's first language",
         "Pupils and families must understand the video room's own words (the join page, the lobby, the camera "
         "and microphone prompts): config.js's defaultLanguage is the school's first language, not English.",
         ["25"], "low",
         titles={"ca": "L'idioma per defecte de Jitsi Meet és el primer de l'escola",
                 "es": "El idioma por defecto de Jitsi Meet es el primero de la escuela"})
def language(ctx: Context) -> Outcome:
    first = ctx.school.languages[0]
    value = js_key(_config(ctx), "defaultLanguage")
    return verdict(js_string(value) == first, f"defaultLanguage: {value if value is not None else '(unset)'}",
                   f"defaultLanguage: {json.dumps(first)}")


@control("JITSI-NO-THIRD-PARTY", "jitsi", "Jitsi Meet contacts no third party",
         "Upstream's config.js lets browsers fetch avatars from Gravatar, send analytics and point mobile "
         "users to app stores; only the school's own servers may be named.",
         ["5(1)(c)", "25", "44"], "high",
         titles={"ca": "Jitsi Meet no contacta cap tercer", "es": "Jitsi Meet no contacta con terceros"})
def no_third_party(ctx: Context) -> Outcome:
    js = _config(ctx)
    ui = ctx.run(interface_cmd(ctx.school)).stdout
    wanted = {"disableThirdPartyRequests": "true", "disableDeepLinking": "true"}
    bad = [f"{k}: {js_key(js, k)}" for k, v in wanted.items() if js_key(js, k) != v]
    for key in ("gravatar", "analytics", "deeplinking"):
        if nested(js, key, "disabled") != "true":
            bad.append(f"{key}.disabled: {nested(js, key, 'disabled')}")
    if js_key(js, "callStatsID") not in (None, "''", '""'):
        bad.append("callStatsID set")
    if js_key(ui, "MOBILE_APP_PROMO") != "false":
        bad.append(f"MOBILE_APP_PROMO: {js_key(ui, 'MOBILE_APP_PROMO')}")
    hosts = foreign_hosts(js, ctx.school.domain) + foreign_hosts(ui, ctx.school.domain)
    if hosts:
        bad.append("foreign hosts: " + ", ".join(hosts))
    return verdict(not bad, "; ".join(bad) or "third-party requests, gravatar, analytics and deep links off; "
                   "no foreign host", "disableThirdPartyRequests true, gravatar/analytics/deeplinking disabled, "
                   "no callStatsID, MOBILE_APP_PROMO false, only the school's hosts")


@control("JITSI-STUN-OWN", "jitsi", "Jitsi Meet uses only the school's STUN/TURN",
         "Upstream points browsers (p2p) and the videobridge (jvb.conf, written by its postinst) at "
         "meet-jit-si-turnrelay.jitsi.net: every participant's address would reach 8x8's servers.",
         ["5(1)(c)", "44"], "high",
         titles={"ca": "Jitsi Meet només usa el STUN/TURN de l'escola",
                 "es": "Jitsi Meet solo usa el STUN/TURN de la escuela"})
def stun_own(ctx: Context) -> Outcome:
    js = _config(ctx)
    p2p = re.search(r"p2p\s*:\s*{(.*?)\n\s*}", code(js), re.S)
    block = p2p.group(1) if p2p else ""
    stun = re.findall(r"urls\s*:\s*['\"]([^'\"]+)", block)
    bad = [s for s in stun if not s.split(":")[1].endswith(ctx.school.domain)]
    jvb = ctx.run(JVB).stdout
    jvb_hosts = [h for h in re.findall(r"([a-z0-9.-]+\.(?:jitsi\.net|google\.com|jit\.si))", code(jvb), re.I)]
    props = re.findall(r"^STUN_MAPPING_HARVESTER_ADDRESSES\s*=\s*(\S+)",
                       re.sub(r"^org\.ice4j\.ice\.harvest\.", "", jvb, flags=re.M), re.M)
    problems = bad + jvb_hosts + props
    return verdict(not problems, f"p2p STUN {', '.join(stun) or 'none'}; videobridge: "
                   f"{', '.join(jvb_hosts + props) or 'no third-party STUN'}",
                   "STUN/TURN only at the school's own names")


@control("JITSI-SECURE-DOMAIN", "jitsi", "Only the school's people open Jitsi rooms; guests per policy",
         "Upstream's prosody template lets anyone open a room anonymously; guests may only join a room a "
         "teacher opened, when the policy allows guests, and wait in the lobby when it asks for one.",
         ["25", "32"], "high",
         titles={"ca": "Només la gent de l'escola obre sales; convidats segons la política",
                 "es": "Solo la gente de la escuela abre salas; invitados según la política"})
def secure_domain(ctx: Context) -> Outcome:
    conf = code(ctx.run(PROSODY).stdout)
    m = meet(ctx.school)
    hosts = dict(re.findall(r'VirtualHost\s+"([^"]+)"(.*?)(?=\nVirtualHost|\nComponent|\Z)', conf, re.S))
    main = hosts.get(m)
    if main is None:
        return verdict(False, f"no VirtualHost \"{m}\" in prosody's configuration", f"VirtualHost \"{m}\"")
    auth = re.search(r'authentication\s*=\s*"([^"]+)"', main)
    method = auth.group(1) if auth else "(default: internal_plain)"
    bad = [f"{m}: authentication {method}"] if method in ("anonymous", "jitsi-anonymous") or not auth else []
    guest = hosts.get(f"guest.{m}")
    policy = ctx.policy
    if guest is not None and not policy.guests:
        bad.append(f"guest.{m} exists but privacy.guests is false")
    if policy.guests and policy.lobby and guest is not None and "muc_lobby_rooms" not in main:
        bad.append("guests allowed without the lobby (muc_lobby_rooms) the policy asks for")
    observed = f"{m}: authentication {method}; guest host {'present' if guest is not None else 'absent'}"
    return verdict(not bad, "; ".join(bad) or observed,
                   "authentication by the school's accounts (ldap, internal_hashed, token); guest host only "
                   f"with privacy.guests ({policy.guests}), lobby with privacy.lobby ({policy.lobby})")


@control("JITSI-TURN", "jitsi", "The school's TURN server needs credentials and never relays inward",
         "An open TURN relay lets anyone use the school's bandwidth and reach its internal networks.",
         ["32"], "high",
         titles={"ca": "El TURN de l'escola demana credencials i no arriba a xarxes internes",
                 "es": "El TURN de la escuela pide credenciales y no llega a redes internas"})
def turn(ctx: Context) -> Outcome:
    out = ctx.run(TURN).stdout
    if out.startswith("!missing"):
        return verdict(False, "/etc/turnserver.conf is missing", "coturn configured")
    lines = [x.strip() for x in out.splitlines()]
    secret_set = any(x.startswith("@@secret ") and x.split()[1] != "0" for x in lines)
    denied = {x.split("=", 1)[1] for x in lines if x.startswith("denied-peer-ip=")}
    need = ["10.0.0.0-10.255.255.255", "172.16.0.0-172.31.255.255", "192.168.0.0-192.168.255.255",
            "127.0.0.0-127.255.255.255", "169.254.0.0-169.254.255.255"]
    bad = []
    if "use-auth-secret" not in lines or not secret_set:
        bad.append("no shared-secret authentication (use-auth-secret + static-auth-secret)")
    if "no-cli" not in lines:
        bad.append("telnet CLI on")
    missing = [n for n in need if n not in denied]
    if missing:
        bad.append("relay may reach " + ", ".join(missing))
    return verdict(not bad, "; ".join(bad) or f"shared secret set, no-cli, {len(denied)} denied peer ranges",
                   "use-auth-secret with a static-auth-secret, no-cli, private ranges denied")


@control("JITSI-NO-RECORDING", "jitsi", "Jitsi Meet neither records, streams nor transcribes",
         "A Jitsi recording lands on a device or a Jibri server where it cannot be deleted on schedule; "
         "recorded classes belong in BigBlueButton, whose recordings are.",
         ["5(1)(e)", "25"], "high",
         titles={"ca": "Jitsi Meet no enregistra, ni emet ni transcriu",
                 "es": "Jitsi Meet no graba, ni emite ni transcribe"})
def no_recording(ctx: Context) -> Outcome:
    js = _config(ctx)
    jicofo = code(ctx.run(CONFIGS).stdout.partition("@@file /etc/jitsi/jicofo/jicofo.conf")[2].split("@@file")[0])
    jibri = re.search(r"jibri\s*\{[^}]*brewery-jid\s*=\s*\"([^\"]*)\"", jicofo)
    checks = {"recordingService.enabled": nested(js, "recordingService", "enabled"),
              "liveStreaming.enabled": nested(js, "liveStreaming", "enabled"),
              "transcription.enabled": nested(js, "transcription", "enabled"),
              "localRecording.disable": nested(js, "localRecording", "disable")}
    want = {"recordingService.enabled": "false", "liveStreaming.enabled": "false", "transcription.enabled": "false",
            "localRecording.disable": "true"}
    bad = [f"{k}: {v}" for k, v in checks.items() if v != want[k]]
    for legacy in ("fileRecordingsEnabled", "liveStreamingEnabled", "transcribingEnabled"):
        if js_key(js, legacy) == "true":
            bad.append(f"{legacy}: true")
    if jibri and jibri.group(1):   # jicofo would hand recordings to a Jibri
        bad.append(f"jicofo jibri.brewery-jid: {jibri.group(1)}")
    return verdict(not bad, "; ".join(bad) or "recording, streaming, transcription and local recording off",
                   ", ".join(f"{k}: {v}" for k, v in want.items()))


# --- the running stack: jicofo and the videobridge, and every Jitsi configuration file ----------------

def stack_cmd(school: Any) -> str:
    """Whether jicofo and the videobridge run, and the XMPP sessions prosody holds (JIDs only)."""
    return ("for u in jicofo jitsi-videobridge2; do echo \"@@unit $u $(systemctl is-active $u 2>/dev/null)\"; done; "
            "timeout 20 prosodyctl shell \"c2s:show(nil, 'jid')\" 2>/dev/null "
            "| grep -oE '[A-Za-z0-9._-]+@auth\\.[A-Za-z0-9.-]+' "
            "| sort -u | sed 's/^/@@session /'")


# every file of Jitsi's own services and the web client's config (never a secret: passwords are cut)
CONFIGS = evidence("for f in /etc/jitsi/videobridge/jvb.conf /etc/jitsi/videobridge/sip-communicator.properties "
                   "/etc/jitsi/videobridge/config /etc/jitsi/jicofo/jicofo.conf /etc/jitsi/jicofo/config "
                   "/etc/jitsi/meet/*.js; do [ -f \"$f\" ] || continue; echo \"@@file $f\"; "
                   "grep -viE '^[[:space:]]*(password|secret)[[:space:]]*[=:]' \"$f\"; done")
evidence(lambda school, expect: [stack_cmd(school)] if school.has("jitsi") else [])
_FILEISH = re.compile(r"\.(conf|properties|js|json|lua|log|jar|sh|html|pem|key|crt|txt)$", re.I)
_HOST = re.compile(r"^(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+[a-z]{2,}$", re.I)


def config_hosts(text: str, domain: str) -> list[str]:
    """Host names a Jitsi config names (URLs, STUN/TURN, quoted `host[:port]`, `key=host`) that are not
    the school's own: Java property names, paths and file names are not hosts."""
    found = set(foreign_hosts(text, domain))
    body = code(text)
    values = re.findall(r"['\"]([^'\"\s]+)['\"]", body) + re.findall(r"^[^=#\n]+=\s*([^\s\"'#]+)\s*$", body, re.M)
    for value in values:
        for token in re.split(r"[,\s]+", value):
            if not token or token[0] in "-/$":
                continue
            host = re.sub(r"^[a-z]+:(//)?", "", token, flags=re.I).split("/")[0].rsplit("@", 1)[-1]
            host = re.sub(r":\d+$", "", host)
            if _HOST.fullmatch(host) and not _FILEISH.search(host) \
                    and not (host == domain or host.endswith("." + domain)):
                found.add(host.lower())
    return sorted(found)


@control("JITSI-STACK-RUNNING", "jitsi", "Jicofo and the videobridge run and are registered with prosody",
         "Without jicofo (focus) and the school's videobridge logged in to prosody, a teacher's room never "
         "opens, and the platform links a video service that does not work.",
         ["32"], "medium",
         titles={"ca": "Jicofo i el videobridge funcionen i estan registrats a prosody",
                 "es": "Jicofo y el videobridge funcionan y están registrados en prosody"})
def stack_running(ctx: Context) -> Outcome:
    out = ctx.run(stack_cmd(ctx.school)).stdout.splitlines()
    units = dict(x.split()[1:3] if len(x.split()) > 2 else (x.split()[1], "unknown")
                 for x in out if x.startswith("@@unit "))
    sessions = {x.split()[1] for x in out if x.startswith("@@session ")}
    auth = f"auth.{meet(ctx.school)}"
    bad = [f"{u} {state}" for u, state in units.items() if state != "active"]
    bad += [f"{who}@{auth} not logged in to prosody" for who in ("focus", "jvb") if f"{who}@{auth}" not in sessions]
    return verdict(not bad, "; ".join(bad) or f"jicofo and jitsi-videobridge2 active; focus and jvb on {auth} in",
                   f"jicofo and jitsi-videobridge2 active, focus@{auth} and jvb@{auth} in prosody's sessions")


@control("JITSI-CONFIG-NO-THIRD-PARTY", "jitsi", "No Jitsi configuration file names a third-party host",
         "Upstream's packages write jitsi.net STUN servers into the videobridge's files and other hosts into "
         "the web client's; any of them would learn who joins the school's classes, and from where.",
         ["5(1)(c)", "44"], "high",
         titles={"ca": "Cap fitxer de configuració de Jitsi no nomena un servidor de tercers",
                 "es": "Ningún fichero de configuración de Jitsi nombra un servidor de terceros"})
def config_no_third_party(ctx: Context) -> Outcome:
    text = ctx.run(CONFIGS).stdout
    parts = re.split(r"^@@file (\S+)$", text, flags=re.M)
    files = dict(zip(parts[1::2], parts[2::2], strict=True))
    if not files:
        return verdict(False, "no Jitsi configuration file found under /etc/jitsi", "Jitsi's files in /etc/jitsi")
    bad = [f"{path}: {', '.join(hosts)}" for path, body in files.items()
           if (hosts := config_hosts(body, ctx.school.domain))]
    return verdict(not bad, "; ".join(bad) or f"{len(files)} files, only the school's own hosts",
                   "only the school's own host names in /etc/jitsi")
