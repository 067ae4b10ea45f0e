"""The school's people on lab host p-1 (one deploy of Moodle 5.0.6 + Nextcloud 34.0.1 from the test mirror,
shared by both halves of this module: one school, as a real one has both):

Their languages. Moodle's language packs come offline from the mirror (langpack/4.5/ca.zip and es.zip, packs
of an older branch: `plan` warns); the login page speaks the school's first language, Catalan, and after the
school's file puts Spanish first and a re-deploy, Spanish; Nextcloud's default language follows; the audit's
language controls pass, and fail when Moodle's language is put back to English. Both apps' own admin checks
(`occ setupchecks`, Moodle's `admin/cli/checks.php`) are clean.

Their classes and their first login (after the above, the school back in Catalan):
- `users import` keeps a Moodle cohort per class (cohort sync enrolment on) and a folder per class in
  Nextcloud shared with the class's LDAP group; a second import changes nothing and says so;
- the credential letters of a class (`users letters --group 3A`) hold its people's letter passwords,
  read back with pdftotext, 0600, none of them on the terminal; a teacher enrols 3A into a course
  with Moodle's cohort sync;
- a new pupil's letter password must be changed at first Moodle login (Moodle's own change page, which
  writes the directory through cn=moodle; ppolicy hashes it); Nextcloud refuses the letter's password
  until then; afterwards the old password fails everywhere and the new one works;
- the school-year move (3A -> 4A): the dry run shows it; the import moves the pupil in the directory,
  the cohort and the Nextcloud group, deleting nobody and nothing they wrote; 3A's course keeps him suspended.

Needs root, the lab and the mirror; skips with the reason otherwise. SCHOOLCTL_KEEP_LAB=1 keeps the host.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
PSQL = "runuser -u postgres -- psql -XAt -d moodle -c"
ROSTER = [["Marta", "Puig", "teacher", "3A", "marta.puig@escola.example"],
          ["Pau", "Vidal", "student", "3A", ""],
          ["Laia", "Serra", "student", "3A", ""],
          ["Joan", "Roca", "student", "4A", ""]]
NEW_PASSWORD = "Nova-Clau-2026!"


def hidden_inputs(page: str) -> dict[str, str]:
    """name -> value of a page's hidden form fields (sesskey, _qf__..., id)."""
    from html.parser import HTMLParser

    found: dict[str, str] = {}

    class Inputs(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            a = dict(attrs)
            if tag == "input" and a.get("type") == "hidden" and a.get("name"):
                found[a["name"] or ""] = a.get("value") or ""

    Inputs().feed(page)
    return found



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

    def users_import(self, rows: list[list[str]], *extra: str) -> subprocess.CompletedProcess[str]:
        roster = self.work / "roster.csv"
        with roster.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["given_name", "family_name", "role", "group", "email"])
            w.writerows(rows)
        return self.cli("users", "import", self.sid, str(roster), "--yes", *extra)

    def moodle(self, jar: Path, path: str, data: dict[str, str] | None = None) -> tuple[str, str]:
        """(final URL, page) of GET/POST https://moodle.<domain><path>, redirects followed."""
        fqdn = f"moodle.{self.school.domain}"
        cmd = ["curl", "-sS", "--max-time", "60", "--noproxy", "*", "-k", "--resolve",
               f"{fqdn}:443:{self.lab.host(self.host).address}", "-b", str(jar), "-c", str(jar), "-L",
               "-o", "-", "-w", "\n@@%{url_effective}"]
        stdin = None
        if data:   # the form on stdin: no password on a command line
            from urllib.parse import urlencode

            cmd += ["--data-binary", "@-"]
            stdin = urlencode(data)
        proc = subprocess.run([*cmd, f"https://{fqdn}{path}"], capture_output=True, text=True, timeout=90,
                              input=stdin)
        assert proc.returncode == 0, proc.stderr
        page, _, url = proc.stdout.rpartition("\n@@")
        return url, page

    def moodle_login(self, uid: str, password: str) -> tuple[Path, str, str]:
        jar = Path(tempfile.mkdtemp()) / "jar"
        _, page = self.moodle(jar, "/login/index.php")
        token = re.search(r'name="logintoken" value="([^"]+)"', page)
        assert token, page[-1500:]
        url, page = self.moodle(jar, "/login/index.php", {"username": uid, "password": password,
                                                          "logintoken": token.group(1)})
        return jar, url, page

    def ldap_bind(self, uid: str, password: str) -> bool:
        """A simple bind as the person over LDAPS on the server (the password on stdin)."""
        dn = f"uid={uid},ou=people,{self.school.ldap_base}"
        proc = self.sh(f"ldapwhoami -x -H ldaps://127.0.0.1 -D '{dn}' -y /dev/stdin", input=password)
        return proc.returncode == 0

    def webdav(self, uid: str, password: str) -> tuple[int, str]:
        return self.curl("nextcloud", f"/remote.php/dav/files/{uid}/", "-X", "PROPFIND", "-H", "Depth: 1",
                         user=(uid, password))

    def cohorts(self) -> dict[str, list[str]]:
        out = self.ok(f"{PSQL} \"SELECT c.name, coalesce(string_agg(u.username, ',' ORDER BY u.username), '') "
                      "FROM mdl_cohort c LEFT JOIN mdl_cohort_members m ON m.cohortid = c.id "
                      "LEFT JOIN mdl_user u ON u.id = m.userid WHERE c.idnumber LIKE 'schoolctl-class-%' "
                      "GROUP BY c.name ORDER BY c.name\"")
        return {name: [u for u in members.split(",") if u]
                for name, _, members in (line.partition("|") for line in out.splitlines())}


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
    # LogErrors judges nextcloud.log: what it holds at warning or worse is only the DNS pinning's lament
    log = deployed.sh("cat /var/lib/nextcloud/data/nextcloud.log 2>/dev/null").stdout
    entries = [json.loads(line) for line in log.splitlines() if line.strip()]
    other = [e["message"][:300] for e in entries
             if e.get("level", 0) >= 2 and "DnsPinMiddleware.php" not in e.get("message", "")]
    assert not other, other
    # the items the issue named are among the clean ones: WebDAV, .well-known, OCM/OCS provider, .mjs,
    # the database indices and the mimetype migrations
    assert deployed.ok("tail -1 /etc/hosts").startswith("127.0.0.1 p-people.escoles.bcn.example ")


