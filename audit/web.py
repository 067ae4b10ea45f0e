"""Web controls: TLS, certificate, security headers, CSP, access logs per policy, no third-party
assets, no default site. Every request is made ON the school host, through its nginx, with curl
or openssl against 127.0.0.1 and the school's names (`--resolve`): nothing leaves the host."""

from __future__ import annotations

import datetime as dt
import re
import secrets
import shlex
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from schoolctl.audit.catalogue import Context, Expect, Outcome, control, evidence, passed, verdict

CURL = "curl --noproxy '*' -sk --max-time 10"
OPENSSL = "openssl s_client -connect 127.0.0.1:443"
NEAR_EXPIRY_DAYS = 14
# Ciphers no school site should accept, whatever the protocol: no forward secrecy (RSA key exchange), no
# encryption or authentication, export/low grade, 3DES/DES/RC4/MD5/SEED/IDEA. (TLS 1.0/1.1's CBC-SHA1
# suites are WEB-TLS-PROTOCOLS' business.)
WEAK = "kRSA:aNULL:eNULL:EXPORT:LOW:3DES:DES:RC4:MD5:SEED:IDEA:PSK:SRP:@SECLEVEL=0"
STRONG = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:" \
         "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
LOG_SOURCE = "127.83.19.201"  # the audit's own request comes from this loopback address
_MARKS: dict[str, str] = {}  # and carries a fresh marker per school and audit run


def mark(school_id: str, new: bool = False) -> str:
    if new or school_id not in _MARKS:
        _MARKS[school_id] = f"schoolctl-audit-{secrets.token_hex(6)}"
    return _MARKS[school_id]


def page_cmd(name: str, path: str = "/") -> str:
    return f"{CURL} -D - --resolve {shlex.quote(name)}:443:127.0.0.1 {shlex.quote(f'https://{name}{path}')}"


def tls_cmd(name: str, option: str, ciphers: str) -> str:
    # OPENSSL_CONF=/dev/null: the probe must not be limited by the host's own client settings
    return (f"out=$(OPENSSL_CONF=/dev/null {OPENSSL} -servername {shlex.quote(name)} {option} "
            f"-cipher {shlex.quote(ciphers)} </dev/null 2>&1); rc=$?; "
            "printf '%s\\n' \"$out\" | grep -E '^New, |^Verify return'; echo rc=$rc")


def cert_cmd(name: str) -> str:
    return f"{OPENSSL} -servername {shlex.quote(name)} -showcerts </dev/null 2>/dev/null"


def redirect_cmd(name: str) -> str:
    return f"{CURL} -D - -o /dev/null --resolve {shlex.quote(name)}:80:127.0.0.1 " \
           f"{shlex.quote(f'http://{name}/schoolctl-audit')}"


def log_cmd(name: str, marker: str) -> str:
    return (f"{CURL} -o /dev/null --interface {LOG_SOURCE} --resolve {shlex.quote(name)}:443:127.0.0.1 "
            f"'https://{name}/?{marker}'; sleep 0.3; grep -rhF -- '{marker}' /var/log/nginx/ 2>/dev/null "
            "| tail -n 3; "
            "echo '@@nginx'; nginx -T 2>/dev/null | grep -E '^[[:space:]]*access_log[[:space:]]' | sort | uniq -c")


NGINX_T = evidence("nginx -T 2>/dev/null")
DEFAULT = evidence("ls -1 /etc/nginx/sites-enabled/ 2>&1; echo '@@http'; "
                   f"{CURL} -D - -H 'Host: unknown.invalid' http://127.0.0.1/; echo '@@https'; "
                   f"{CURL} -D - --resolve unknown.invalid:443:127.0.0.1 https://unknown.invalid/; "
                   "r=$?; echo; echo rc=$r")


