"""The web layer rendered for example schools: nginx files, TLS modes, logging, the landing page."""

from __future__ import annotations

import datetime as dt
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from schoolctl.config.loader import load
from schoolctl.deploy import web
from schoolctl.deploy.site import Site
from schoolctl.deploy.state import APPS, Layer
from schoolctl.secrets import Secret

from .conftest import city_ca

SCHOOLS = Path(__file__).resolve().parents[2] / "schools"


def make_site(school_id: str, privacy: dict[str, Any] | None = None, tls: dict[str, Any] | None = None,
              school_tls: Any = None, **kw: Any) -> tuple[Site, dict[str, Secret]]:
    """An example school as the deploy sees it, with recognisable fake secrets."""
    school = load(SCHOOLS).select([school_id])[0]
    update: dict[str, Any] = {}
    if privacy:
        update["privacy"] = school.privacy.model_copy(update=privacy)
    if tls:
        update["fleet"] = school.fleet.model_copy(update={"tls": school.fleet.tls.model_copy(update=tls)})
    if school_tls is not None:
        update["tls"] = school_tls
    school = school.model_copy(update=update)
    handed: dict[str, Secret] = {}

    def secret(name: str, length: int = 32) -> Secret:
        return handed.setdefault(name, Secret(f"Zq{name.replace('_', '')}{len(handed):02d}x" * 3))

    return Site(school=school, secret=secret, acme_directory="https://acme.example.test/dir", **kw), handed


def files(layer: Layer) -> dict[str, Any]:
    return {f.path: f for f in [*layer.pre_files, *layer.files]}


def text(layer: Layer, path: str) -> str:
    return files(layer)[path].data.decode()


def test_layer_shape_and_default_site_removed():
    site, _ = make_site("demo")
    layer = web.layer(site)
    assert layer.round == APPS
    assert layer.packages == ["nginx", "openssl", "certbot"]
    fs = files(layer)
    assert fs["/etc/nginx/sites-enabled/default"].absent
    assert [s.name for s in layer.services] == ["nginx", "certbot.timer"]
    for path in ("/etc/nginx/nginx.conf", "/etc/nginx/sites-enabled/schoolctl-http.conf",
                 "/etc/nginx/sites-enabled/schoolctl-landing.conf"):
        assert fs[path].check == "nginx -t -q" and fs[path].reload == ("nginx",)


def test_hardening_tls_and_headers():
    site, _ = make_site("demo")
    layer = web.layer(site)
    nginx = text(layer, "/etc/nginx/nginx.conf")
    assert "server_tokens off;" in nginx and "gzip off;" in nginx
    tls = text(layer, "/etc/nginx/snippets/schoolctl-tls.conf")
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in tls
    assert "ssl_certificate /etc/schoolctl/tls/fullchain.pem;" in tls
    assert "ssl_session_tickets off;" in tls
    ciphers = re.search(r"ssl_ciphers (\S+);", tls).group(1).split(":")
    assert all(c.startswith("ECDHE-") and ("GCM" in c or "CHACHA20" in c) for c in ciphers)
    headers = text(layer, "/etc/nginx/snippets/schoolctl-headers.conf")
    assert 'add_header Strict-Transport-Security "max-age=63072000; includeSubDomains" always;' in headers
    assert 'add_header Referrer-Policy "no-referrer" always;' in headers
    assert 'add_header X-Content-Type-Options "nosniff" always;' in headers
    assert 'X-Robots-Tag "noindex, nofollow"' in headers  # search_indexing is off in the fleet


def test_http_server_serves_acme_and_redirects():
    site, _ = make_site("demo")
    conf = text(web.layer(site), "/etc/nginx/sites-enabled/schoolctl-http.conf")
    assert "listen 80 default_server;" in conf
    assert "location ^~ /.well-known/acme-challenge/ {\n        root /var/www/acme;" in conf
    assert "return 301 https://$host$request_uri;" in conf
    assert "ssl_reject_handshake on;" in conf