@pytest.mark.parametrize("kind", ["status", "security"])
def test_moodle_checks_have_no_error_and_no_exception(cron_ran: Env, kind: str) -> None:
    deployed = cron_ran
    proc = deployed.sh(f"{NO_PROXY_ENV} runuser -u moodle -- /usr/bin/php8.4 "
                       f"/srv/moodle/current/admin/cli/checks.php --type={kind}")
    text = proc.stdout + proc.stderr
    # checks.php speaks NRPE: exit 0 (OK) or 1 (WARNING), its first line's label untranslated; an uncaught
    # exception is printed as "!!! <localised word> ... !!!" (the site speaks Catalan or Spanish here)
    assert proc.returncode in (0, 1) and re.match(r"(OK|WARNING): ", proc.stdout), text[-3000:]
    assert "!!!" not in text and "xception" not in text and not re.search(r"\b(ERROR|CRITICAL)\b", text), \
        text[-3000:]


# --- their classes and their first login ------------------------------------------------------

@pytest.fixture(scope="module")
def imported(deployed: Env) -> dict[str, Any]:
    env = deployed
    # the school's file is in Catalan again (the Spanish test put it back): the server follows
    first = env.deploy("deploy before the import (back to Catalan)")
    assert first["status"] in ("changed", "unchanged"), first
    proc = env.users_import(ROSTER, "--json")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    from ansible.parsing.vault import VaultLib, VaultSecret

    key = Path(env.env["SCHOOLCTL_VAULT_KEY_FILE"]).read_bytes().strip()
    vault = report["passwords_file"] or max((env.work / "secrets").glob(f"{SID}-initial-passwords-*.vault"))
    rows = csv.DictReader(VaultLib([("default", VaultSecret(key))]).decrypt(
        Path(vault).read_bytes()).decode().splitlines())
    report["people"] = {r["uid"]: r["initial_password"] for r in rows}
    return report


def test_import_makes_cohorts_and_class_folders(env: Env, imported: dict[str, Any]) -> None:
    moodle, nextcloud = imported["classes"]["moodle"], imported["classes"]["nextcloud"]
    assert "cohort 3A created" in moodle["changes"] and "cohort 4A created" in moodle["changes"], moodle
    assert "4 must change the letter's password at next login" in moodle["changes"], moodle
    assert "/Classes/3A shared with class-3a" in nextcloud["changes"], nextcloud
    assert "/Classes/4A shared with class-4a" in nextcloud["changes"], nextcloud
    assert env.cohorts() == {"3A": ["laia.serra", "marta.puig", "pau.vidal"], "4A": ["joan.roca"]}
    assert "cohort" in env.ok("runuser -u moodle -- /usr/bin/php8.4 /srv/moodle/current/admin/cli/cfg.php "
                              "--name=enrol_plugins_enabled").strip().split(",")
    assert env.ok("ls /var/lib/nextcloud/data/admin/files/Classes").split() == ["3A", "4A"]
    # the second identical import changes nothing, in the directory or the apps, and says so
    again = env.users_import(ROSTER)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"{SID}: unchanged" in again.stdout, again.stdout
    assert "moodle: classes unchanged" in again.stdout and "nextcloud: classes unchanged" in again.stdout, \
        again.stdout
    # the deploy has nothing to do either (no check per class on the deploy side)
    assert env.deploy("second deploy (nothing to do)")["status"] == "unchanged"


