"""nginx, the school's single entry point: TLS (ACME, provided or city-CA certificates), hardened
defaults, privacy-aware access logs, the landing page, and `server_block` for the apps' own sites.

The web layer runs in round APPS: its pre-step puts a self-signed placeholder certificate in place
(openssl comes with base's ca-certificates) before nginx is installed, so nginx starts and answers
ACME challenges before the real certificate exists; the ACME step then points nginx at it."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import shlex
from functools import cache
from pathlib import Path

import yaml

from schoolctl.config.model import SERVICE_TITLES
from schoolctl.deploy.render import TEMPLATES, integer, render
from schoolctl.deploy.site import Site
from schoolctl.deploy.state import APPS, Directory, File, Layer, Service, Step
from schoolctl.errors import RenderError

TLS_DIR = "/etc/schoolctl/tls"
CERT = f"{TLS_DIR}/fullchain.pem"
KEY = f"{TLS_DIR}/privkey.pem"
ACME_WEBROOT = "/var/www/acme"
ACME_CA = "/etc/schoolctl/acme-ca.pem"
LANDING_ROOT = "/var/www/schoolctl"
SITES = "/etc/nginx/sites-enabled"
# Browser features no school site needs; Jitsi's site passes its own (camera, microphone).
PERMISSIONS = "camera=(), microphone=(), geolocation=(), payment=(), usb=(), browsing-topics=()"
DEFAULT_CSP = "frame-ancestors 'self'"
RENEW_BEFORE_DAYS = 30
NGINX_CHECK = "nginx -t -q"


# --- shared pieces other layers use ---------------------------------------------------------

def access_log(site: Site, name: str) -> str:
    """The `access_log` value for one site, per privacy.access_log."""
    mode = site.school.privacy.access_log
    if mode == "off":
        return "off"
    return f"/var/log/nginx/{name}.access.log {'schoolctl_anon' if mode == 'anonymised' else 'combined'}"


def _server(site: Site, label: str, server_name: str, body: str, csp: str, permissions: str) -> File:
    conf = render("web/server.conf.j2", label=label, server_name=server_name, body=body.strip("\n"), csp=csp,
                  permissions=permissions, access_log=access_log(site, label))
    return File(f"{SITES}/schoolctl-{label}.conf", conf, check=NGINX_CHECK, reload=("nginx",))


def server_block(site: Site, service: str, body: str, csp: str | None = None,
                 permissions: str = PERMISSIONS) -> File:
    """The nginx site of `service` at site.fqdn(service) on 443, with the school's certificate, the
    shared TLS and header snippets and logging per policy; `body` holds its locations. Use it from
    a layer of round APPS (nginx is installed there). `csp` defaults to frame-ancestors 'self'."""
    return _server(site, service, site.fqdn(service), body, csp or DEFAULT_CSP, permissions)


# --- TLS ------------------------------------------------------------------------------------

def _san_check(path: str, names: list[str]) -> str:
    """Shell: the certificate at `path` covers every name and does not expire within 30 days."""
    wanted = " ".join(shlex.quote(n) for n in names)
    return (f"openssl x509 -in {path} -noout -checkend {RENEW_BEFORE_DAYS * 86400} && "
            f"san=$(openssl x509 -in {path} -noout -ext subjectAltName | tr -d ' ' | tr ',' '\\n') && "
            f"for n in {wanted}; do printf '%s\\n' \"$san\" | grep -qxF \"DNS:$n\" || exit 1; done")


def _acme(site: Site, names: list[str] | None = None, cert_name: str | None = None) \
        -> tuple[list[Step], list[File], list[Step], list[Service]]:
    """certbot over HTTP-01 (webroot), one certificate named after the school (or `cert_name`) for
    all its names (or `names`: the BigBlueButton host's)."""
    sid, fleet_tls = cert_name or site.id, site.school.fleet.tls
    names = names or site.names
    live = f"/etc/letsencrypt/live/{sid}"
    chain, privkey = shlex.quote(f"{live}/fullchain.pem"), shlex.quote(f"{live}/privkey.pem")
    placeholder = Step(
        "TLS placeholder certificate (until ACME succeeds)",
        check=f"test -s {CERT} && test -s {KEY}",
        apply=(f"install -d -m 0700 {TLS_DIR} && cd {TLS_DIR} && "
               "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 "
               f"-subj /CN={shlex.quote(names[0])} -keyout placeholder.key -out placeholder.crt 2>/dev/null && "
               f"ln -sfn placeholder.crt {CERT} && ln -sfn placeholder.key {KEY}"))
    files = [File("/etc/letsencrypt/renewal-hooks/deploy/schoolctl-nginx", render("web/certbot-hook.sh.j2"), "0755")]
    env = ""
    if site.acme_ca_pem:
        files.append(File(ACME_CA, site.acme_ca_pem))
        env = f"REQUESTS_CA_BUNDLE={ACME_CA} "
        # renewals by certbot.timer trust the same directory CA
        files.append(File("/etc/systemd/system/certbot.service.d/schoolctl.conf",
                          f"[Service]\nEnvironment=REQUESTS_CA_BUNDLE={ACME_CA}\n"))
    email = f"--email {shlex.quote(fleet_tls.acme_email)}" if fleet_tls.acme_email \
        else "--register-unsafely-without-email"
    domains = " ".join(f"-d {shlex.quote(n)}" for n in names)
    certbot = (f"{env}certbot certonly --non-interactive --quiet --agree-tos {email} "
               f"--server {shlex.quote(site.acme_directory)} --webroot -w {ACME_WEBROOT} "
               f"--cert-name {shlex.quote(sid)} --key-type ecdsa {domains}")
    issue = Step(
        f"TLS certificate from ACME for {', '.join(names)}",
        check=(f'[ "$(readlink {CERT})" = {chain} ] && [ "$(readlink {KEY})" = {privkey} ] '
               f"&& {_san_check(CERT, names)}"),
        apply=(f"{certbot}\n"
               f"ln -sfn {chain} {CERT} && ln -sfn {privkey} {KEY}\n"
               "systemctl reload nginx"),
        timeout=300)
    return [placeholder], files, [issue], [Service("certbot.timer")]


def _provided(site: Site) -> list[File]:
    tls = site.school.tls
    if tls is None:
        raise RenderError(f"{site.id}: fleet tls.mode is 'provided' but the school has no tls.cert_file/key_file")
    try:
        cert, key = Path(tls.cert_file).read_text(), Path(tls.key_file).read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise RenderError(f"{site.id}: cannot read its TLS file {getattr(e, 'filename', None) or tls.cert_file}: "
                          f"{getattr(e, 'strerror', None) or e}",
                          "put the school's certificate chain and key (PEM) into its TLS folder, as "
                          "tls.cert_file and tls.key_file name them") from None
    return [File(CERT, cert, reload=("nginx",)), File(KEY, key, "0600", secret=True, reload=("nginx",))]


def internal_certificate(site: Site, now: dt.datetime | None = None,
                         names: list[str] | None = None) -> tuple[str, str]:
    """(certificate chain, key) PEMs issued by the city CA for the school's names. Deterministic for a
    given 60-day period (the key derives from a vault secret, the signature is deterministic), so a
    deploy changes nothing until the certificate is due: a new one every 60 days, valid 120."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    fleet_tls = site.school.fleet.tls
    if not (fleet_tls.ca_file and fleet_tls.ca_key_file):
        raise RenderError("fleet tls.mode is 'internal' but tls.ca_file / tls.ca_key_file are not set")
    ca_pem = Path(fleet_tls.ca_file).read_bytes()
    ca = x509.load_pem_x509_certificate(ca_pem)
    ca_key = serialization.load_pem_private_key(Path(fleet_tls.ca_key_file).read_bytes(), None)
    seed = hashlib.sha256(("schoolctl-tls:" + site.secret("tls_internal_key", 64).reveal()).encode()).digest()
    order = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551  # P-256
    key = ec.derive_private_key(int.from_bytes(seed, "big") % (order - 1) + 1, ec.SECP256R1())
    period = dt.timedelta(days=60)
    epoch = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    now = now or dt.datetime.now(dt.UTC)
    start = epoch + period * ((now - epoch) // period)
    names = names or site.names
    serial = int.from_bytes(hashlib.sha256(f"{seed.hex()}|{start.isoformat()}|{','.join(names)}".encode())
                            .digest()[:19], "big") >> 1
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
               .issuer_name(ca.subject).public_key(key.public_key()).serial_number(serial or 1)
               .not_valid_before(start - dt.timedelta(hours=1)).not_valid_after(start + 2 * period)
               .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False))
    if isinstance(ca_key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        cert = builder.sign(ca_key, None)
    elif isinstance(ca_key, ec.EllipticCurvePrivateKey):
        cert = builder.sign(ca_key, hashes.SHA256(), ecdsa_deterministic=True)
    elif isinstance(ca_key, rsa.RSAPrivateKey):
        cert = builder.sign(ca_key, hashes.SHA256(), rsa_padding=padding.PKCS1v15())
    else:
        raise RenderError(f"unsupported city CA key type {type(ca_key).__name__}")
    chain = cert.public_bytes(serialization.Encoding.PEM).decode() + ca_pem.decode()
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return chain, key_pem


def _internal(site: Site, names: list[str] | None = None) -> list[File]:
    chain, key = internal_certificate(site, names=names)
    return [File(CERT, chain, reload=("nginx",)), File(KEY, key, "0600", secret=True, reload=("nginx",))]


def tls(site: Site, names: list[str] | None = None, cert_name: str | None = None) \
        -> tuple[list[Step], list[File], list[Step], list[str], list[Service]]:
    """The certificate of `names` (default: the school's) at CERT/KEY, per the fleet's tls.mode:
    (pre-steps, files, steps, packages, services). A provided certificate must cover `names`
    (wildcards count): a step checks it with openssl's own host matching."""
    mode = site.school.fleet.tls.mode
    if mode == "acme":
        pre, files, steps, services = _acme(site, names, cert_name)
        return pre, files, steps, ["certbot"], services
    if mode == "internal":
        return [], _internal(site, names), [], [], []
    files, steps = _provided(site), []
    if names:
        hosts = " ".join(shlex.quote(n) for n in names)
        steps.append(Step(f"the provided certificate covers {', '.join(names)}",
                          check=f"for n in {hosts}; do openssl x509 -in {CERT} -noout -checkhost \"$n\" "
                                f"| grep -q 'does match'; done",
                          apply=f"echo 'the certificate of tls.cert_file does not cover {' '.join(names)}: issue one "
                                "that does (a wildcard for the school domain counts)' >&2; exit 1"))
    return [], files, steps, [], []


def nginx_conf(site: Site) -> File:
    """nginx.conf: privacy-aware access and error logs (the anonymised format), no version, no gzip."""
    privacy = site.school.privacy
    error_level = "error" if privacy.access_log == "full" else "crit"
    conf = render("web/nginx.conf.j2", error_level=error_level, access_log=privacy.access_log,
                  default_access_log=access_log(site, "other"))
    return File("/etc/nginx/nginx.conf", conf, check=NGINX_CHECK, reload=("nginx",))


def tls_snippet() -> File:
    return File("/etc/nginx/snippets/schoolctl-tls.conf", render("web/tls.conf.j2", cert=CERT, key=KEY),
                check=NGINX_CHECK, reload=("nginx",))


def nginx_logrotate(site: Site) -> File:
    days = integer(site.school.privacy.log_retention_days, "privacy.log_retention_days")
    return File("/etc/logrotate.d/nginx", render("web/logrotate.j2", days=days))


# --- the landing page -----------------------------------------------------------------------

@cache
def _texts() -> dict[str, dict]:
    return yaml.safe_load((TEMPLATES / "web/landing.yaml").read_text(encoding="utf-8"))


@cache
def _css() -> str:
    return (TEMPLATES / "web/landing.css").read_text(encoding="utf-8").strip()


def landing_csp() -> str:
    """The landing page's CSP: its own origin only; the inline stylesheet allowed by its hash."""
    digest = base64.b64encode(hashlib.sha256(_css().encode()).digest()).decode()
    return (f"default-src 'self'; style-src 'sha256-{digest}'; img-src 'self'; object-src 'none'; "
            "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def landing_pages(site: Site) -> dict[str, str]:
    """File name -> HTML: index.html in the first language, index.<lang>.html for each language."""
    school, texts = site.school, _texts()
    langs = school.languages
    others = [{"code": lang, "name": texts[lang]["language"], "file": f"index.{lang}.html"} for lang in langs]
    pages = {}
    for lang in langs:
        t = texts[lang]
        services = [{"url": f"https://{site.fqdn(s)}/", "title": f"{t['services'][s][0]} ({SERVICE_TITLES[s]})",
                     "text": t["services"][s][1]} for s in site.offered()]
        html = render("web/landing.html.j2", lang=lang, t=t, languages=others, services=services, css=_css(),
                      school_name=school.name, district=school.district, dpo_name=school.contacts.dpo.name,
                      dpo_email=school.contacts.dpo.email, indexing=school.privacy.search_indexing)
        pages[f"index.{lang}.html"] = html
        if lang == langs[0]:
            pages["index.html"] = html
    return pages


LANDING_BODY = f"""root {LANDING_ROOT};
index index.html;

location / {{
    try_files $uri $uri/ =404;
}}"""


def _landing(site: Site) -> list[File]:
    robots = "User-agent: *\n" + ("Allow: /\n" if site.school.privacy.search_indexing else "Disallow: /\n")
    files = [File(f"{LANDING_ROOT}/{name}", html) for name, html in sorted(landing_pages(site).items())]
    files.append(File(f"{LANDING_ROOT}/robots.txt", robots))
    files.append(_server(site, "landing", site.fqdn(), LANDING_BODY, landing_csp(), PERMISSIONS))
    return files


# Where each listed service proves it answers: a page its app renders (not a static file of nginx's);
# for Jitsi, prosody's BOSH behind the web client.
ANSWERS = {"moodle": ("/login/index.php",), "nextcloud": ("/status.php",), "etherpad": ("/health",),
           "jitsi": ("/", "/http-bind")}
ANSWER_WAIT = 120  # seconds a service just (re)started may take


def answering_step(site: Site) -> Step:
    """The deploy's last step: the landing page and every service it lists answer over HTTPS on their
    own names (this server's own, /etc/hosts): 2xx, 3xx, 401 or 403, all checked at once; a service
    still starting gets ANSWER_WAIT seconds, then the deploy fails naming what did not answer."""
    urls = [f"https://{site.fqdn()}/"] + [f"https://{site.fqdn(s)}{p}" for s in site.offered() for p in ANSWERS[s]]
    probe = ("code=$(curl -sk --noproxy '*' -o /dev/null -w '%{http_code}' --max-time 10 \"$1\" || true); "
             "case ${code:-000} in 2??|3??|401|403) ;; *) echo \"$1 answered ${code:-000}\"; exit 1;; esac")
    words = " ".join(shlex.quote(u) for u in urls)
    each = f"printf '%s\\n' {words} | xargs -P {len(urls)} -n 1 sh -c {shlex.quote(probe)} probe"
    return Step(f"the landing page and the services it lists answer ({', '.join(site.offered()) or 'none'})",
                check=f"{each} >/dev/null",
                apply=(f"end=$(($(date +%s) + {ANSWER_WAIT}))\n"
                       f"until out=$({each} 2>&1); do\n"
                       f"  if [ $(date +%s) -ge $end ]; then echo \"not answering after {ANSWER_WAIT} s (the landing "
                       f"page lists them):\"; echo \"$out\"; exit 1; fi\n"
                       "  sleep 3\ndone"))


# --- the layer ------------------------------------------------------------------------------

HOSTS_MARK = "# schoolctl: the school's own names, for the apps' self-checks"


def own_names_step(site: Site) -> Step:
    """The server resolves its own service names to itself (loopback, where nginx listens too), so
    the apps' self-checks (Nextcloud's setupchecks, Moodle's security checks) reach their own
    HTTPS without DNS and without opening egress. One marked line of /etc/hosts, kept exact."""
    line = f"127.0.0.1 {' '.join(site.names)} {HOSTS_MARK}"
    q = shlex.quote
    return Step("the school's own names resolve to this server (/etc/hosts)",
                check=f"[ \"$(grep -cF {q(HOSTS_MARK)} /etc/hosts)\" = 1 ] && grep -qxF {q(line)} /etc/hosts",
                apply=(f"grep -vF {q(HOSTS_MARK)} /etc/hosts > /etc/hosts.schoolctl || true\n"
                       f"echo {q(line)} >> /etc/hosts.schoolctl\n"
                       "chmod 0644 /etc/hosts.schoolctl && mv /etc/hosts.schoolctl /etc/hosts"))


def layer(site: Site) -> Layer:
    privacy = site.school.privacy
    pre_steps, tls_files, steps, more_packages, more_services = tls(site)
    services = [Service("nginx"), *more_services]
    packages = ["nginx", "openssl", *more_packages]
    files = [
        *tls_files,
        nginx_conf(site),
        tls_snippet(),
        File("/etc/nginx/snippets/schoolctl-headers.conf",
             render("web/headers.conf.j2", indexing=privacy.search_indexing), check=NGINX_CHECK, reload=("nginx",)),
        File(f"{SITES}/default", "", absent=True, reload=("nginx",)),
        File(f"{SITES}/schoolctl-http.conf",
             render("web/http.conf.j2", webroot=ACME_WEBROOT, access_log=access_log(site, "http")),
             check=NGINX_CHECK, reload=("nginx",)),
        nginx_logrotate(site),
        *_landing(site),
    ]
    return Layer(
        name="web", round=APPS,
        pre_steps=pre_steps,
        packages=packages,
        directories=[Directory("/etc/schoolctl"), Directory(TLS_DIR, "0700"), Directory(ACME_WEBROOT),
                     Directory(LANDING_ROOT), Directory("/var/log/nginx", "0750", "root", "adm")],
        files=files,
        services=services,
        steps=[*steps, own_names_step(site)],
    )