@pytest.mark.parametrize(("mode", "log_line", "error_level"), [
    ("off", "access_log off;", "crit"),
    ("anonymised", "access_log /var/log/nginx/landing.access.log schoolctl_anon;", "crit"),
    ("full", "access_log /var/log/nginx/landing.access.log combined;", "error"),
])
def test_access_log_modes(mode, log_line, error_level):
    site, _ = make_site("demo", privacy={"access_log": mode})
    layer = web.layer(site)
    assert log_line in text(layer, "/etc/nginx/sites-enabled/schoolctl-landing.conf")
    nginx = text(layer, "/etc/nginx/nginx.conf")
    assert f"error_log /var/log/nginx/error.log {error_level};" in nginx
    block = web.server_block(site, "moodle", "location / { }")
    assert log_line.replace("landing", "moodle") in block.data.decode()


def test_anonymising_map_truncates_addresses():
    """The map's regexes (PCRE in nginx), tried in order as nginx does, on sample addresses."""
    site, _ = make_site("demo")
    nginx = text(web.layer(site), "/etc/nginx/nginx.conf")
    body = re.search(r"map \$remote_addr \$schoolctl_client \{\n(.*?)\n\s*\}", nginx, re.S).group(1)
    rules = []
    for line in body.strip().splitlines():
        key, value = line.strip().rstrip(";").split(" ", 1)
        rules.append((key, value))

    def apply(addr: str) -> str:
        for key, value in rules:
            if key == "default":
                continue
            m = re.search(key[1:], addr)
            if m:
                return re.sub(r"\$(v4|v6)", lambda g, m=m: m.group(g.group(1)), value)
        return dict(rules)["default"]

    assert apply("203.0.113.77") == "203.0.113.0"
    assert apply("::ffff:198.51.100.9") == "198.51.100.0"
    assert apply("2001:db8:abcd:12:3:4:5:6") == "2001:db8:abcd::"
    assert apply("2001:db8::1") == "2001:db8::"
    assert apply("2001::1") == "2001::"
    assert apply("::1") == "-"


def test_logrotate_uses_retention():
    site, _ = make_site("escola-pins")  # log_retention_days: 7
    rot = text(web.layer(site), "/etc/logrotate.d/nginx")
    assert "\trotate 7\n" in rot and "\tmaxage 7\n" in rot and "/var/log/nginx/*.log" in rot


def test_server_block_helper():
    site, _ = make_site("demo")
    f = web.server_block(site, "nextcloud", "location / {\n    proxy_pass http://127.0.0.1:1;\n}\n",
                         csp="default-src 'self'; frame-ancestors 'self'")
    conf = f.data.decode()
    assert f.path == "/etc/nginx/sites-enabled/schoolctl-nextcloud.conf"
    assert f.check == "nginx -t -q" and f.reload == ("nginx",)
    assert "server_name cloud.demo.escoles.bcn.example;" in conf
    assert "listen 443 ssl;" in conf
    assert "include /etc/nginx/snippets/schoolctl-tls.conf;" in conf
    assert "include /etc/nginx/snippets/schoolctl-headers.conf;" in conf
    assert "add_header Content-Security-Policy \"default-src 'self'; frame-ancestors 'self'\" always;" in conf
    assert 'Permissions-Policy "camera=(), microphone=()' in conf
    assert "    location / {\n        proxy_pass http://127.0.0.1:1;\n    }\n}" in conf
    default = web.server_block(site, "moodle", "location / { }").data.decode()
    assert "add_header Content-Security-Policy \"frame-ancestors 'self'\" always;" in default
    meet = web.server_block(site, "jitsi", "", permissions="camera=(self), microphone=(self)").data.decode()
    assert 'Permissions-Policy "camera=(self), microphone=(self)"' in meet