def _web_evidence(school: Any, expect: Expect) -> list[str]:
    cmds = []
    for n in expect.pages:
        cmds.append(page_cmd(n))
    domain = school.domain
    cmds += [tls_cmd(domain, "-tls1", "DEFAULT:@SECLEVEL=0"), tls_cmd(domain, "-tls1_1", "DEFAULT:@SECLEVEL=0"),
             tls_cmd(domain, "-tls1_2", STRONG), tls_cmd(domain, "-tls1_2", WEAK),
             log_cmd(domain, mark(school.id, new=True)), redirect_cmd(domain)]
    cmds += [cert_cmd(n) for n in expect.pages]
    return cmds


evidence(_web_evidence)


# --- fetching pages -----------------------------------------------------------------------------

class Page:
    """One response: status, lower-case headers (last value wins), body."""

    def __init__(self, raw: str, rc: int):
        self.rc = rc
        head, _, self.body = raw.replace("\r\n", "\n").partition("\n\n")
        lines = head.splitlines()
        parts = lines[0].split() if lines else []
        self.status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        self.headers: dict[str, str] = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            self.headers[k.strip().lower()] = v.strip()

    def __repr__(self) -> str:
        return f"HTTP {self.status}" if self.status else f"no answer (curl exit {self.rc})"


def page(ctx: Context, name: str, path: str = "/") -> Page:
    res = ctx.run(page_cmd(name, path))
    return Page(res.stdout, res.rc)


def _per_page(ctx: Context, header: str, good: Any, expected: str) -> Outcome:
    bad, seen = [], []
    for n in ctx.expect.pages:
        p = page(ctx, n)
        value = p.headers.get(header)
        shown = f"{n}: " + (f"{header}: {value}" if value is not None else f"no {header} ({p!r})")
        seen.append(shown)
        if value is None or not good(value):
            bad.append(shown)
    return verdict(not bad, "; ".join(bad or seen), expected)


# --- TLS -------------------------------------------------------------------------------------------

def _handshake(ctx: Context, option: str, ciphers: str) -> tuple[bool, str]:
    out = ctx.run(tls_cmd(ctx.expect.names[0] if ctx.expect.names else ctx.school.domain, option, ciphers)).stdout
    m = re.search(r"^New, (\S+), Cipher is (\S+)", out, re.M)
    rc = re.search(r"rc=(\d+)", out)
    ok = bool(m and m.group(2) != "(NONE)" and rc and rc.group(1) == "0")
    return ok, (f"{m.group(1)} {m.group(2)}" if ok and m else "refused")


@control("WEB-TLS-PROTOCOLS", "web", "Only TLS 1.2 and newer",
         "TLS 1.0 and 1.1 have known weaknesses; pupils' logins and data must travel on current TLS only.",
         ["32"], "high", titles={"ca": "Només TLS 1.2 o posterior", "es": "Solo TLS 1.2 o posterior"})
def tls_protocols(ctx: Context) -> Outcome:
    v10, s10 = _handshake(ctx, "-tls1", "DEFAULT:@SECLEVEL=0")
    v11, s11 = _handshake(ctx, "-tls1_1", "DEFAULT:@SECLEVEL=0")
    v12, s12 = _handshake(ctx, "-tls1_2", STRONG)
    return verdict(not v10 and not v11 and v12, f"openssl s_client 127.0.0.1:443: TLS 1.0 {s10}; TLS 1.1 {s11}; "
                                                f"TLS 1.2 {s12}",
                   "TLS 1.0 and 1.1 refused (even with the client at security level 0); TLS 1.2 accepted")


@control("WEB-TLS-CIPHERS", "web", "No weak ciphers; a strong one works",
         "Ciphers without forward secrecy or with SHA-1/legacy algorithms let recorded traffic be decrypted later.",
         ["32"], "high", titles={"ca": "Cap xifratge feble", "es": "Ningún cifrado débil"})
