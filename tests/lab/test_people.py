"""The school's people on lab host p-1 (one deploy of Moodle 5.0.6 + Nextcloud 34.0.1 from the test mirror):
their languages. Moodle's language packs come offline from the mirror (langpack/4.5/ca.zip and es.zip, packs
of an older branch: `plan` warns); the login page speaks the school's first language, Catalan, and after the
school's file puts Spanish first and a re-deploy, Spanish; Nextcloud's default language follows; the audit's
language controls pass, and fail when Moodle's language is put back to English.

Needs root, the lab and the mirror; skips with the reason otherwise. SCHOOLCTL_KEEP_LAB=1 keeps the host.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from .support import SchoolEnv, skip_reason

pytestmark = [pytest.mark.lab, pytest.mark.mirror]

HOST = "p-1"
SID = "p-people"
LAYERS = "base,firewall,identity,database,php,web,moodle,nextcloud"
ARCHIVES = ("moodle-5.0.6.tgz", "nextcloud-34.0.1.tar.bz2", "langpack/4.5/ca.zip", "langpack/4.5/es.zip")
CFG = "runuser -u moodle -- /usr/bin/php8.4 /srv/moodle/current/admin/cli/cfg.php"
OCC = "cd /srv/nextcloud/current && runuser -u nextcloud -- /usr/bin/php8.4 occ"
SERVICES = {"moodle": {"version": "5.0.6"}, "nextcloud": {"version": "34.0.1"}}


class Env(SchoolEnv):
    def set_languages(self, languages: list[str]) -> None:
        """Put `languages` into the school's own file (the fleet's stay [ca, es, en])."""
        path = self.schools / f"{self.sid}.yaml"
        data = yaml.safe_load(path.read_text())
        data["languages"] = languages
        path.write_text(yaml.safe_dump(data, allow_unicode=True))

    def login_page(self) -> str:
        fqdn = f"moodle.{self.school.domain}"
        address = self.lab.host(self.host).address
        proc = subprocess.run(["curl", "-sS", "--max-time", "60", "--noproxy", "*", "-k", "--resolve",
                               f"{fqdn}:443:{address}", f"https://{fqdn}/login/index.php"],
                              capture_output=True, text=True, timeout=90)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    def audit(self, *ids: str) -> dict[str, tuple[str, str]]:
        from schoolctl.audit import catalogue
        from schoolctl.audit.runner import audit_school, expectations

        catalogue.load_all()
        os.environ.update({k: self.env[k] for k in ("SCHOOLCTL_VAULT_KEY_FILE", "SCHOOLCTL_SECRETS_DIR")})
        school = self.school
        result = audit_school(school, expect=expectations(school), only=list(ids))
        assert result.error is None, result.error
        return {r.control.id: (r.status, r.observed) for r in result.controls}


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    reason = skip_reason(ARCHIVES)
    if reason:
        pytest.skip(reason)
    from schoolctl.lab import Lab

    lab = Lab()
    lab.up([HOST], timeout=180)
    kept = os.environ.get("SCHOOLCTL_PEOPLE_LAB_DIR")
    e = Env(lab, Path(kept) if kept else tmp_path_factory.mktemp("people"), HOST, SID, LAYERS, services=SERVICES)
    try:
        yield e
    finally:
        if not os.environ.get("SCHOOLCTL_KEEP_LAB"):
            lab.down([HOST])


@pytest.fixture(scope="module")
def deployed(env: Env) -> Env:
    fresh = env.lab.run(HOST, "test -e /var/lib/moodle/installed", timeout=60).returncode != 0
    plan = env.cli("plan", SID, timeout=900)
    assert plan.returncode == 0, plan.stdout[-2000:] + plan.stderr[-2000:]
    # the mirror's packs are for 4.5: used on 5.0.6, with the warning that newer strings show in English
    assert "gets the ca language pack of 4.5" in plan.stderr and "show in English" in plan.stderr, plan.stderr
    if fresh:  # (a host kept from an earlier run, SCHOOLCTL_KEEP_LAB, has its packs already)
        assert "moodle language pack ca (langpack/4.5/ca.zip" in plan.stdout, plan.stdout[-3000:]
    first = env.deploy("first deploy (Moodle + Nextcloud, language packs)")
    assert first["status"] == ("changed" if fresh else first["status"]), first
    return env


def test_moodle_speaks_catalan_from_the_offline_pack(deployed: Env) -> None:
    lang = "/var/lib/moodle/data/lang"
    packs = deployed.ok(f"stat -c '%U %a %n' {lang}/ca/langconfig.php {lang}/es/langconfig.php; "
                        f"cat {lang}/ca/.schoolctl-sha256")
    assert packs.split()[:6] == ["root", "644", "/var/lib/moodle/data/lang/ca/langconfig.php",
                                 "root", "644", "/var/lib/moodle/data/lang/es/langconfig.php"], packs
    assert packs.split()[6] == "06dfc3681d86476200ef4dbe1c3eee71ab00f9be4bb366f3592f7b4490b813f8"
    assert deployed.ok(f"{CFG} --name=lang").strip() == "ca"
    assert deployed.ok(f"{CFG} --name=langlist").strip() == "ca,es,en"
    page = deployed.login_page()
    assert re.search(r'<html[^>]* lang="ca"', page), page[:600]
    assert "Inicia la sessió" in page, page[-2000:]
    assert deployed.ok(f"{OCC} config:system:get default_language").strip() == "ca"
    # the nothing-left-to-do deploy: packs and settings already in place
    again = deployed.deploy("second deploy (nothing to do)")
    assert again["status"] == "unchanged", again["changes"]


def test_the_language_controls_pass_and_catch_english(deployed: Env) -> None:
    ids = ("MOODLE-LANGUAGE", "NEXTCLOUD-LANGUAGE")
    assert {c: s for c, (s, _) in deployed.audit(*ids).items()} == dict.fromkeys(ids, "pass")
    deployed.ok(f"{CFG} --name=lang --set=en")
    try:
        found = deployed.audit("MOODLE-LANGUAGE")["MOODLE-LANGUAGE"]
        assert found[0] == "fail" and "lang = 'en'" in found[1], found
    finally:
        deployed.ok(f"{CFG} --name=lang --set=ca")


def test_a_spanish_first_school_gets_spanish(deployed: Env) -> None:
    deployed.set_languages(["es", "ca", "en"])
    try:
        result = deployed.deploy("re-deploy with Spanish first")
        assert result["status"] == "changed", result
        assert deployed.ok(f"{CFG} --name=lang").strip() == "es"
        page = deployed.login_page()
        assert re.search(r'<html[^>]* lang="es"', page), page[:600]
        assert "Acceder" in page, page[-2000:]
        assert deployed.ok(f"{OCC} config:system:get default_language").strip() == "es"
        assert deployed.audit("MOODLE-LANGUAGE", "NEXTCLOUD-LANGUAGE")["MOODLE-LANGUAGE"][0] == "pass"
    finally:
        deployed.set_languages(["ca", "es", "en"])


# --- healthy in their own admins' eyes ------------------------------------------------------------

# The admin's shell on a lab host has the lab proxy in /etc/environment, whose no_proxy lacks the school's
# own names (the base layer's; see the report of issue 15): the apps' checks run without it, as PHP-FPM does.
NO_PROXY_ENV = "env -u http_proxy -u https_proxy -u HTTP_PROXY -u HTTPS_PROXY"
# setupchecks that may warn or fail here, each for a reason of the lab or the test mirror, never the deploy
SETUPCHECK_EXCEPTIONS = {
    "OCA\\Settings\\SetupChecks\\CodeIntegrity": "the test mirror's tree is rebuilt from a copy that lacks "
                                                 "files (dist/core-common.js): its integrity check fails",
    "OCA\\LogReader\\SetupChecks\\LogErrors": "the lab host has no DNS resolver (the test fleet's dns: []): "
                                              "Nextcloud's DNS pinning logs a warning for each request it makes",
}


@pytest.fixture(scope="module")
def cron_ran(deployed: Env) -> Env:
    """Each app's background jobs run once, as their timers do within minutes of a deploy (both apps'
    checks fail while cron has never run)."""
    # a run that ends non-zero (e.g. one of Moodle's scheduled tasks failing on a fresh site) still ran:
    # the checks below judge what it left
    # (systemd has refused a start here once under load, "unavailable resources": tried up to 3 times)
    ran = deployed.sh("for u in nextcloud-cron.service moodle-cron.service; do for i in 1 2 3; do "
                      "systemctl start $u && break; "
                      "[ \"$(systemctl show -p ExecMainStartTimestampMonotonic --value $u)\" != 0 ] && break; "
                      "sleep 5; done; done; "
                      "systemctl show -p ExecMainStartTimestampMonotonic nextcloud-cron.service moodle-cron.service")
    assert ran.stdout.count("ExecMainStartTimestampMonotonic=") == 2 and "Monotonic=0\n" not in ran.stdout + "\n", \
        ran.stdout + ran.stderr
    return deployed


def test_nextcloud_setupchecks_are_clean(cron_ran: Env) -> None:
    import json

    deployed = cron_ran

    # (it exits 1 while any check fails: the integrity check of the test mirror's tree does)
    out = deployed.sh(f"{NO_PROXY_ENV} sh -c '{OCC} setupchecks --output=json'").stdout
    found = {name: (r["severity"], r["description"][:300]) for checks in json.loads(out[out.index("{"):]).values()
             for name, r in checks.items() if r["severity"] in ("warning", "error")}
    unexpected = {k: v for k, v in found.items() if k not in SETUPCHECK_EXCEPTIONS}
    assert not unexpected, unexpected
    # the items the issue named are among the clean ones: WebDAV, .well-known, OCM/OCS provider, .mjs,
    # the database indices and the mimetype migrations
    assert deployed.ok("tail -1 /etc/hosts").startswith("127.0.0.1 p-people.escoles.bcn.example ")


@pytest.mark.parametrize("kind", ["status", "security"])
def test_moodle_checks_have_no_error_and_no_exception(cron_ran: Env, kind: str) -> None:
    deployed = cron_ran
    proc = deployed.sh(f"{NO_PROXY_ENV} runuser -u moodle -- /usr/bin/php8.4 "
                       f"/srv/moodle/current/admin/cli/checks.php --type={kind}")
    text = proc.stdout + proc.stderr
    assert "xception" not in text and not re.search(r"\b(ERROR|CRITICAL)\b", text), text[-3000:]
