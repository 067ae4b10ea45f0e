"""Classes everywhere and the first login, on lab host t-cls-1 (one deploy of Moodle 5.0.6 + Nextcloud
34.0.1 from the test mirror):
- `users import` keeps a Moodle cohort per class (cohort sync enrolment on) and a folder per class in
  Nextcloud shared with the class's LDAP group; a second import changes nothing and says so;
- a new pupil's letter password must be changed at first Moodle login (Moodle's own change page, which
  writes the directory through cn=moodle; ppolicy hashes it); Nextcloud refuses the letter's password
  until then; afterwards the old password fails everywhere and the new one works;
- the school-year move (3A -> 4A): the dry run shows it; the import moves the pupil in the directory,
  the cohort and the Nextcloud group, deleting nobody and nothing they wrote.

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

from .support import SchoolEnv, skip_reason

pytestmark = [pytest.mark.lab, pytest.mark.mirror]

HOST = "t-cls-1"
SID = "t-cls"
LAYERS = "base,firewall,identity,database,php,web,moodle,nextcloud"
ARCHIVES = ("moodle-5.0.6.tgz", "nextcloud-34.0.1.tar.bz2")
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
    kept = os.environ.get("SCHOOLCTL_CLASSES_LAB_DIR")   # with SCHOOLCTL_KEEP_LAB: the same host again
    e = Env(lab, Path(kept) if kept else tmp_path_factory.mktemp("classes"), HOST, SID, LAYERS, services=SERVICES)
    try:
        yield e
    finally:
        print("\ntimings:", e.timings)
        if not os.environ.get("SCHOOLCTL_KEEP_LAB"):
            lab.down([HOST])


@pytest.fixture(scope="module")
def imported(env: Env) -> dict[str, Any]:
    first = env.deploy("first deploy (Moodle + Nextcloud)")
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