def tls_ciphers(ctx: Context) -> Outcome:
    weak, sw = _handshake(ctx, "-tls1_2", WEAK)
    strong, ss = _handshake(ctx, "-tls1_2", STRONG)
    return verdict(not weak and strong, f"TLS 1.2 with weak ciphers: {'ACCEPTED ' + sw if weak else 'refused'}; "
                                        f"with strong ciphers: {ss}",
                   f"no cipher of {WEAK.replace(':@SECLEVEL=0', '')} accepted; an ECDHE+AEAD cipher accepted")


_PEM = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


def _verify_chain(pems: list[str], trust: tuple[str, ...]) -> str:
    """'ok' or openssl's complaint, verifying on the controller against its trust store plus `trust`."""
    with tempfile.TemporaryDirectory() as d:
        leaf, chain, extra = Path(d, "leaf.pem"), Path(d, "chain.pem"), Path(d, "extra.pem")
        leaf.write_text(pems[0] + "\n")
        chain.write_text("\n".join(pems[1:]) + "\n")
        args = ["openssl", "verify", "-purpose", "sslserver"]
        if pems[1:]:
            args += ["-untrusted", str(chain)]
        if trust:
            extra.write_text("\n".join(trust) + "\n")
            args += ["-CAfile", str(extra)]
        if not trust or Path("/etc/ssl/certs").is_dir():
            args += ["-CApath", "/etc/ssl/certs"]
        p = subprocess.run([*args, str(leaf)], capture_output=True, text=True, timeout=20)
        return "ok" if p.returncode == 0 else (p.stdout + p.stderr).strip().splitlines()[-1][:200]


@control("WEB-CERT-VALID", "web", f"Certificate valid, trusted, covering the school's names, not expiring within "
                                  f"{NEAR_EXPIRY_DAYS} days",
         "A broken certificate teaches pupils and teachers to click through warnings.",
         ["32"], "high", titles={"ca": "Certificat vàlid per a tots els noms de l'escola",
                                 "es": "Certificado válido para todos los nombres de la escuela"})
def cert_valid(ctx: Context) -> Outcome:
    from cryptography import x509

    now = dt.datetime.now(dt.UTC)
    bad, seen = [], []
    for n in ctx.expect.pages:
        pems = _PEM.findall(ctx.run(cert_cmd(n)).stdout)
        if not pems:
            bad.append(f"{n}: no certificate (TLS handshake refused)")
            continue
        cert = x509.load_pem_x509_certificate(pems[0].encode())
        try:
            sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
                x509.DNSName)
        except x509.ExtensionNotFound:
            sans = []
        covered = all(_name_match(m, sans) for m in ctx.expect.names)
        end, start = cert.not_valid_after_utc, cert.not_valid_before_utc
        days = (end - now).total_seconds() / 86400
        chain = _verify_chain(pems, ctx.expect.trust)
        shown = f"{n}: valid {start:%Y-%m-%d}..{end:%Y-%m-%d} ({days:.0f} days left), SAN {', '.join(sans)}, " \
                f"chain {chain}"
        seen.append(shown)
        if not covered or start > now or days < NEAR_EXPIRY_DAYS or chain != "ok":
            bad.append(shown)
    return verdict(not bad, "; ".join(bad or [*seen[:1], f"{len(seen)} name(s) checked"]),
                   f"a trusted certificate covering {', '.join(ctx.expect.names)}, valid now and for "
                   f">= {NEAR_EXPIRY_DAYS} more days")


def _name_match(name: str, sans: list[str]) -> bool:
    return any(s == name or (s.startswith("*.") and name.split(".", 1)[-1] == s[2:]) for s in sans)


# --- headers ----------------------------------------------------------------------------------------

HSTS_MIN = 15552000  # 180 days: Nextcloud's hardening guide, DevSec nginx-13


@control("WEB-HSTS", "web", "HSTS on every site (max-age >= 180 days)",
         "Without HSTS a first visit over http can be intercepted and the login stolen.",
         ["32"], "medium", titles={"ca": "HSTS a tots els llocs", "es": "HSTS en todos los sitios"})