def test_landing_pages_languages_services_and_dpo():
    site, _ = make_site("escola-pins")  # languages [ca, es]; moodle, nextcloud, etherpad
    fs = files(web.layer(site))
    pages = {p: f.data.decode() for p, f in fs.items() if p.startswith("/var/www/schoolctl/index")}
    assert sorted(pages) == ["/var/www/schoolctl/index.ca.html", "/var/www/schoolctl/index.es.html",
                             "/var/www/schoolctl/index.html"]
    assert pages["/var/www/schoolctl/index.html"] == pages["/var/www/schoolctl/index.ca.html"]
    ca, es = pages["/var/www/schoolctl/index.ca.html"], pages["/var/www/schoolctl/index.es.html"]
    assert '<html lang="ca">' in ca and '<html lang="es">' in es
    assert "Campus virtual (Moodle)" in ca and "Núvol (Nextcloud)" in ca and "Protecció de dades" in ca
    assert "Nube (Nextcloud)" in es and "Protección de datos" in es
    for page in (ca, es):
        for url in ("https://moodle.escola-pins.escoles.bcn.example/", "https://cloud.escola-pins.escoles.bcn.example/",
                    "https://pad.escola-pins.escoles.bcn.example/"):
            assert f'href="{url}"' in page
        assert "meet." not in page  # jitsi is off
        assert 'href="mailto:dpd@bcn.example"' in page
        assert 'href="/index.es.html"' in page or 'href="/index.ca.html"' in page
        # no external assets: every src/href is local, an app of the school or the DPO's address
        for ref in re.findall(r'(?:src|href)="([^"]+)"', page):
            assert ref.startswith(("/", "mailto:", "https://moodle.", "https://cloud.", "https://pad.")), ref
        assert "<script" not in page and "<link" not in page and "@import" not in page
    assert fs["/var/www/schoolctl/robots.txt"].data.decode() == "User-agent: *\nDisallow: /\n"


def test_landing_english_and_escaping():
    site, _ = make_site("demo")
    pages = web.landing_pages(site)
    assert sorted(pages) == ["index.ca.html", "index.en.html", "index.es.html", "index.html"]
    assert "Video calls (Jitsi Meet)" in pages["index.en.html"]
    assert "https://meet.demo.escoles.bcn.example/" in pages["index.en.html"]


def test_landing_csp_allows_only_its_own_inline_style():
    import base64
    import hashlib

    site, _ = make_site("demo")
    layer = web.layer(site)
    conf = text(layer, "/etc/nginx/sites-enabled/schoolctl-landing.conf")
    csp = re.search(r'Content-Security-Policy "([^"]+)"', conf).group(1)
    assert csp.startswith("default-src 'self'; ")
    assert "frame-ancestors 'none'" in csp and "http" not in csp
    page = text(layer, "/var/www/schoolctl/index.html")
    style = re.search(r"<style>(.*?)</style>", page, re.S).group(1)
    digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
    assert f"style-src 'sha256-{digest}'" in csp


def test_acme_steps_and_ca_bundle():
    site, _ = make_site("demo", acme_ca_pem="-----BEGIN CERTIFICATE-----\nX\n-----END CERTIFICATE-----\n")
    layer = web.layer(site)
    fs = files(layer)
    assert fs["/etc/schoolctl/acme-ca.pem"].data.startswith(b"-----BEGIN CERTIFICATE-----")
    assert "REQUESTS_CA_BUNDLE=/etc/schoolctl/acme-ca.pem" in fs[
        "/etc/systemd/system/certbot.service.d/schoolctl.conf"].data.decode()
    assert fs["/etc/letsencrypt/renewal-hooks/deploy/schoolctl-nginx"].mode == "0755"
    [placeholder] = layer.pre_steps
    assert "openssl req -x509" in placeholder.apply
    [issue, _own_names] = layer.steps
    assert issue.apply.startswith("REQUESTS_CA_BUNDLE=/etc/schoolctl/acme-ca.pem certbot certonly --non-interactive")
    for n in site.names:
        assert f"-d {n}" in issue.apply and n in issue.check
    assert "--cert-name demo" in issue.apply and "--webroot -w /var/www/acme" in issue.apply
    assert "--email suport-escoles@bcn.example" in issue.apply
    assert "--server https://acme.example.test/dir" in issue.apply
    assert "-checkend 2592000" in issue.check


def test_acme_without_email():
    site, _ = make_site("demo", tls={"acme_email": None})
    [issue, _own_names] = web.layer(site).steps
    assert "--register-unsafely-without-email" in issue.apply and "--email" not in issue.apply
    assert "/etc/schoolctl/acme-ca.pem" not in issue.apply