def test_letters_for_a_class_carry_its_passwords_and_nothing_leaks(env: Env, imported: dict[str, Any]) -> None:
    out = env.work / "letters-3A.pdf"
    proc = env.cli("users", "letters", SID, "--group", "3A", "--output", str(out))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert out.stat().st_mode & 0o777 == 0o600
    text = subprocess.run(["pdftotext", "-layout", str(out), "-"], capture_output=True, text=True,
                          check=True).stdout
    for uid in ("pau.vidal", "laia.serra", "marta.puig"):
        assert uid in text and imported["people"][uid] in text, (uid, text[:2000])
    assert "joan.roca" not in text, text[:2000]   # 4A's letter is not in 3A's file
    for password in imported["people"].values():
        assert password not in proc.stdout + proc.stderr
    again = env.cli("users", "letters", SID, "--group", "3A", "--output", str(out))
    assert again.returncode == 2 and "--force" in again.stderr, again.stdout + again.stderr


# a course 3A's teacher enrols her class into with Moodle's cohort sync (its CLI has no verb for that)
ENROL_3A = r"""<?php
define('CLI_SCRIPT', true);
require('/srv/moodle/current/config.php');
require_once($CFG->dirroot . '/course/lib.php');
require_once($CFG->dirroot . '/enrol/cohort/locallib.php');
$cohort = $DB->get_record_select('cohort', "name = '3A' AND " . $DB->sql_like('idnumber', ':p'),
                                 ['p' => 'schoolctl-class-%'], '*', MUST_EXIST);
$course = $DB->get_record('course', ['shortname' => 'MAT3A']) ?: create_course(
    (object)['fullname' => 'Matemàtiques 3A', 'shortname' => 'MAT3A', 'category' => 1]);
$student = $DB->get_field('role', 'id', ['shortname' => 'student'], MUST_EXIST);
if (!$DB->record_exists('enrol', ['courseid' => $course->id, 'enrol' => 'cohort', 'customint1' => $cohort->id])) {
    enrol_get_plugin('cohort')->add_instance($course, ['customint1' => $cohort->id, 'roleid' => $student]);
}
enrol_cohort_sync(new null_progress_trace(), $course->id);
"""


def enrolment(env: Env, uid: str) -> str:
    """status|roles of `uid` in course MAT3A through cohort sync ('' when not enrolled)."""
    return env.ok(f"{PSQL} \"SELECT ue.status || '|' || (SELECT count(*) FROM mdl_role_assignments ra "
                  f"JOIN mdl_context x ON x.id = ra.contextid AND x.contextlevel = 50 WHERE x.instanceid = c.id "
                  f"AND ra.userid = u.id) FROM mdl_user_enrolments ue JOIN mdl_enrol e ON e.id = ue.enrolid "
                  f"JOIN mdl_course c ON c.id = e.courseid JOIN mdl_user u ON u.id = ue.userid "
                  f"WHERE c.shortname = 'MAT3A' AND e.enrol = 'cohort' AND u.username = '{uid}'\"").strip()


def test_a_teacher_enrols_her_class_by_its_cohort(env: Env, imported: dict[str, Any]) -> None:
    proc = env.sh("install -m 0644 /dev/stdin /tmp/enrol-3a.php && "
                  "runuser -u moodle -- /usr/bin/php8.4 /tmp/enrol-3a.php", input=ENROL_3A)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert enrolment(env, "pau.vidal") == "0|1" and enrolment(env, "laia.serra") == "0|1"
    assert enrolment(env, "joan.roca") == ""