def hsts(ctx: Context) -> Outcome:
    def good(v: str) -> bool:
        m = re.search(r"max-age=(\d+)", v)
        return bool(m and int(m.group(1)) >= HSTS_MIN)

    return _per_page(ctx, "strict-transport-security", good, f"Strict-Transport-Security max-age >= {HSTS_MIN}")


FLAG_DIRECTIVES = {"upgrade-insecure-requests", "block-all-mixed-content", "sandbox", "require-trusted-types-for",
                   "trusted-types", "report-to", "plugin-types"}


def csp_foreign(csp: str, names: tuple[str, ...], domain: str) -> list[str]:
    """Sources of a CSP that are not the school's own: any origin but its names, wildcards, schemes."""
    foreign = []
    for directive in csp.split(";"):
        words = directive.split()
        if not words or words[0].lower() in FLAG_DIRECTIVES:
            continue
        for src in words[1:]:
            s = src.lower()
            if s.startswith("'") or s in ("data:", "blob:", "mediastream:"):
                continue  # 'self', 'none', hashes, nonces, keywords: not origins
            host = urlsplit(s if "://" in s else f"//{s}").hostname or ""
            own = host in names or host == domain or host.endswith("." + domain)
            if words[0].lower() == "report-uri" and own:
                continue
            if not own:
                foreign.append(f"{words[0]} {src}")
    return foreign


@control("WEB-CSP", "web", "Content-Security-Policy on every site, with no third-party origin",
         "A CSP that names only the school's own origins stops pages from loading trackers or fonts from "
         "other companies, even if an app or plugin tries.",
         ["5(1)(c)", "25", "44"], "high", titles={"ca": "CSP sense orígens de tercers",
                                                  "es": "CSP sin orígenes de terceros"})
def csp(ctx: Context) -> Outcome:
    bad, seen = [], []
    for n in ctx.expect.pages:
        p = page(ctx, n)
        value = p.headers.get("content-security-policy")
        if value is None:
            bad.append(f"{n}: no Content-Security-Policy ({p!r})")
            continue
        foreign = csp_foreign(value, ctx.expect.names, ctx.school.domain)
        seen.append(f"{n}: {value}")
        if foreign:
            bad.append(f"{n}: third-party sources {', '.join(foreign)}")
    return verdict(not bad, "; ".join(bad or seen),
                   "every source 'self', 'none', a hash/nonce, data:, blob: or one of the school's names")


@control("WEB-REFERRER-POLICY", "web", "Referrer-Policy: no-referrer",
         "Page addresses (course names, room names, file names) must not be handed to other sites.",
         ["5(1)(c)", "25"], "medium", titles={"ca": "Referrer-Policy: no-referrer",
                                              "es": "Referrer-Policy: no-referrer"})
def referrer(ctx: Context) -> Outcome:
    return _per_page(ctx, "referrer-policy", lambda v: v.strip().lower() == "no-referrer",
                     "Referrer-Policy: no-referrer")


@control("WEB-PERMISSIONS-POLICY", "web", "Permissions-Policy present",
         "Pages get no browser feature (camera, microphone, location...) they do not need.",
         ["25"], "low", titles={"ca": "Permissions-Policy present", "es": "Permissions-Policy presente"})
def permissions(ctx: Context) -> Outcome:
    return _per_page(ctx, "permissions-policy", lambda v: bool(v.strip()), "a Permissions-Policy header")


@control("WEB-SERVER-TOKENS", "web", "nginx does not reveal its version",
         "Version strings tell attackers which known holes to try.",
         ["32"], "low", titles={"ca": "nginx no revela la versió", "es": "nginx no revela la versión"})