def test_acme_check_is_exact(tmp_path):
    """The step's check passes for a certificate covering every name and fails otherwise."""
    site, _ = make_site("escola-pins")
    [issue, _own_names] = web.layer(site).steps
    key = ec.generate_private_key(ec.SECP256R1())

    def cert(names: list[str], days: int) -> Path:
        now = dt.datetime.now(dt.UTC)
        c = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "t")]))
             .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "t")])).public_key(key.public_key())
             .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=days))
             .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
             .sign(key, hashes.SHA256()))
        p = tmp_path / f"{len(names)}-{days}.pem"
        p.write_bytes(c.public_bytes(serialization.Encoding.PEM))
        return p

    # only the SAN/expiry part (the symlink part needs the server's paths)
    check = issue.check[issue.check.index("openssl x509"):]

    def ok(path: Path) -> bool:
        return subprocess.run(["sh", "-c", f"( {check.replace(web.CERT, str(path))} )"]).returncode == 0

    assert ok(cert(site.names, 90))
    assert ok(cert([*site.names, "extra.example"], 90))
    assert not ok(cert(site.names[:-1], 90))
    assert not ok(cert(site.names, 10))


def test_provided_tls_uploads_key_as_secret(tmp_path):
    from schoolctl.config.model import SchoolTls

    (tmp_path / "c.pem").write_text("CERT\n")
    (tmp_path / "k.pem").write_text("KEY\n")
    site, _ = make_site("demo", tls={"mode": "provided"},
                        school_tls=SchoolTls(cert_file=str(tmp_path / "c.pem"), key_file=str(tmp_path / "k.pem")))
    layer = web.layer(site)
    fs = files(layer)
    assert fs[web.CERT].data == b"CERT\n" and not fs[web.CERT].secret
    assert fs[web.KEY].data == b"KEY\n" and fs[web.KEY].secret and fs[web.KEY].mode == "0600"
    assert [s.name for s in layer.steps] == [web.own_names_step(site).name]
    assert layer.pre_steps == [] and "certbot" not in layer.packages


@pytest.mark.parametrize("kind", ["ec", "rsa"])
def test_internal_tls_is_issued_by_the_city_ca_and_stable(tmp_path, kind):
    ca_file, ca_key = city_ca(tmp_path, kind)
    site, handed = make_site("demo", tls={"mode": "internal", "ca_file": str(ca_file), "ca_key_file": str(ca_key)})
    fs = files(web.layer(site))
    again = files(web.layer(site))
    assert fs[web.CERT].data == again[web.CERT].data and fs[web.KEY].data == again[web.KEY].data
    assert fs[web.KEY].secret and fs[web.KEY].mode == "0600"
    leaf = x509.load_pem_x509_certificates(fs[web.CERT].data)[0]
    ca = x509.load_pem_x509_certificate(ca_file.read_bytes())
    leaf.verify_directly_issued_by(ca)
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert sans == site.names
    now = dt.datetime.now(dt.UTC)
    assert leaf.not_valid_after_utc - now > dt.timedelta(days=59)
    key = serialization.load_pem_private_key(fs[web.KEY].data, None)
    assert key.public_key().public_numbers() == leaf.public_key().public_numbers()
    # the next period brings a new certificate (same key)
    later, _ = web.internal_certificate(site, now + dt.timedelta(days=61)), None
    assert later[0] != fs[web.CERT].data.decode() and later[1] == fs[web.KEY].data.decode()
    assert "tls_internal_key" in handed


def test_no_secret_in_non_secret_files(tmp_path):
    ca_file, ca_key = city_ca(tmp_path, "ec")
    site, handed = make_site("demo", tls={"mode": "internal", "ca_file": str(ca_file), "ca_key_file": str(ca_key)})
    layer = web.layer(site)
    for f in layer.files + layer.pre_files:
        if not f.secret:
            for s in handed.values():
                assert s.reveal().encode() not in f.data, f.path
        assert b"PRIVATE KEY" not in f.data or f.secret, f.path


