"""The school's directory for real: slapd deployed on lab host i-1 (LDAP over TLS only, certificate
checked), then `schoolctl users import` of a 200-person roster: created, unchanged on a second run,
refused whole for one bad row, leavers suspended, then deleted with a grace period of 0 days.

Needs root and the lab; deploys the layers `base` and `identity` (the firewall layer is left out:
this test is about the directory)."""

from __future__ import annotations

import csv
import json
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from ansible.parsing.vault import VaultLib, VaultSecret

from schoolctl.lab import Lab

pytestmark = pytest.mark.lab

HOST = "i-1"
SCHOOL = "i-users"
BASE = f"dc={SCHOOL},dc=escoles,dc=bcn,dc=example"
REPO = Path(__file__).resolve().parents[2]
CLASSES = [f"{year}{letter}" for year in range(1, 7) for letter in "AB"]
# run the real CLI with the identity layer and the `users` sub-app, whether or not they are wired in yet
LAYERS = "base,identity"


def school_yaml(grace: int) -> str:
    return (f"id: {SCHOOL}\nname: Escola Identitat\ndistrict: Gràcia\nserver: lab:{HOST}\nservices: {{}}\n"
            "contacts:\n  dpo:\n    name: DPD\n    email: dpd@bcn.example\n"
            f"privacy:\n  leaver_grace_days: {grace}\n")


def roster_rows(seed: int = 7) -> list[list[str]]:
    """180 students (15 in each class 1A..6B) and 20 teachers, names with accents and collisions."""
    rnd = random.Random(seed)
    given = ["Marta", "Joan", "Núria", "Pau", "Laia", "Jordi", "Aina", "Marc", "Júlia", "Àlex", "Mireia", "Oriol",
             "Clàudia", "Pere", "Anna", "Èric", "Sílvia", "Roger", "Iñaki", "Ona"]
    family = ["Puig", "Garcia", "Martínez", "Soler", "Vidal", "Ferrer", "Font", "Serra", "López", "Pujol", "Roca",
              "Sala", "Castells", "Domènech", "Col·lell", "Muñoz", "de la Fuente", "Bosch", "Riera", "Ibáñez"]
    seen: set[tuple[str, str]] = set()

    def name() -> tuple[str, str]:
        while True:
            g, f = rnd.choice(given), f"{rnd.choice(family)} {rnd.choice(family)}"
            if (g, f) not in seen:
                seen.add((g, f))
                return g, f

    rows = [[*name(), "student", c, ""] for c in CLASSES for _ in range(15)]
    rows += [[*name(), "teacher", CLASSES[i] if i < 6 else "", f"teacher{i}@escola.example"] for i in range(20)]
    return rows


def write_roster(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["given_name", "family_name", "role", "group", "email"])
        w.writerows(rows)
    return path