def server_tokens(ctx: Context) -> Outcome:
    conf = ctx.run(NGINX_T).stdout
    tokens = re.findall(r"^\s*server_tokens\s+(\S+);", conf, re.M)
    servers = {n: page(ctx, n).headers.get("server", "(none)") for n in ctx.expect.pages}
    leaks = {n: s for n, s in servers.items() if re.search(r"\d", s)}
    ok = not leaks and bool(tokens) and all(t == "off" for t in tokens)
    return verdict(ok, f"nginx -T: server_tokens {', '.join(tokens) or '(unset: on)'}; Server headers: "
                       + ", ".join(sorted(set(servers.values()))), "server_tokens off; Server header without version")


@control("WEB-ACCESS-LOG", "web", "Access logs follow the school's policy (off, anonymised or full)",
         "Access logs hold every visitor's address and the pages they open. The school's policy decides; "
         "hardening baselines (DevSec, Lynis HTTP-6712) that want full logs are overruled by it.",
         ["5(1)(c)", "5(1)(e)", "25"], "high", titles={"ca": "Registres d'accés segons la política de l'escola",
                                                       "es": "Registros de acceso según la política de la escuela"})
def access_log(ctx: Context) -> Outcome:
    mode = ctx.policy.access_log
    marker = mark(ctx.school.id)
    out = ctx.run(log_cmd(ctx.school.domain, marker)).stdout
    lines, _, directives = out.partition("@@nginx")
    logged = [x.strip() for x in lines.splitlines() if marker in x]
    full = [x for x in logged if LOG_SOURCE in x]
    conf = " | ".join(" ".join(d.split()[1:]) for d in directives.strip().splitlines()) or "none"
    req = f"a request from {LOG_SOURCE} to https://{ctx.school.domain}/?{marker}"
    note = " (baselines such as Lynis HTTP-6712 want full logs; the school's policy decides)"
    if mode == "off":
        return verdict(not logged, f"{req}: " + (f"LOGGED: {logged[0]}" if logged else "not logged")
                       + f"; nginx -T access_log: {conf}", f"privacy.access_log: off, nothing logged{note}")
    if mode == "anonymised":
        shown = (f"logged as: {logged[0]}" if logged else "not logged (stricter than the policy)")
        return verdict(not full, f"{req}: {shown}; nginx -T access_log: {conf}",
                       f"privacy.access_log: anonymised, no full client address ({LOG_SOURCE}) in the logs{note}")
    return passed(f"{req}: " + (f"logged as: {logged[0]}" if logged else "not logged"),
                  "privacy.access_log: full, the school's policy allows full access logs")


# --- content ----------------------------------------------------------------------------------------

