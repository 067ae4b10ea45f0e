"""Shared scaffolding for lab tests that deploy a school: skip reasons, and `SchoolEnv`, a school on
one lab host with its own schools dir, vault and secrets, deployed through the real CLI with only the
layers the test needs (SCHOOLCTL_LAYERS).
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from ansible.parsing.vault import VaultLib, VaultSecret

ROOT = Path(__file__).resolve().parents[2]
MIRROR = os.environ.get("SCHOOLCTL_MIRROR", "/var/lib/schoolctl/mirror")
CONTACTS = {"dpo": {"name": "Delegat Protecció", "email": "dpd@bcn.example"},
            "technician": {"name": "Suport TIC", "email": "suport@bcn.example"}}


def skip_reason(archives: tuple[str, ...] = ()) -> str | None:
    """Why a lab test cannot run here (root, nspawn, the mirror's archives), or None."""
    if os.geteuid() != 0:
        return "lab tests need root"
    if not shutil.which("systemd-nspawn"):
        return "systemd-nspawn missing (lab prerequisites)"
    sums = Path(MIRROR) / "SHA256SUMS"
    if archives and not sums.is_file():
        return f"the test mirror {MIRROR} has no SHA256SUMS (shared/tools/build-test-mirror.sh)"
    listed = sums.read_text() if archives else ""
    missing = [a for a in archives if a not in listed or not (Path(MIRROR) / a).is_file()]
    if missing:
        return f"the test mirror {MIRROR} lacks {', '.join(missing)} (or SHA256SUMS does not list it yet)"
    return None


@contextlib.contextmanager
def booted(host: str, timeout: float = 180, fresh: bool = False) -> Iterator[Any]:
    """The Lab with `host` up (first removed when `fresh`); the host goes at the end unless
    SCHOOLCTL_KEEP_LAB is set."""
    from schoolctl.lab import Lab

    lab = Lab()
    if fresh:
        lab.down([host])
    lab.up([host], timeout=timeout)
    try:
        yield lab
    finally:
        if not os.environ.get("SCHOOLCTL_KEEP_LAB"):
            lab.down([host])


class SchoolEnv:
    """School `sid` on lab host `host`; `layers` are the school server's layers a deploy applies."""

    def __init__(self, lab: Any, work: Path, host: str, sid: str, layers: str, services: dict[str, Any],
                 privacy: dict[str, Any] | None = None) -> None:
        self.lab, self.work, self.host, self.sid, self.layers = lab, work, host, sid, layers
        self.schools = work / "schools"
        self.env = {**os.environ, "SCHOOLCTL_VAULT_KEY_FILE": str(work / "vault.key"),
                    "SCHOOLCTL_SECRETS_DIR": str(work / "secrets"), "SCHOOLCTL_MIRROR": MIRROR,
                    "SCHOOLCTL_SCHOOLS_DIR": str(self.schools), "SCHOOLCTL_LAYERS": layers}
        self.env.pop("SCHOOLCTL_LOG", None)
        self.timings: dict[str, float] = {}
        self.people: list[dict[str, str]] = []
        self.schools.mkdir(parents=True, exist_ok=True)
        fleet = yaml.safe_load((ROOT / "schools" / "fleet.yaml").read_text())
        fleet.update(dns=[], ntp=[])
        fleet["updates"]["index_max_age_days"] = 30  # the build machine's Debian archive may be a frozen copy
        (self.schools / "fleet.yaml").write_text(yaml.safe_dump(fleet))
        (self.schools / f"{sid}.yaml").write_text(yaml.safe_dump({
            "id": sid, "name": f"Escola {sid}", "district": "Lab", "server": f"lab:{host}", "services": services,
            "contacts": CONTACTS, "privacy": privacy or {}}, allow_unicode=True))
        if not (work / "vault.key").exists():
            proc = self.cli("secrets", "init")
            assert proc.returncode == 0, proc.stdout + proc.stderr

    @property
    def school(self) -> Any:
        from schoolctl.config.loader import load

        return load(self.schools).select([self.sid])[0]

    def set_version(self, app: str, version: str) -> None:
        """The school's file asks for `version` of `app` (the next deploy installs or upgrades)."""
        path = self.schools / f"{self.sid}.yaml"
        doc = yaml.safe_load(path.read_text())
        doc["services"][app] = {**(doc["services"].get(app) or {}), "version": version}
        path.write_text(yaml.safe_dump(doc, allow_unicode=True))

    def cli(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "schoolctl.cli", "--schools-dir", str(self.schools), *args],
                              env=self.env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)

    def deploy(self, label: str) -> dict[str, Any]:
        """`schoolctl deploy SID --yes --json`: {"status", "error", "changes": ["kind what detail", ...]}."""
        start = time.monotonic()
        proc = self.cli("deploy", self.sid, "--yes", "--json", timeout=3000)
        self.timings[label] = round(time.monotonic() - start, 1)
        print(f"\n{label}: {self.timings[label]} s")
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        result = json.loads(proc.stdout)["schools"][0]
        result["changes"] = [" ".join(str(c.get(k, "")) for k in ("kind", "what", "detail")).strip()
                             for c in result["changes"]]
        return result

    def curl(self, service: str, path: str, *extra: str, user: tuple[str, str] | None = None) -> tuple[int, str]:
        """(status, body) of https://<service fqdn><path> through nginx on the lab host (--resolve to
        it); basic auth from a curl config on stdin, so the password is on no command line."""
        from schoolctl.deploy.site import SERVICE_HOSTS

        fqdn = f"{SERVICE_HOSTS[service]}.{self.school.domain}"
        address = self.lab.host(self.host).address
        cmd = ["curl", "-sS", "--max-time", "60", "--noproxy", "*", "-k", "--resolve", f"{fqdn}:443:{address}",
               "-o", "-", "-w", "\n@@%{http_code}", *extra]
        stdin = None
        if user:
            cmd += ["-K", "-"]
            stdin = f'user = "{user[0]}:{user[1]}"\n'
        proc = subprocess.run([*cmd, f"https://{fqdn}{path}"], capture_output=True, text=True, timeout=90,
                              input=stdin)
        assert proc.returncode == 0, proc.stderr
        body, _, code = proc.stdout.rpartition("\n@@")
        return int(code), body

    def pad_api(self, method: str, host: str | None = None, **params: str) -> Any:
        """Etherpad's HTTP API on lab host `host` (default: the school's) itself: the key read from its
        file there, the form body on stdin; the answer's `data` (asserts code 0)."""
        from urllib.parse import urlencode

        command = (f"printf 'apikey=%s&%s' \"$(cat /etc/etherpad/APIKEY.txt)\" {shlex.quote(urlencode(params))} | "
                   f"curl -fsS --noproxy '*' --max-time 30 --data @- http://127.0.0.1:9001/api/1.3.0/{method}")
        proc = self.lab.run(host or self.host, command, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        answer = json.loads(proc.stdout)
        assert answer["code"] == 0, (method, answer)
        return answer["data"]

    def sh(self, command: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return self.lab.run(self.host, command, timeout=600, input=input)

    def ok(self, command: str) -> str:
        proc = self.sh(command)
        assert proc.returncode == 0, f"{command}: {proc.returncode} {proc.stdout[-1000:]} {proc.stderr[-1000:]}"
        return proc.stdout

    def import_roster(self, rows: list[list[str]], first_login_done: bool = True) -> list[dict[str, str]]:
        """`schoolctl users import` of rows (given, family, role, group, email); sets and returns
        `people`: each person's uid, names, role and initial password (from the import's vault file)."""
        roster = self.work / "roster.csv"
        with roster.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["given_name", "family_name", "role", "group", "email"])
            w.writerows(rows)
        proc = self.cli("users", "import", self.sid, str(roster), "--yes", "--json")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        report = json.loads(proc.stdout)
        vault = report["passwords_file"] or max((self.work / "secrets").glob(f"{self.sid}-initial-passwords-*.vault"))
        key = Path(self.env["SCHOOLCTL_VAULT_KEY_FILE"]).read_bytes().strip()
        table = csv.DictReader(VaultLib([("default", VaultSecret(key))]).decrypt(Path(vault).read_bytes())
                               .decode().splitlines())
        self.people = [dict(row, password=row["initial_password"]) for row in table]
        if first_login_done:
            self.first_login_done([p["uid"] for p in self.people])
        return self.people

    def first_login_done(self, uids: list[str]) -> None:
        """As if `uids` had had their first login and kept the letter's password as their own: the
        directory's pwdReset removed (root, ldapi) and Moodle's forced change cleared, so tests about
        other things log in with the initial password everywhere (tests/lab/test_people.py tests the
        first login itself)."""
        if not uids:
            return
        base = self.school.ldap_base
        ldif = "".join(f"dn: uid={u},ou=people,{base}\nchangetype: modify\ndelete: pwdReset\n-\n\n" for u in uids)
        proc = self.sh("ldapmodify -c -Q -Y EXTERNAL -H ldapi:/// >/dev/null", input=ldif)
        assert proc.returncode in (0, 16), proc.stderr   # 16: no such attribute (already done)
        self.sh("if [ -e /var/lib/moodle/installed ]; then runuser -u postgres -- psql -XAtq -d moodle -c "
                "\"DELETE FROM mdl_user_preferences WHERE name = 'auth_forcepasswordchange'\"; fi")