def test_first_login_forces_a_new_password(env: Env, imported: dict[str, Any]) -> None:
    uid, initial = "pau.vidal", imported["people"]["pau.vidal"]
    # Nextcloud refuses the letter's password (pwdReset): Moodle, the hub, comes first
    assert env.webdav(uid, initial)[0] == 401
    jar, url, page = env.moodle_login(uid, initial)
    assert "/login/change_password.php" in url, (url, page[-1500:])
    form = hidden_inputs(page)
    assert "sesskey" in form, page[-2000:]
    url, page = env.moodle(jar, "/login/change_password.php", {**form, "password": initial,
                                                                "newpassword1": NEW_PASSWORD,
                                                                "newpassword2": NEW_PASSWORD,
                                                                "submitbutton": "Save changes"})
    pref = env.ok(f"{PSQL} \"SELECT count(*) FROM mdl_user_preferences p JOIN mdl_user u ON u.id = p.userid "
                  f"WHERE u.username = '{uid}' AND p.name = 'auth_forcepasswordchange' AND p.value = '1'\"")
    assert pref.strip() == "0", (url, page[-2500:])
    # the directory: the old password fails, the new one works, stored hashed by slapd, pwdReset gone
    assert not env.ldap_bind(uid, initial) and env.ldap_bind(uid, NEW_PASSWORD)
    entry = env.ok(f"slapcat -a 'uid={uid}' -o ldif-wrap=no")
    import base64

    stored = base64.b64decode(re.search(r"^userPassword:: (\S+)", entry, re.M).group(1)).decode()
    assert stored.startswith("{ARGON2}") and NEW_PASSWORD not in entry and "pwdReset" not in entry, entry
    # Moodle and Nextcloud: the old one fails, the new one works; the class folder is there
    assert "/login/" in env.moodle_login(uid, initial)[1]
    _, url, _ = env.moodle_login(uid, NEW_PASSWORD)
    assert "/my/" in url, url
    assert env.webdav(uid, initial)[0] == 401
    code, listing = env.webdav(uid, NEW_PASSWORD)
    assert code == 207 and "/3A/" in listing, listing[-1500:]
    # another pupil, not logged in yet, is still on the letter's password
    assert env.ldap_bind("laia.serra", imported["people"]["laia.serra"])
    assert env.webdav("laia.serra", imported["people"]["laia.serra"])[0] == 401


def test_the_school_year_move(env: Env, imported: dict[str, Any]) -> None:
    uid = "pau.vidal"
    # Pau's work in 3A's folder, before the move
    code, _ = env.curl("nextcloud", f"/remote.php/dav/files/{uid}/3A/deures.txt", "-X", "PUT", "--data-binary",
                       "els deures de 3A", user=(uid, NEW_PASSWORD))
    assert code in (201, 204), code
    moved = [r if r[1] != "Vidal" else [*r[:3], "4A", r[4]] for r in ROSTER]
    dry = env.users_import(moved, "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert re.search(r"> move\s+pau\.vidal\s+class 3A -> 4A", dry.stdout), dry.stdout
    assert "1 moved to another class" in dry.stdout and env.cohorts()["3A"].count(uid) == 1
    done = env.users_import(moved, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["moved"] == [{"uid": uid, "from": "3A", "to": "4A"}], report
    assert report["suspended"] == [] and report["deleted"] == [], report
    assert "1 removed from 3A" in report["classes"]["moodle"]["changes"], report["classes"]
    assert "1 added to 4A" in report["classes"]["moodle"]["changes"], report["classes"]
    assert env.cohorts() == {"3A": ["laia.serra", "marta.puig"], "4A": ["joan.roca", "pau.vidal"]}
    base = env.school.ldap_base
    groups = env.ok(f"ldapsearch -Q -Y EXTERNAL -H ldapi:/// -LLL -o ldif-wrap=no -b ou=groups,{base} "
                    f"'(member=uid={uid},ou=people,{base})' cn")
    assert "cn: class-4a" in groups and "cn: class-3a" not in groups, groups
    # Nextcloud follows the directory's groups (user_ldap; its cache, 10 minutes, emptied here)
    env.ok("redis-cli -s /run/redis/redis-server.sock -n 0 FLUSHDB >/dev/null")
    code, listing = env.webdav(uid, NEW_PASSWORD)
    assert code == 207 and "/4A/" in listing and "/3A/" not in listing, listing[-1500:]
    # nobody deleted, and what Pau wrote in 3A's folder stays there (the admin's, shared to 3A)
    assert env.ok("cat /var/lib/nextcloud/data/admin/files/Classes/3A/deures.txt") == "els deures de 3A"
    row = env.ok(f"{PSQL} \"SELECT deleted, suspended FROM mdl_user WHERE username = '{uid}'\"").strip()
    assert row == "0|0", row
    # 3A's course keeps him, suspended with no role (enrol_cohort's unenrolaction 3): his work there stays
    assert enrolment(env, uid) == "1|0" and enrolment(env, "laia.serra") == "0|1"
