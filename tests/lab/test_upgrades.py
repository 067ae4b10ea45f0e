"""Upgrades with the data kept, refused upgrade paths, and the way back, for real, each app on its own
lab host, from the test mirror (deploy the old version, make content through the app, change the
school's version, deploy again, read the content back):

- up-nc: Nextcloud 33.0.3 -> 34.0.1. First the refusals: with `current` naming 31.0.11, plan and
  deploy of 33.0.3 say "skips 32" before any operation (nothing installed). Then 33.0.3 installed;
  an LDAP teacher uploads over WebDAV and shares (OCS: to a student, and a link); the upgrade with a
  broken app migration in the new release (the test writes it on the server) fails and rolls back:
  `failed (rolled back to 33.0.3)`, occ status 33.0.3, maintenance off, files and shares there; the
  same upgrade clean: 34.0.1 with everything kept; a downgrade is refused; `schoolctl rollback` by
  hand goes back to 33.0.3 with the data, and refuses (exit 2) a second time.
- up-pad: Etherpad 2.5.3 -> 3.3.1 (Node.js 24 from the mirror, pnpm 11): pads' text and authors
  (HTTP API) before and after.
- up-moodle: Moodle 4.5.10 (on Debian 13's PHP 8.4) -> 5.0.6: a course and a user made before are
  there after; admin/cli/checks.php after.

Needs root, the lab and the mirror; skips with the reason otherwise. SCHOOLCTL_KEEP_LAB=1 keeps the
hosts. Times of each deploy are printed (pytest -s) and kept in <tmp>/timings.json.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .support import MIRROR, SchoolEnv, skip_reason

pytestmark = [pytest.mark.lab, pytest.mark.mirror]

ROSTER = [["Marta", "Puig Soler", "teacher", "1A", "marta.puig@escola.example"],
          ["Laia", "Font Serra", "student", "1A", ""]]
OCC = "cd /srv/nextcloud/current && runuser -u nextcloud -- /usr/bin/php8.4 occ"
TIMINGS: dict[str, float] = {}


class Env(SchoolEnv):
    def run_cli(self, label: str, *args: str) -> tuple[int, dict[str, Any] | None, str]:
        """A deploy/plan/rollback that may fail: (exit code, its first JSON result or None, stderr)."""
        start = time.monotonic()
        proc = self.cli(*args, timeout=3000)
        TIMINGS[label] = self.timings[label] = round(time.monotonic() - start, 1)
        print(f"\n{label}: {self.timings[label]} s (exit {proc.returncode})")
        try:
            data = json.loads(proc.stdout)
        except ValueError:
            data = None
        if isinstance(data, dict) and "schools" in data:  # plan/deploy: one school's result
            data = data["schools"][0]
        return proc.returncode, data, proc.stdout + proc.stderr

    def timed_deploy(self, label: str) -> dict[str, Any]:
        result = self.deploy(label)
        TIMINGS[label] = self.timings[label]
        return result

    def upload(self, local: Path, remote: str) -> None:
        """A file of the controller onto the lab host (binary, over the lab's ssh)."""
        with local.open("rb") as f:
            proc = subprocess.run(["ssh", "-F", str(self.lab.ssh_config_path), self.host,
                                   f"cat > {shlex.quote(remote)}"], stdin=f, capture_output=True, timeout=600)
        assert proc.returncode == 0, proc.stderr


def _env(tmp_path_factory: pytest.TempPathFactory, host: str, sid: str, layers: str, services: dict[str, Any],
         archives: tuple[str, ...]) -> Iterator[Env]:
    reason = skip_reason(archives)
    if reason:
        print(f"skipped: {reason}")
        pytest.skip(reason)
    from schoolctl.lab import Lab

    lab = Lab()
    lab.down([host])          # a fresh Debian 13
    lab.up([host], timeout=180)
    work = tmp_path_factory.mktemp(host)
    e = Env(lab, work, host, sid, layers, services=services, privacy={"log_retention_days": 7})
    try:
        yield e
    finally:
        (work / "timings.json").write_text(json.dumps(e.timings, indent=1))
        print(f"\n{host} timings: {json.dumps(e.timings)}")
        if not os.environ.get("SCHOOLCTL_KEEP_LAB"):
            lab.down([host])


# --- Nextcloud 33.0.3 -> 34.0.1 -----------------------------------------------------------------

NC_LAYERS = "base,firewall,identity,database,php,web,nextcloud"
BROKEN_MIGRATION = "apps/dav/lib/Migration/Version1039Date20260408000000.php"


@pytest.fixture(scope="module")
def nc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    yield from _env(tmp_path_factory, "up-nc", "up-nc", NC_LAYERS, {"nextcloud": {"version": "33.0.3"}},
                    ("nextcloud-33.0.3.tar.bz2", "nextcloud-34.0.1.tar.bz2", "nextcloud-31.0.11.tar.bz2"))


def _status(env: Env) -> dict[str, Any]:
    out = env.ok(f"{OCC} status --output=json")
    return json.loads(out[out.index("{"):])


def _people(env: Env) -> dict[str, dict[str, str]]:
    return {p["given_name"]: p for p in env.people}


def _nc_content(env: Env) -> dict[str, Any]:
    """What the teacher sees: her file, her shares (OCS), and that both LDAP users log in."""
    marta, laia = _people(env)["Marta"], _people(env)["Laia"]
    auth_m = (marta["uid"], marta["initial_password"])
    code, body = env.curl("nextcloud", f"/remote.php/dav/files/{marta['uid']}/informe.txt", user=auth_m)
    shares_code, shares = env.curl("nextcloud", "/ocs/v2.php/apps/files_sharing/api/v1/shares?format=json",
                                   "-H", "OCS-APIRequest: true", user=auth_m)
    laia_code, laia_body = env.curl("nextcloud", "/ocs/v1.php/cloud/user?format=json", "-H", "OCS-APIRequest: true",
                                    user=(laia["uid"], laia["initial_password"]))
    found = json.loads(shares)["ocs"]["data"] if shares_code == 200 else []
    return {"file": (code, body), "shares": sorted((s["share_type"], s["path"], s.get("share_with") or "")
                                                   for s in found),
            "laia": laia_code == 200 and json.loads(laia_body)["ocs"]["data"]["id"] == laia["uid"]}


def test_nextcloud_refuses_a_skipped_major_before_any_operation(nc: Env) -> None:
    # the guard reads the running version from `current`: a host that says it runs 31.0.11
    nc.ok("install -d /srv/nextcloud/releases/31.0.11 && ln -sfn /srv/nextcloud/releases/31.0.11 "
          "/srv/nextcloud/current")
    message = "Nextcloud 31.0.11 -> 33.0.3 skips 32; upgrade to 32.x first"
    code, result, text = nc.run_cli("plan 31.0.11 -> 33.0.3 (refused)", "plan", nc.sid, "--json")
    assert code == 1 and result and result["status"] == "failed" and message in result["error"], text[-2000:]
    print(f"plan says: {result['error']}")
    assert "31 -> 32 -> 33" in result["error"]
    code, result, text = nc.run_cli("deploy 31.0.11 -> 33.0.3 (refused)", "deploy", nc.sid, "--yes", "--json")
    assert code == 1 and result and message in result["error"] and not result["changes"], text[-2000:]
    # before any operation: not even the base layer's packages
    assert nc.sh("dpkg-query -W nginx").returncode != 0
    assert nc.ok("readlink /srv/nextcloud/current").strip() == "/srv/nextcloud/releases/31.0.11"
    nc.ok("rm -rf /srv/nextcloud")


@pytest.fixture(scope="module")
def nc_made(nc: Env) -> Env:
    """33.0.3 installed, the teacher's file and her two shares made through the apps."""
    first = nc.timed_deploy("nextcloud 33.0.3 install (all layers)")
    assert first["status"] == "changed", first
    nc.import_roster(ROSTER)
    marta, laia = _people(nc)["Marta"], _people(nc)["Laia"]
    auth_m = (marta["uid"], marta["initial_password"])
    code, _ = nc.curl("nextcloud", f"/remote.php/dav/files/{marta['uid']}/informe.txt", "-X", "PUT",
                      "--data-binary", "Informe del primer trimestre", user=auth_m)
    assert code in (201, 204)
    # Laia logs in once (her account appears in Nextcloud), then Marta shares with her and by link
    assert nc.curl("nextcloud", "/ocs/v1.php/cloud/user?format=json", "-H", "OCS-APIRequest: true",
                   user=(laia["uid"], laia["initial_password"]))[0] == 200
    for form in ([f"shareWith={laia['uid']}", "shareType=0"], ["shareType=3"]):
        args = [x for kv in ["path=/informe.txt", *form] for x in ("--data-urlencode", kv)]
        code, body = nc.curl("nextcloud", "/ocs/v2.php/apps/files_sharing/api/v1/shares?format=json", "-X", "POST",
                             "-H", "OCS-APIRequest: true", *args, user=auth_m)
        assert code == 200, body[-800:]
    content = _nc_content(nc)
    assert content == {"file": (200, "Informe del primer trimestre"),
                       "shares": [(0, "/informe.txt", laia["uid"]), (3, "/informe.txt", "")], "laia": True}
    nc.before = content  # type: ignore[attr-defined]
    return nc


def _prestage(env: Env, app: str, version: str, owner: str) -> Any:
    """The configured release of `app` unpacked on the server by the product's own fetch step (the
    deploy then finds it in place), for the test to change it first."""
    from schoolctl.deploy import artifacts
    from schoolctl.deploy.site import Site

    site = Site(school=env.school, secret=lambda n, length=32: None, mirror=MIRROR)
    rel = artifacts.release(site, app)
    assert rel.version == version
    step = artifacts.fetch_step(site, rel, owner=owner)
    env.ok(f"install -d -m 0755 /srv/{app}")
    env.upload(Path(rel.source), step.upload[1])
    env.ok(step.apply)
    return rel


def _prestage_broken(env: Env, version: str) -> None:
    """The new release with one of its app migrations made to throw: `occ upgrade` fails halfway
    (after the core's migrations)."""
    rel = _prestage(env, "nextcloud", version, "nextcloud")
    target = f"{rel.path}/{BROKEN_MIGRATION}"
    env.ok(f"sed -i 's/\\$schema = \\$schemaClosure();/throw new \\\\RuntimeException(\"schoolctl lab: injected "
           f"upgrade failure\");/' {target} && grep -q 'injected upgrade failure' {target}")


def test_nextcloud_failed_upgrade_rolls_back_with_the_data(nc_made: Env) -> None:
    nc = nc_made
    nc.set_version("nextcloud", "34.0.1")
    _prestage_broken(nc, "34.0.1")
    code, result, text = nc.run_cli("nextcloud 33.0.3 -> 34.0.1, injected failure, rollback", "deploy", nc.sid,
                                    "--yes", "--json")
    assert code == 1 and result, text[-3000:]
    print(f"the deploy's error:\n{result['error']}")
    assert (result["status"], result["rolled_back"], result["result"]) == \
        ("failed", "33.0.3", "failed (rolled back to 33.0.3)"), result
    assert "injected upgrade failure" in text and "schoolctl-rolled-back: nextcloud 33.0.3" in result["error"]
    st = _status(nc)
    assert (st["versionstring"], st["maintenance"], st["needsDbUpgrade"]) == ("33.0.3", False, False), st
    assert nc.ok("readlink /srv/nextcloud/current").strip() == "/srv/nextcloud/releases/33.0.3"
    assert _nc_content(nc) == nc.before  # type: ignore[attr-defined]
    # the restored database is 33's own: no table of 34's migrations is left behind
    assert nc.ok(f"{OCC} config:system:get version").startswith("33.0.3")
    assert nc.ok("ls /var/lib/schoolctl/rollback/").split()[0].startswith("nextcloud.used-")
    # the human summary says it too
    proc = nc.cli("deploy", nc.sid, "--yes", timeout=3000)
    assert proc.returncode == 1 and "failed (rolled back to 33.0.3)" in proc.stdout, proc.stdout + proc.stderr
    assert _status(nc)["versionstring"] == "33.0.3"


def test_nextcloud_upgrade_keeps_files_shares_and_logins(nc_made: Env) -> None:
    nc = nc_made
    nc.set_version("nextcloud", "34.0.1")
    nc.ok("rm -rf /srv/nextcloud/releases/34.0.1")   # the broken tree goes: a clean unpack from the mirror
    result = nc.timed_deploy("nextcloud 33.0.3 -> 34.0.1 upgrade")
    assert result["status"] == "changed", result
    st = _status(nc)
    assert (st["versionstring"], st["maintenance"], st["needsDbUpgrade"]) == ("34.0.1", False, False), st
    assert _nc_content(nc) == nc.before  # type: ignore[attr-defined]
    assert "The configuration is valid" in nc.ok(f"{OCC} ldap:test-config s01")
    again = nc.timed_deploy("nextcloud 34.0.1 re-deploy (no-op)")
    others = [c for c in again["changes"] if "firewall ruleset" not in c]
    assert not others, again


def test_nextcloud_refuses_a_downgrade(nc_made: Env) -> None:
    nc = nc_made
    assert _status(nc)["versionstring"] == "34.0.1"
    nc.set_version("nextcloud", "33.0.3")
    code, result, text = nc.run_cli("plan 34.0.1 -> 33.0.3 (refused)", "plan", nc.sid, "--json")
    assert code == 1 and result and "Nextcloud 34.0.1 -> 33.0.3 is a downgrade" in result["error"], text[-2000:]
    assert f"schoolctl rollback {nc.sid} nextcloud" in result["error"]
    code, result, text = nc.run_cli("deploy 34.0.1 -> 33.0.3 (refused)", "deploy", nc.sid, "--yes", "--json")
    assert code == 1 and "is a downgrade" in result["error"] and not result["changes"], text[-2000:]
    assert _status(nc)["versionstring"] == "34.0.1"
    nc.set_version("nextcloud", "34.0.1")


def test_nextcloud_rollback_by_hand(nc_made: Env) -> None:
    nc = nc_made
    assert _status(nc)["versionstring"] == "34.0.1"
    code, _, text = nc.run_cli("schoolctl rollback nextcloud 34.0.1 -> 33.0.3", "rollback", nc.sid, "nextcloud",
                               "--yes")
    assert code == 0, text[-3000:]
    assert "nextcloud rolled back to 33.0.3" in text and "database restored from /var/backups/schoolctl/nextcloud-" \
        in text, text[-2000:]
    assert 'set services.nextcloud.version: "33.0.3"' in text
    st = _status(nc)
    assert (st["versionstring"], st["maintenance"], st["needsDbUpgrade"]) == ("33.0.3", False, False), st
    assert _nc_content(nc) == nc.before  # type: ignore[attr-defined]
    # once: the point is used up
    code, _, text = nc.run_cli("schoolctl rollback again (refused)", "rollback", nc.sid, "nextcloud", "--yes")
    assert code == 2 and "no rollback point" in text, text[-1500:]
    nc.set_version("nextcloud", "33.0.3")
    again = nc.timed_deploy("nextcloud 33.0.3 deploy after the rollback")
    assert again["status"] in ("changed", "unchanged"), again
    assert _status(nc)["versionstring"] == "33.0.3" and _nc_content(nc) == nc.before  # type: ignore[attr-defined]


# --- Etherpad 2.5.3 -> 3.3.1 --------------------------------------------------------------------

PAD_LAYERS = "base,firewall,database,web,etherpad"


@pytest.fixture(scope="module")
def pad(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    yield from _env(tmp_path_factory, "up-pad", "up-pad", PAD_LAYERS, {"etherpad": {"version": "2.5.3"}},
                    ("etherpad-lite-2.5.3.tar.gz", "etherpad-3.3.1.tar.gz", "node-v24.22.3-linux-x64.tar.xz"))


def _pads(env: Env, pads: dict[str, str]) -> dict[str, Any]:
    return {p: {"text": env.pad_api("getText", padID=p)["text"],
                "authors": sorted(env.pad_api("listAuthorsOfPad", padID=p)["authorIDs"]),
                "names": sorted(env.pad_api("getAuthorName", authorID=a) for a in
                                env.pad_api("listAuthorsOfPad", padID=p)["authorIDs"])} for p in pads}


def test_etherpad_upgrade_keeps_pads_and_authors(pad: Env) -> None:
    first = pad.timed_deploy("etherpad 2.5.3 install (all layers)")
    assert first["status"] == "changed", first
    assert pad.ok("readlink /srv/etherpad/current").strip() == "/srv/etherpad/releases/2.5.3"
    marta = pad.pad_api("createAuthor", name="Marta Puig")["authorID"]
    laia = pad.pad_api("createAuthor", name="Laia Font")["authorID"]
    pads = {"apunts-1a": "Apunts de ciències\n", "deures": "Deures de matemàtiques\n"}
    for name, text in pads.items():
        pad.pad_api("createPad", padID=name, text="")
        pad.pad_api("setText", padID=name, text=text, authorId=marta)
    pad.pad_api("appendText", padID="apunts-1a", text="Afegit per la Laia\n", authorId=laia)
    before = _pads(pad, pads)
    assert before["apunts-1a"]["names"] == ["Laia Font", "Marta Puig"] and \
        before["apunts-1a"]["text"].startswith("Apunts de ciències") and "Afegit per la Laia" in \
        before["apunts-1a"]["text"], before
    pad.set_version("etherpad", "3.3.1")
    # the release as it is: 3.x installs production dependencies only (its lint and test packages,
    # which the npm registry reachable here does not hold, are never fetched)
    result = pad.timed_deploy("etherpad 2.5.3 -> 3.3.1 upgrade (node 24, pnpm 11, build)")
    assert result["status"] == "changed", result
    assert pad.ok("readlink /srv/etherpad/current").strip() == "/srv/etherpad/releases/3.3.1"
    assert pad.ok("cat /srv/etherpad/current/.schoolctl-path").startswith("/usr/local/lib/pnpm-11.1.2/bin:"
                                                                          "/srv/node/releases/24.22.3/bin:")
    assert pad.ok("curl -fsS --noproxy '*' http://127.0.0.1:9001/health")
    assert _pads(pad, pads) == before
    # the running server is 3.3.1 on Node.js 24
    version = pad.ok("cat /srv/etherpad/current/src/package.json | python3 -c 'import json,sys; "
                     "print(json.load(sys.stdin)[\"version\"])'").strip()
    assert version == "3.3.1"
    runtime = pad.ok("tr '\\0' ' ' < /proc/$(pgrep -f 'node.*server.ts' | head -n1)/environ | tr ' ' '\\n' | "
                     "grep '^PATH='")
    assert "/srv/node/releases/24.22.3/bin" in runtime, runtime
    assert pad.ok("readlink -f /proc/$(pgrep -f 'node.*server.ts' | head -n1)/exe").strip() == \
        "/srv/node/releases/24.22.3/bin/node"
    again = pad.timed_deploy("etherpad 3.3.1 re-deploy (no-op)")
    others = [c for c in again["changes"] if "firewall ruleset" not in c]
    assert not others, again
    # by hand back to 2.5.3 (Debian's Node.js again), then the same upgrade once more
    code, _, text = pad.run_cli("schoolctl rollback etherpad 3.3.1 -> 2.5.3", "rollback", pad.sid, "etherpad", "--yes")
    assert code == 0 and "etherpad rolled back to 2.5.3" in text, text[-2000:]
    assert pad.ok("readlink -f /proc/$(pgrep -f 'node.*server.ts' | head -n1)/exe").strip() == "/usr/bin/node"
    assert _pads(pad, pads) == before
    result = pad.timed_deploy("etherpad 2.5.3 -> 3.3.1 again (built already)")
    assert result["status"] == "changed" and _pads(pad, pads) == before, result
    assert pad.ok("readlink /srv/etherpad/current").strip() == "/srv/etherpad/releases/3.3.1"


# --- Moodle 4.5.10 -> 5.0.6 ---------------------------------------------------------------------

MOODLE_LAYERS = "base,firewall,identity,database,php,web,moodle"
PHP = "runuser -u moodle -- /usr/bin/php8.4"


@pytest.fixture(scope="module")
def moodle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    yield from _env(tmp_path_factory, "up-moodle", "up-moodle", MOODLE_LAYERS, {"moodle": {"version": "4.5.10"}},
                    ("moodle-4.5.10.tgz", "moodle-5.0.6.tgz"))


MAKE = ("define('CLI_SCRIPT', true); require '/srv/moodle/current/config.php'; "
        "require_once($CFG->dirroot.'/course/lib.php'); require_once($CFG->dirroot.'/user/lib.php'); "
        "if (!$DB->record_exists('course', ['shortname' => 'CIEN1A'])) { create_course((object)["
        "'fullname' => 'Ciències 1r A', 'shortname' => 'CIEN1A', 'category' => 1]); } "
        "if (!$DB->record_exists('user', ['username' => 'pere.local'])) { user_create_user((object)["
        "'username' => 'pere.local', 'auth' => 'manual', 'firstname' => 'Pere', 'lastname' => 'Local', "
        "'email' => 'pere@escola.example', 'password' => 'Canvia-1-aquesta', 'confirmed' => 1, "
        "'mnethostid' => $CFG->mnet_localhost_id]); }")
READ = ("define('CLI_SCRIPT', true); require '/srv/moodle/current/config.php'; "
        "echo json_encode(['course' => $DB->get_record('course', ['shortname' => 'CIEN1A'], 'id, fullname'), "
        "'user' => $DB->get_record('user', ['username' => 'pere.local'], 'id, firstname, email, auth'), "
        "'release' => $CFG->release, 'version' => $CFG->version]);")


def _moodle_read(env: Env) -> dict[str, Any]:
    out = env.ok(f"{PHP} -r {shlex.quote(READ)}")
    return json.loads(out[out.index("{"):])


# Moodle 4.5's own environment.xml: <PHP version="8.1.0"> with <RESTRICT function="restrict_php_version_84">
ENV_XML = "/srv/moodle/releases/4.5.10/admin/environment.xml"
REFUSED_84 = "PHP version 8.4 and higher are not supported"


@pytest.fixture(scope="module")
def moodle_made(moodle: Env) -> Env:
    """Moodle 4.5.10 on Debian 13's PHP 8.4: refused by its own installer; installed here with that one
    check taken out of the lab's copy (the only way to reach an upgrade from 4.5 on PHP 8.4); a course
    and a user made through Moodle's API."""
    code, result, text = moodle.run_cli("moodle 4.5.10 install on PHP 8.4 (refused by Moodle)", "deploy",
                                        moodle.sid, "--yes", "--json")
    assert code == 1 and result and REFUSED_84 in result["error"], text[-3000:]
    print(f"\nMoodle 4.5.10 on PHP 8.4, the deploy's error:\n{result['error']}\n"
          + moodle.ok("php8.4 -v | head -n1"))
    assert moodle.sh("test -e /var/lib/moodle/installed").returncode != 0
    moodle.ok(f"grep -q 'restrict_php_version_84' {ENV_XML} && sed -i '/restrict_php_version_84/d' {ENV_XML}")
    first = moodle.timed_deploy("moodle 4.5.10 install (its PHP 8.4 check taken out)")
    assert first["status"] == "changed", first
    env_check = moodle.sh(f"{PHP} /srv/moodle/current/admin/cli/checks.php")
    print(f"checks.php on 4.5.10 (exit {env_check.returncode}):\n{env_check.stdout[-1500:]}")
    made = moodle.sh(f"{PHP} -r {shlex.quote(MAKE)}")
    assert made.returncode == 0, made.stdout[-2000:] + made.stderr[-2000:]
    before = _moodle_read(moodle)
    assert before["release"].startswith("4.5.10") and before["course"]["fullname"] == "Ciències 1r A", before
    assert before["user"]["firstname"] == "Pere"
    moodle.before = before  # type: ignore[attr-defined]
    return moodle


def test_moodle_failed_upgrade_rolls_back(moodle_made: Env) -> None:
    moodle = moodle_made
    moodle.set_version("moodle", "5.0.6")
    rel = _prestage(moodle, "moodle", "5.0.6", "root")
    # a plugin's upgrade that throws: upgrade.php fails after the core's own upgrade ran
    target = f"{rel.path}/mod/assign/db/upgrade.php"
    moodle.ok(f"sed -i 's/^    global $DB;$/    global $DB; throw new moodle_exception(\"schoolctl lab: injected "
              f"upgrade failure\");/' {target} && grep -q 'injected upgrade failure' {target}")
    code, result, text = moodle.run_cli("moodle 4.5.10 -> 5.0.6, injected failure, rollback", "deploy", moodle.sid,
                                        "--yes", "--json")
    assert code == 1 and result, text[-3000:]
    print(f"the deploy's error:\n{result['error']}")
    assert (result["rolled_back"], result["result"]) == ("4.5.10", "failed (rolled back to 4.5.10)"), result
    assert moodle.ok("readlink /srv/moodle/current").strip() == "releases/4.5.10"
    assert _moodle_read(moodle) == moodle.before  # type: ignore[attr-defined]
    assert moodle.sh("test -e /var/lib/moodle/data/climaintenance.html").returncode != 0
    pending = moodle.sh(f"{PHP} /srv/moodle/current/admin/cli/upgrade.php --is-pending")
    assert pending.returncode == 0, pending.stdout + pending.stderr   # 4.5.10's database, nothing pending


def test_moodle_upgrade_keeps_courses_and_users(moodle_made: Env) -> None:
    moodle = moodle_made
    moodle.set_version("moodle", "5.0.6")
    moodle.ok("rm -rf /srv/moodle/releases/5.0.6")   # the broken tree goes: a clean unpack from the mirror
    result = moodle.timed_deploy("moodle 4.5.10 -> 5.0.6 upgrade")
    assert result["status"] == "changed", result
    after = _moodle_read(moodle)
    before = moodle.before  # type: ignore[attr-defined]
    assert after["release"].startswith("5.0.6"), after
    assert (after["course"], after["user"]) == (before["course"], before["user"])
    assert moodle.ok("readlink /srv/moodle/current").strip() == "releases/5.0.6"
    checks = moodle.sh(f"{PHP} /srv/moodle/current/admin/cli/checks.php")
    print(f"checks.php on 5.0.6 (exit {checks.returncode}):\n{checks.stdout[-2500:]}")
    assert moodle.sh("test -e /var/lib/moodle/data/climaintenance.html").returncode != 0
    again = moodle.timed_deploy("moodle 5.0.6 re-deploy (no-op)")
    others = [c for c in again["changes"] if "firewall ruleset" not in c]
    assert not others, again


def teardown_module() -> None:
    if TIMINGS:
        print("\nupgrade timings (s): " + json.dumps(TIMINGS, indent=1))
