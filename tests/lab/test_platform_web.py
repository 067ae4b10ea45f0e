"""The web, database and PHP layers on a real lab school server (w-1): a certificate issued by the
lab's pebble over HTTP-01, the landing page over HTTPS with its headers, PostgreSQL on loopback only,
PHP-FPM pools and Redis by socket; a second deploy changes nothing; `plan` finds one edited file.

Runs the real CLI (`deploy --json`, `plan --json`) with the platform layers only (SCHOOLCTL_LAYERS;
the apps have tests of their own). SCHOOLCTL_KEEP_LAB=1 keeps the host afterwards.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from .support import booted, skip_reason

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]
HOST = "w-1"
SID = "w-web"
LAYERS = "base,firewall,identity,database,php,web"
TIMES: dict[str, float] = {}


@pytest.fixture(scope="module")
def lab():
    reason = skip_reason() or (None if shutil.which("curl") else "curl missing on the build machine")
    if reason:
        pytest.skip(reason)
    with booted(HOST, timeout=120) as lab:
        yield lab


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, lab) -> dict[str, str]:
    base = tmp_path_factory.mktemp("web")
    schools = base / "schools"
    schools.mkdir()
    fleet = yaml.safe_load((ROOT / "schools" / "fleet.yaml").read_text())
    fleet.update(dns=[], ntp=[])
    (schools / "fleet.yaml").write_text(yaml.safe_dump(fleet))
    (schools / f"{SID}.yaml").write_text(yaml.safe_dump({
        "id": SID, "name": "Escola Web de Prova", "district": "Gràcia", "server": f"lab:{HOST}",
        "services": {"moodle": {"max_upload_mb": 64}, "nextcloud": {}, "etherpad": {}},
        "contacts": {"dpo": {"name": "Delegat de Protecció de Dades", "email": "dpd@bcn.example"}}},
        allow_unicode=True))
    env = dict(os.environ, SCHOOLCTL_SCHOOLS_DIR=str(schools), SCHOOLCTL_VAULT_KEY_FILE=str(base / "vault.key"),
               SCHOOLCTL_SECRETS_DIR=str(base / "secrets"), SCHOOLCTL_LAYERS=LAYERS)
    cli(env, "secrets", "init")
    # a certificate from an earlier pebble (its root is new at each start) must not satisfy this run:
    # drop any earlier lineage so the deploy issues one for real
    lab.run(HOST, f"command -v certbot >/dev/null && certbot delete --non-interactive --cert-name {SID} "
                  ">/dev/null 2>&1; rm -f /etc/schoolctl/tls/fullchain.pem /etc/schoolctl/tls/privkey.pem; true")
    return env


def cli(env: dict[str, str], *args: str, timeout: float = 1500) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "schoolctl.cli", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def run_json(env: dict[str, str], verb: str) -> dict:
    start = time.monotonic()
    proc = cli(env, verb, SID, *(["--yes"] if verb == "deploy" else []), "--json")
    elapsed = time.monotonic() - start
    assert proc.stdout.strip(), proc.stderr[-3000:]
    [result] = json.loads(proc.stdout)["schools"]
    result["wall"] = elapsed
    assert result["status"] != "failed", result["error"]
    return result


@pytest.fixture(scope="module")
def deployed(env) -> dict:
    first = run_json(env, "deploy")
    TIMES["first deploy"] = first["wall"]
    return first


@pytest.fixture(scope="module")
def school(env):
    from schoolctl.config.loader import load

    return load(Path(env["SCHOOLCTL_SCHOOLS_DIR"])).select([SID])[0]


@pytest.fixture(scope="module")
def pebble_root(lab, tmp_path_factory) -> Path:
    return lab.fetch_acme_root(tmp_path_factory.mktemp("pebble") / "root.pem")


def curl(lab, name: str, path: str, root: Path, port: int = 443, *extra: str) -> subprocess.CompletedProcess[str]:
    address = lab.host(HOST).address
    scheme = "https" if port == 443 else "http"
    return subprocess.run(["curl", "-sS", "--max-time", "20", "--noproxy", "*", "--cacert", str(root),
                           "--resolve", f"{name}:{port}:{address}", "-D", "-", *extra, f"{scheme}://{name}{path}"],
                          capture_output=True, text=True, timeout=30)


def headers_and_body(out: str) -> tuple[dict[str, str], str]:
    head, _, body = out.replace("\r\n", "\n").partition("\n\n")  # (text mode already folds \r\n)
    lines = head.split("\n")
    hs = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    hs[":status"] = lines[0].split()[1]
    return hs, body


def test_first_deploy(deployed):
    kinds = {c["kind"] for c in deployed["changes"]}
    steps = [c["what"] for c in deployed["changes"] if c["kind"] == "step"]
    assert any(s.startswith("TLS certificate from ACME") for s in steps), steps
    assert kinds  # a fresh host or a dropped certificate: something had to change


def test_landing_page_over_https_with_a_pebble_certificate(lab, deployed, school, pebble_root):
    proc = curl(lab, school.domain, "/", pebble_root)
    assert proc.returncode == 0, proc.stderr  # verified against pebble's current root: issued in this run
    hs, body = headers_and_body(proc.stdout)
    assert hs[":status"] == "200"
    assert hs["strict-transport-security"] == "max-age=63072000; includeSubDomains"
    assert hs["referrer-policy"] == "no-referrer"
    assert hs["x-content-type-options"] == "nosniff"
    assert hs["content-security-policy"].startswith("default-src 'self'; ")
    assert "frame-ancestors 'none'" in hs["content-security-policy"]
    assert "camera=()" in hs["permissions-policy"]
    assert hs["server"] == "nginx"  # no version
    assert '<html lang="ca">' in body and "Escola Web de Prova" in body
    for name in ("moodle", "cloud", "pad"):   # the platform layers only: no app deployed, none offered
        assert f"{name}.{school.domain}" not in body
    assert "mailto:dpd@bcn.example" in body
    for lang in ("es", "en"):
        page = curl(lab, school.domain, f"/index.{lang}.html", pebble_root)
        assert page.returncode == 0 and f'<html lang="{lang}">' in page.stdout


def test_certificate_covers_every_name(lab, deployed, school, pebble_root):
    address = lab.host(HOST).address
    pem = subprocess.run(["openssl", "s_client", "-connect", f"{address}:443", "-servername", school.domain],
                         input="", capture_output=True, text=True, timeout=30).stdout
    cert = subprocess.run(["openssl", "x509", "-noout", "-issuer", "-ext", "subjectAltName"], input=pem,
                          capture_output=True, text=True, timeout=30).stdout
    assert "Pebble" in cert
    for name in (school.domain, f"moodle.{school.domain}", f"cloud.{school.domain}", f"pad.{school.domain}"):
        assert f"DNS:{name}" in cert


def test_http_redirects_and_unknown_names_get_no_tls(lab, deployed, school, pebble_root):
    hs, _ = headers_and_body(curl(lab, school.domain, "/x?y=1", pebble_root, 80).stdout)
    assert hs[":status"] == "301" and hs["location"] == f"https://{school.domain}/x?y=1"
    other = curl(lab, f"nobody.{school.domain}", "/", pebble_root)
    assert other.returncode != 0  # ssl_reject_handshake on the default server


def test_access_log_is_anonymised(lab, deployed, school, pebble_root):
    curl(lab, school.domain, "/robots.txt", pebble_root)
    last = lab.run(HOST, "tail -n 1 /var/log/nginx/landing.access.log", check=True).stdout
    bridge = ipaddress.ip_network(f"{lab.host(HOST).address}/24", strict=False).network_address
    assert last.startswith(f"{bridge} - - ["), last
    assert "GET /robots.txt" in last


def test_postgres_listens_on_loopback_only_and_roles_work(lab, deployed):
    listening = lab.run(HOST, "ss -ltnH 'sport = :5432'", check=True).stdout.split("\n")
    addrs = [line.split()[3].rsplit(":", 1)[0].strip("[]") for line in listening if line.strip()]
    assert addrs and all(ipaddress.ip_address(a).is_loopback for a in addrs), addrs
    login = ('PGPASSWORD="$(cat /etc/schoolctl/secrets/db_{u})" psql -h 127.0.0.1 -U {u} -d {d} -tAc '
             '"SELECT current_user"')
    assert lab.run(HOST, login.format(u="moodle", d="moodle"), check=True).stdout.strip() == "moodle"
    assert lab.run(HOST, login.format(u="moodle", d="nextcloud")).returncode != 0
    assert lab.run(HOST, login.format(u="etherpad", d="etherpad"), check=True).stdout.strip() == "etherpad"


def test_php_pools_and_redis(lab, deployed):
    out = lab.run(HOST, "stat -c '%U:%G %a %n' /run/php/php8.4-fpm-moodle.sock /run/php/php8.4-fpm-nextcloud.sock "
                        "/run/redis/redis-server.sock; test ! -e /etc/php/8.4/fpm/pool.d/www.conf && echo no-www",
                  check=True).stdout
    assert "www-data:www-data 660 /run/php/php8.4-fpm-moodle.sock" in out
    assert "www-data:www-data 660 /run/php/php8.4-fpm-nextcloud.sock" in out
    assert "redis:redis 770 /run/redis/redis-server.sock" in out and "no-www" in out
    ping = "runuser -u {u} -- redis-cli -s /run/redis/redis-server.sock ping"
    assert lab.run(HOST, ping.format(u="nextcloud"), check=True).stdout.strip() == "PONG"
    assert lab.run(HOST, ping.format(u="www-data")).stdout.strip() != "PONG"
    assert lab.run(HOST, "ss -ltnH | grep -c ':6379 ' || true").stdout.strip() == "0"
    ini = lab.run(HOST, "runuser -u moodle -- php8.4 -r 'echo ini_get(\"max_input_vars\"), \" \", "
                        "extension_loaded(\"pgsql\") ? \"pgsql\" : \"-\";'", check=True).stdout
    assert ini == "5000 pgsql"


def test_second_deploy_changes_nothing(env, deployed):
    second = run_json(env, "deploy")
    TIMES["no-op deploy"] = second["wall"]
    TIMES["no-op deploy (runner)"] = second["seconds"]
    assert second["status"] == "unchanged", second["changes"]
    assert second["changes"] == []


def test_plan_shows_exactly_an_edited_file(lab, env, deployed):
    path = "/etc/nginx/snippets/schoolctl-headers.conf"
    lab.run(HOST, f"echo '# edited by hand' >> {path}", check=True)
    plan = run_json(env, "plan")
    assert [(c["kind"], c["what"], c["detail"]) for c in plan["changes"]] == [("file", path, "modify")]
    fix = run_json(env, "deploy")
    assert [c["what"] for c in fix["changes"]] == [path]
    assert "edited by hand" not in lab.run(HOST, f"cat {path}", check=True).stdout
    print("\ntimings:", ", ".join(f"{k} {v:.1f}s" for k, v in TIMES.items()))