def test_the_school_resolves_its_own_names(tmp_path):
    """The /etc/hosts step, run for real on a copy: added once, kept exact, a stale line replaced."""
    import subprocess

    site, _ = make_site("demo")
    step = next(s for s in web.layer(site).steps if "/etc/hosts" in s.name)
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1\tlocalhost\n127.0.0.1 old.example # schoolctl: the school's own names, for the "
                     "apps' self-checks\n::1\tlocalhost\n")

    def sh(script: str) -> int:
        return subprocess.run(["sh", "-ec", script.replace("/etc/hosts", str(hosts))]).returncode

    assert sh(step.check) != 0
    assert sh(step.apply) == 0 and sh(step.check) == 0 and sh(step.apply) == 0
    lines = hosts.read_text().splitlines()
    assert lines[:2] == ["127.0.0.1\tlocalhost", "::1\tlocalhost"]
    assert lines[2].split()[:4] == ["127.0.0.1", "demo.escoles.bcn.example", "moodle.demo.escoles.bcn.example",
                                    "cloud.demo.escoles.bcn.example"]
    assert len(lines) == 3 and "old.example" not in hosts.read_text()


def test_an_app_left_out_is_not_on_the_landing_page():
    site, _ = make_site("escola-pins")
    site.left_out.add("nextcloud")
    page = web.landing_pages(site)["index.html"]
    assert "https://moodle.escola-pins" in page and "cloud.escola-pins" not in page
    assert site.offered() == ["moodle", "etherpad"]


def _answering(tmp_path: Path, codes: dict[str, str], script: str) -> subprocess.CompletedProcess[str]:
    """Run a script of the answering step with a curl that answers `codes` by host (000: no answer)."""
    stub = tmp_path / "bin"
    stub.mkdir(exist_ok=True)
    cases = "".join(f'  *//{host}/*) echo -n {code};;\n' for host, code in codes.items())
    (stub / "curl").write_text(f'#!/bin/sh\nfor a; do url=$a; done\ncase "$url" in\n{cases}  *) echo -n 200;;\nesac\n')
    (stub / "curl").chmod(0o755)
    (stub / "sleep").write_text("#!/bin/sh\n")
    (stub / "sleep").chmod(0o755)
    return subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=200,
                          env={"PATH": f"{stub}:/usr/bin:/bin"})


def test_the_deploy_ends_checking_every_listed_service_answers(tmp_path: Path):
    site, _ = make_site("escola-pins")
    step = web.answering_step(site)
    assert "moodle, nextcloud, etherpad" in step.name
    assert _answering(tmp_path, {}, step.check).returncode == 0
    assert _answering(tmp_path, {"moodle.escola-pins.escoles.bcn.example": "302"}, step.check).returncode == 0
    for code in ("502", "404", "000"):   # nginx without its app, nothing there, or nothing at all
        down = {"cloud.escola-pins.escoles.bcn.example": code}
        assert _answering(tmp_path, down, step.check).returncode != 0
    monkey = step.apply.replace("date +%s", "echo 0")   # the wait runs out at once: stays down
    failed = _answering(tmp_path, {"pad.escola-pins.escoles.bcn.example": "503"}, monkey.replace("-ge $end", "-ge 0"))
    assert failed.returncode == 1
    assert "https://pad.escola-pins.escoles.bcn.example/health answered 503" in failed.stdout, failed.stdout
    assert "moodle" not in failed.stdout
    site.left_out.add("etherpad")   # not deployed: not asked
    assert "pad.escola-pins" not in web.answering_step(site).check


def test_a_provided_tls_file_that_is_not_there_is_bad_input(tmp_path):
    from schoolctl.config.model import SchoolTls
    from schoolctl.errors import RenderError

    (tmp_path / "c.pem").write_text("CERT\n")
    site, _ = make_site("demo", tls={"mode": "provided"},
                        school_tls=SchoolTls(cert_file=str(tmp_path / "c.pem"), key_file=str(tmp_path / "k.pem")))
    with pytest.raises(RenderError) as caught:
        web.layer(site)
    assert caught.value.exit_code == 2 and str(tmp_path / "k.pem") in caught.value.message
    assert "No such file" in caught.value.message and "TLS folder" in caught.value.hint