class _Assets(HTMLParser):
    """URLs a browser would LOAD from a page (not plain links a user may follow)."""

    LOADING = frozenset({"src", "srcset", "data", "poster", "background", "action", "formaction", "manifest", "ping"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.urls: list[str] = []
        self.links: list[str] = []
        self._style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k.lower(): v or "" for k, v in attrs}
        for k, v in a.items():
            if k in self.LOADING:
                self.urls += [u.split()[0] for u in v.split(",") if u.strip()] if k == "srcset" else [v]
            elif k == "style":
                self.urls += css_urls(v)
        if tag == "link" and "href" in a:
            self.urls.append(a["href"])
        elif tag in ("a", "area") and "href" in a:
            self.links.append(a["href"])
        elif tag == "meta" and a.get("http-equiv", "").lower() == "refresh":
            self.urls += re.findall(r"url=([^;\s]+)", a.get("content", ""), re.I)
        self._style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        self._style = False

    def handle_data(self, data: str) -> None:
        if self._style:
            self.urls += css_urls(data)


def css_urls(css: str) -> list[str]:
    return [m.strip("'\" ") for m in re.findall(r"url\(([^)]*)\)", css)] + \
        re.findall(r"@import\s+['\"]([^'\"]+)['\"]", css)


def foreign_urls(html: str, names: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """(loaded URLs from other origins, plain links to other origins) of a page."""
    parser = _Assets()
    parser.feed(html)

    def other(u: str) -> bool:
        s = urlsplit(u.strip())
        if s.scheme in ("data", "blob", "mailto", "tel", "javascript", "about"):
            return False
        return bool(s.netloc) and (s.hostname or "") not in names

    return [u for u in parser.urls if other(u)], [u for u in parser.links if other(u)]


@control("WEB-NO-THIRD-PARTY", "web", "No page loads anything from another origin",
         "Every script, font or image from another company tells it who visits which school page.",
         ["5(1)(c)", "25", "44"], "high", titles={"ca": "Cap pàgina carrega res d'altres orígens",
                                                  "es": "Ninguna página carga nada de otros orígenes"})
def no_third_party(ctx: Context) -> Outcome:
    bad, seen = [], []
    for n in ctx.expect.pages:
        p = page(ctx, n)
        hops = 0
        while p.status in (301, 302, 303, 307, 308) and hops < 3:
            target = urlsplit(p.headers.get("location", ""))
            host = target.hostname or n
            if host not in ctx.expect.names:
                bad.append(f"{n}: redirects to another origin {p.headers.get('location')}")
                break
            p = page(ctx, host, (target.path or "/") + (f"?{target.query}" if target.query else ""))
            hops += 1
        if p.status != 200:
            bad.append(f"{n}: start page not served ({p!r})")
            continue
        loaded, links = foreign_urls(p.body, ctx.expect.names)
        seen.append(f"{n}: {len(p.body)} bytes, no foreign asset" + (f", {len(links)} plain link(s) out" if links
                                                                       else ""))
        if loaded:
            bad.append(f"{n}: loads {', '.join(sorted(set(loaded))[:5])}")
    if ctx.expect.pages_note:
        seen.append(ctx.expect.pages_note)
    return verdict(not bad, "; ".join(bad or seen), "every src/href/url()/@import on the start pages is the "
                                                    "school's own (plain <a> links to other sites are allowed)")


@control("WEB-DEFAULT-SITE", "web", "nginx's default site is removed",
         "The package's default site answers any name with a stock page, showing the server is unmanaged.",
         ["32"], "low", titles={"ca": "Lloc per defecte de nginx eliminat",
                                "es": "Sitio por defecto de nginx eliminado"})
def default_site(ctx: Context) -> Outcome:
    out = ctx.run(DEFAULT).stdout
    enabled, _, rest = out.partition("@@http")
    http, _, https = rest.partition("@@https")
    files = [f for f in enabled.split() if f]
    welcome = "Welcome to nginx" in http or "Welcome to nginx" in https
    ok = "default" not in files and not welcome
    body, _, rc = https.strip().rpartition("rc=")
    hs = "handshake refused" if rc.strip() != "0" else repr(Page(body.lstrip(), 0))
    return verdict(ok, f"sites-enabled: {', '.join(files) or '(empty)'}; unknown name over http: "
                       f"{Page(http.lstrip(), 0)!r}; over https: {hs}{'; STOCK WELCOME PAGE' if welcome else ''}",
                   "no sites-enabled/default; no stock page for unknown names")


@control("WEB-HTTPS-REDIRECT", "web", "Plain http only redirects to https",
         "Nothing may be served unencrypted; port 80 is only for ACME challenges and the redirect.",
         ["32"], "medium", titles={"ca": "http només redirigeix a https", "es": "http solo redirige a https"})
def https_redirect(ctx: Context) -> Outcome:
    d = ctx.school.domain
    p = Page(ctx.run(redirect_cmd(d)).stdout, 0)
    loc = p.headers.get("location", "")
    ok = p.status in (301, 308) and loc == f"https://{d}/schoolctl-audit"
    return verdict(ok, f"http://{d}/schoolctl-audit: {p!r}" + (f" -> {loc}" if loc else ""),
                   f"301 or 308 to https://{d}/schoolctl-audit")