class Env:
    def __init__(self, lab: Lab, work: Path):
        self.lab, self.work = lab, work
        self.schools = work / "schools"
        self.env = {**os.environ, "SCHOOLCTL_VAULT_KEY_FILE": str(work / "vault.key"),
                    "SCHOOLCTL_SECRETS_DIR": str(work / "secrets"),
                    "SCHOOLCTL_LAYERS": LAYERS}
        self.env.pop("SCHOOLCTL_LOG", None)

    def cli(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "schoolctl.cli", "--schools-dir", str(self.schools), *args],
                              capture_output=True, text=True, timeout=timeout, env=self.env, cwd=self.work)

    def import_(self, roster: Path, *extra: str) -> tuple[subprocess.CompletedProcess[str], dict]:
        proc = self.cli("users", "import", SCHOOL, str(roster), "--yes", "--json", *extra)
        return proc, (json.loads(proc.stdout) if proc.returncode in (0, 1) and proc.stdout.strip() else {})

    def sh(self, command: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return self.lab.run(HOST, command, timeout=120, input=input)

    def dump(self) -> str:
        """Every entry and its operational attributes: any change shows here."""
        return self.sh(f"ldapsearch -Q -LLL -Y EXTERNAL -H ldapi:/// -o ldif-wrap=no -b {BASE} '*' '+'").stdout

    def uids(self, ou: str) -> set[str]:
        out = self.sh(f"ldapsearch -Q -LLL -Y EXTERNAL -H ldapi:/// -b ou={ou},{BASE} -s one uid").stdout
        return {line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("uid: ")}

    def apps_search(self, base: str, *attrs: str) -> subprocess.CompletedProcess[str]:
        return self.sh(f"ldapsearch -LLL -o ldif-wrap=no -H ldaps://127.0.0.1:636 -x -D cn=apps,{BASE} "
                       f"-y /etc/schoolctl/secrets/ldap_apps -b {base} {' '.join(attrs)}")


@pytest.fixture(scope="module")
def env(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    work = tmp_path_factory.mktemp("users-import")
    e = Env(lab, work)
    e.schools.mkdir()
    shutil.copy(REPO / "schools" / "fleet.yaml", e.schools / "fleet.yaml")
    (e.schools / f"{SCHOOL}.yaml").write_text(school_yaml(30), encoding="utf-8")
    lab.down([HOST])            # a fresh host: the deploy starts from a bare Debian 13
    lab.up([HOST], timeout=180)
    assert e.cli("secrets", "init").returncode == 0
    try:
        yield e
    finally:
        lab.down([HOST])


@pytest.fixture(scope="module")
def deployed(env: Env) -> Env:
    proc = env.cli("deploy", SCHOOL, "--yes", "--json", timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    again = env.cli("deploy", SCHOOL, "--yes", "--json")
    assert json.loads(again.stdout)["schools"][0]["status"] == "unchanged", again.stdout[-3000:]
    return env


@pytest.fixture(scope="module")
def rows() -> list[list[str]]:
    return roster_rows()


def test_slapd_speaks_tls_only_with_a_checked_certificate(deployed: Env) -> None:
    listening = deployed.sh("ss -Hltn").stdout
    assert "127.0.0.1:636" in listening and ":389" not in listening
    assert "0.0.0.0:636" not in listening and "*:636" not in listening
    ok = deployed.apps_search(BASE, "-s base", "dn")
    assert ok.returncode == 0 and f"dn: {BASE}" in ok.stdout, ok.stderr
    plain = deployed.sh(f"ldapsearch -LLL -H ldap://127.0.0.1:389 -x -b {BASE} -s base dn")
    assert plain.returncode != 0 and "Can't contact LDAP server" in plain.stderr
    other_ca = deployed.sh(f"LDAPTLS_CACERT=/etc/ssl/certs/ca-certificates.crt ldapsearch -LLL -H "
                           f"ldaps://127.0.0.1:636 -x -D cn=apps,{BASE} -y /etc/schoolctl/secrets/ldap_apps "
                           f"-b {BASE} -s base dn")
    assert other_ca.returncode != 0, "a certificate not issued by the school's CA was accepted"
    anonymous = deployed.sh(f"ldapsearch -LLL -H ldaps://127.0.0.1:636 -x -b {BASE} -s base dn")
    assert anonymous.returncode != 0 and "anonymous bind disallowed" in anonymous.stderr


def test_import_of_200_people(deployed: Env, rows: list[list[str]]) -> None:
    roster = write_roster(deployed.work / "roster.csv", rows)
    start = time.monotonic()
    proc, report = deployed.import_(roster)
    took = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr
    print(f"\nimport of 200 people: {took:.1f}s (command), {report['seconds']}s (search + apply)")
    assert report["counts"]["added"] == 200 and report["status"] == "changed"
    assert len(deployed.uids("people")) == 200
    assert sorted(report["groups"]["created"]) == sorted(["teachers", "students", *(f"class-{c.lower()}"
                                                                                      for c in CLASSES)])
    # the initial passwords: only in the encrypted file, never in the command's output
    vault = Path(report["passwords_file"])
    assert vault.name.startswith(f"{SCHOOL}-initial-passwords-") and oct(vault.stat().st_mode)[-3:] == "600"
    key = Path(deployed.env["SCHOOLCTL_VAULT_KEY_FILE"]).read_bytes().strip()
    table = list(csv.DictReader(VaultLib([("default", VaultSecret(key))]).decrypt(vault.read_bytes())
                                .decode().splitlines()))
    assert len(table) == 200
    human = deployed.cli("users", "import", SCHOOL, str(roster), "--yes")   # same roster: nothing new, text output
    for output in (proc.stdout, proc.stderr, human.stdout, human.stderr):
        assert not any(row["initial_password"] in output for row in table)
    # a person logs in with their initial password over TLS; the apps see people and groups, no passwords
    person = next(r for r in table if r["group"] == "1A")
    who = deployed.sh(f"umask 077; f=$(mktemp); cat > $f; ldapwhoami -H ldaps://127.0.0.1:636 -x "
                      f"-D uid={person['uid']},ou=people,{BASE} -y $f; rc=$?; rm -f $f; exit $rc",
                      input=person["initial_password"])
    assert who.returncode == 0 and person["uid"] in who.stdout, who.stderr
    seen = deployed.apps_search(f"ou=people,{BASE}", f"'(uid={person['uid']})'", "'*'", "memberOf", "userPassword")
    assert f"memberOf: cn=class-1a,ou=groups,{BASE}" in seen.stdout and "userPassword" not in seen.stdout
    assert f"member: uid={person['uid']},ou=people,{BASE}" in deployed.apps_search(
        f"cn=class-1a,ou=groups,{BASE}", "member").stdout


def test_second_identical_import_is_unchanged(deployed: Env) -> None:
    before = deployed.dump()
    proc, report = deployed.import_(deployed.work / "roster.csv")
    assert proc.returncode == 0 and report["status"] == "unchanged", proc.stdout + proc.stderr
    assert {k: v for k, v in report["counts"].items() if v} == {"unchanged": 200}
    human = deployed.cli("users", "import", SCHOOL, str(deployed.work / "roster.csv"), "--yes")
    assert f"{SCHOOL}: unchanged (200 people, nothing to do)" in human.stdout
    assert deployed.dump() == before


def test_one_bad_row_imports_nothing(deployed: Env, rows: list[list[str]]) -> None:
    bad = [*rows[:50], ["Pol", "Serra Vidal", "janitor", "1A", ""], *rows[50:], ["Nou", "Alumne", "student", "1A", ""]]
    roster = write_roster(deployed.work / "bad.csv", bad)
    before = deployed.dump()
    proc = deployed.cli("users", "import", SCHOOL, str(roster), "--yes")
    assert proc.returncode == 2
    assert f"{roster}:52: unknown role 'janitor' (one of: teacher, student)" in proc.stderr
    assert "1 problem found; nothing was imported." in proc.stderr
    assert deployed.dump() == before


def test_leavers_are_suspended_at_once(deployed: Env, rows: list[list[str]]) -> None:
    leavers = {rows[3][0], rows[100][0], rows[190][0]}   # given names are enough to find them in the report
    roster = write_roster(deployed.work / "minus3.csv", [r for i, r in enumerate(rows) if i not in (3, 100, 190)])
    before = deployed.dump()
    proc, plan = deployed.import_(roster, "--dry-run")
    assert proc.returncode == 0 and len(plan["suspended"]) == 3 and deployed.dump() == before
    proc, report = deployed.import_(roster)
    assert proc.returncode == 0 and sorted(report["suspended"]) == sorted(plan["suspended"])
    assert report["counts"]["unchanged"] == 197 and not report["deleted"]
    gone = set(report["suspended"])
    assert deployed.uids("suspended") == gone and not gone & deployed.uids("people")
    assert all(uid.split(".")[0] in {fold(n) for n in leavers} for uid in gone)
    # invisible to the apps, out of every group; with 30 days of grace, a new import deletes nobody
    assert not any(f"uid={u}," in deployed.apps_search(f"ou=groups,{BASE}", "member").stdout for u in gone)
    assert deployed.apps_search(f"ou=suspended,{BASE}", "uid").stdout.strip() == ""
    proc, again = deployed.import_(roster)
    assert again["status"] == "unchanged" and len(again["waiting"]) == 3


def test_with_no_grace_a_further_import_deletes_them(deployed: Env) -> None:
    (deployed.schools / f"{SCHOOL}.yaml").write_text(school_yaml(0), encoding="utf-8")
    suspended = deployed.uids("suspended")
    proc, report = deployed.import_(deployed.work / "minus3.csv")
    assert proc.returncode == 0, proc.stderr
    assert {d["uid"] for d in report["deleted"]} == suspended and len(suspended) == 3
    assert deployed.uids("suspended") == set() and len(deployed.uids("people")) == 197
    human = deployed.cli("users", "import", SCHOOL, str(deployed.work / "minus3.csv"), "--yes")
    assert "unchanged (197 people" in human.stdout


def fold(name: str) -> str:
    from schoolctl.cli.users.roster import base_uid

    return base_uid(name, "x").split(".")[0]
