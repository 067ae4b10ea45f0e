"""The apps wired to each other, for real, on lab host w-apps: Moodle 5.0.6 and Etherpad 2.5.3 from the
test mirror on the platform layers, the roster imported. Nextcloud is among the school's services (so
Moodle links it) but its layer is not deployed here (test_nextcloud_etherpad covers it). Through nginx
over HTTPS, as a browser:
a teacher logs in to Moodle, creates a pad in the front page's "Pads" (local_schoolpads), opens it and
gets an Etherpad session cookie for the school's domain that really opens the pad (and nothing opens
it without one); a student opens it but cannot create pads; Moodle's menu links Nextcloud and the pads;
teachers are course creators from the directory; a leaver's name leaves Etherpad; a Moodle upgrade
dumps the database first; with the school's other languages' packs (ca, es) the pads speak them.
Needs root, the lab and the mirror; SCHOOLCTL_KEEP_LAB=1 keeps the host.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .support import SchoolEnv, skip_reason

pytestmark = [pytest.mark.lab, pytest.mark.mirror]

HOST, SID = "w-apps", "w-apps"
LAYERS = "base,firewall,identity,database,php,web,moodle,etherpad"
ROSTER = [["Marta", "Puig Soler", "teacher", "1A", "marta.puig@escola.example"],
          ["Laia", "Font Serra", "student", "1A", ""]]     # no email, as most pupils

PADS = "/local/schoolpads/index.php?id=1"
API = "http://127.0.0.1:9001/api/1.3.0"


@pytest.fixture(scope="module")
def apps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SchoolEnv]:
    reason = skip_reason(("moodle-5.0.6.tgz", "etherpad-lite-2.5.3.tar.gz", "langpack/4.5/ca.zip",
                          "langpack/4.5/es.zip"))
    if reason:
        pytest.skip(reason)
    from schoolctl.lab import Lab

    lab = Lab()
    lab.up([HOST], timeout=180)
    env = SchoolEnv(lab, tmp_path_factory.mktemp("wiring"), HOST, SID, LAYERS, services={
        "moodle": {"version": "5.0.6"}, "etherpad": {"version": "2.5.3"}, "nextcloud": {"version": "31.0.11"}})
    # English first (the pages below are read in English), Catalan and Spanish installed and selectable
    school = env.schools / f"{SID}.yaml"
    school.write_text(school.read_text() + "languages: [en, ca, es]\n")
    try:
        first = env.deploy("first deploy (Moodle, Etherpad)")
        assert first["status"] in ("changed", "unchanged"), first
        env.import_roster(ROSTER)
        yield env
    finally:
        if not os.environ.get("SCHOOLCTL_KEEP_LAB"):
            lab.down([HOST])


class Browser:
    """curl with a cookie jar, through nginx on the lab host (--resolve), redirects NOT followed."""

    def __init__(self, apps) -> None:
        self.apps = apps
        self.jar = Path(tempfile.mkdtemp()) / "jar"
        self.address = apps.lab.host(apps.host).address

    def get(self, url: str, data: dict[str, str] | None = None) -> tuple[int, str, str, str]:
        """(status, redirect target, body, response headers)."""
        host = url.split("/")[2]
        cmd = ["curl", "-sS", "--max-time", "60", "-k", "--noproxy", "*", "--resolve", f"{host}:443:{self.address}",
               "-b", str(self.jar), "-c", str(self.jar), "-o", "-", "-D", "/dev/stderr",
               "-w", "\n@@%{http_code} %{redirect_url}"]
        for k, v in (data or {}).items():
            cmd += ["--data-urlencode", f"{k}={v}"]
        proc = subprocess.run([*cmd, url], capture_output=True, text=True, timeout=90)
        assert proc.returncode == 0, proc.stderr[-1000:]
        body, _, tail = proc.stdout.rpartition("\n@@")
        code, _, location = tail.partition(" ")
        return int(code), location, body, proc.stderr

    def login(self, uid: str, password: str) -> None:
        moodle = f"https://moodle.{self.apps.school.domain}"
        page = self.get(f"{moodle}/login/index.php")[2]
        token = re.search(r'name="logintoken" value="([^"]+)"', page)
        assert token, page[-1500:]
        code, location, _, _ = self.get(f"{moodle}/login/index.php",
                                        {"username": uid, "password": password, "logintoken": token.group(1)})
        assert code == 303 and "testsession=" in location, (code, location)


def person(apps, role: str) -> dict[str, str]:
    return next(p for p in apps.people if p["role"] == role)


def api(apps, function: str, **params: str) -> str:
    """Etherpad's API on the host (key from its root-only file into curl's stdin)."""
    form = "&".join(f"{k}={v}" for k, v in params.items())
    return apps.ok(f"printf 'apikey=%s&%s' \"$(cat /etc/etherpad/APIKEY.txt)\" '{form}' | "
                   f"curl -fsS --noproxy '*' --max-time 20 --data @- {API}/{function}")


def pad_links(page: str) -> list[str]:
    links = re.findall(r'href="([^"]*schoolpads/index\.php\?id=1&amp;pad=[^"]+)"', page)
    return [u.replace("&amp;", "&") for u in links]


@pytest.fixture(scope="module")
def pad(apps) -> dict[str, str]:
    """A teacher creates "Lesson notes" in the front page's pads and opens it: what the browser got."""
    teacher = person(apps, "teacher")
    b = Browser(apps)
    b.login(teacher["uid"], teacher["password"])
    moodle = f"https://moodle.{apps.school.domain}"
    code, _, page, _ = b.get(moodle + PADS)
    assert code == 200 and 'name="name"' in page, page[-1500:]     # teachers may create pads
    sesskey = re.search(r'name="sesskey" value="([^"]+)"', page).group(1)
    code, location, _, _ = b.get(moodle + PADS, {"sesskey": sesskey, "name": "Lesson notes"})
    assert code == 303 and location.endswith(PADS), (code, location)
    links = pad_links(b.get(moodle + PADS)[2])
    assert len(links) == 1 and links[0].endswith("%24Lesson-notes"), links
    code, location, _, headers = b.get(links[0])
    cookie = next((h for h in headers.splitlines() if h.lower().startswith("set-cookie: sessionid=")), "")
    return {"link": links[0], "code": str(code), "location": location, "cookie": cookie, "uid": teacher["uid"],
            "given_name": teacher.get("given_name") or teacher["uid"].split(".")[0].capitalize()}


def test_a_teacher_opens_a_pad_and_the_session_really_opens_it(apps, pad) -> None:
    domain = apps.school.domain
    assert pad["code"] == "303" and re.fullmatch(rf"https://pad\.{re.escape(domain)}/p/g\.[0-9a-zA-Z]{{16}}%24Lesson-notes",
                                                 pad["location"]), pad
    cookie = pad["cookie"].lower()
    assert f"domain={domain}" in cookie and "secure" in cookie and "samesite=lax" in cookie, cookie
    assert "httponly" not in cookie    # Etherpad's pad page reads it from JavaScript
    session = re.search(r"sessionid=(s\.[0-9a-f]{32})", cookie).group(1)
    export = pad["location"] + "/export/txt"
    # the pad's text with the session cookie (what pad.<domain> receives from the browser) ...
    browser = Browser(apps)
    browser.jar.write_text(f"pad.{domain}\tFALSE\t/\tTRUE\t0\tsessionID\t{session}\n")
    code, _, text, _ = browser.get(export)
    assert code == 200 and text.strip(), (code, text[:300])
    # ... and nothing without it, or with a made-up one
    assert Browser(apps).get(export)[0] == 403
    browser.jar.write_text(f"pad.{domain}\tFALSE\t/\tTRUE\t0\tsessionID\ts.{'0' * 32}\n")
    assert browser.get(export)[0] == 403


def test_the_author_is_named_as_in_moodle(apps, pad) -> None:
    reply = api(apps, "createAuthorIfNotExistsFor", authorMapper=f"moodle-{pad['uid']}")
    author = re.search(r'"authorID":"([^"]+)"', reply).group(1)
    name = api(apps, "getAuthorName", authorID=author)
    assert '"code":0' in name and pad["given_name"] in name, name


def test_a_student_opens_pads_but_cannot_create_them(apps, pad) -> None:
    student = person(apps, "student")
    b = Browser(apps)
    b.login(student["uid"], student["password"])   # no email in the roster: Moodle must not trap them
    moodle = f"https://moodle.{apps.school.domain}"
    code, location, page, _ = b.get(moodle + PADS)
    assert code == 200 and 'name="name"' not in page, (code, location, page[-800:])
    assert pad_links(page) == [pad["link"]]
    sesskey = re.search(r'"sesskey":"([^"]+)"', page).group(1)
    b.get(moodle + PADS, {"sesskey": sesskey, "name": "Not allowed"})
    assert pad_links(b.get(moodle + PADS)[2]) == [pad["link"]]
    code, location, _, _ = b.get(pad["link"])
    assert code == 303 and location == pad["location"]
    # a pad that is not one of the course's opens nothing
    code, location, _, _ = b.get(moodle + PADS + "&pad=g.AAAAAAAAAAAAAAAA%24x")
    assert code != 303 or "pad." not in location


def test_moodle_links_the_school_services(apps, pad) -> None:
    b = Browser(apps)
    teacher = person(apps, "teacher")
    b.login(teacher["uid"], teacher["password"])
    page = b.get(f"https://moodle.{apps.school.domain}/my/")[2]
    assert f'href="https://cloud.{apps.school.domain}"' in page
    assert f'href="https://moodle.{apps.school.domain}{PADS}"' in page.replace("&amp;", "&")


def test_the_directory_teachers_are_course_creators(apps, pad) -> None:
    sql = ("SELECT u.username FROM mdl_role_assignments ra JOIN mdl_role r ON r.id = ra.roleid "
           "JOIN mdl_user u ON u.id = ra.userid WHERE r.shortname = 'coursecreator' AND ra.component = 'auth_ldap'")
    creators = apps.ok(f'runuser -u postgres -- psql -XAt -d moodle -c "{sql}"').split()
    assert person(apps, "teacher")["uid"] in creators
    assert person(apps, "student")["uid"] not in creators


def test_a_leavers_name_leaves_etherpad(apps, pad) -> None:
    from schoolctl.deploy import etherpad
    from schoolctl.deploy.site import Site

    mapper = f"moodle-{pad['uid']}"
    author = re.search(r'"authorID":"([^"]+)"', api(apps, "createAuthorIfNotExistsFor", authorMapper=mapper)).group(1)
    before = api(apps, "getAuthorName", authorID=author)
    apps.ok(etherpad.delete_user_command(Site(school=apps.school, secret=None), pad["uid"]))
    after = api(apps, "getAuthorName", authorID=author)
    assert etherpad.FORMER_AUTHOR[apps.school.languages[0]] in after and after != before
    name = re.search(r'"data":"([^"]*)"', before).group(1)
    api(apps, "createAuthorIfNotExistsFor", authorMapper=mapper, name=name.replace(" ", "+"))   # as it was


def test_an_upgrade_dumps_the_database_first_then_converges(apps, pad) -> None:
    from schoolctl.deploy import etherpad

    # what a newer release of a plugin looks like to Moodle: the code's version is ahead of the database's
    version = etherpad.moodle_plugin_version()
    psql = "runuser -u postgres -- psql -XAt -d moodle -c"
    apps.ok(f"{psql} \"UPDATE mdl_config_plugins SET value = '{version - 100}' "
            "WHERE plugin = 'local_schoolpads' AND name = 'version'\" && "
            f"{psql} \"UPDATE mdl_config SET value = '' WHERE name = 'allversionshash'\"")
    before = set(apps.ok("ls -1 /var/backups/schoolctl/ 2>/dev/null || true").split())
    result = apps.deploy("plugin upgrade")
    assert result["status"] == "changed", result
    assert any("moodle database matches" in c for c in result["changes"]), result["changes"]
    new = sorted(set(apps.ok("ls -1 /var/backups/schoolctl/").split()) - before)
    assert len(new) == 1 and new[0].startswith("moodle-") and new[0].endswith(".dump"), new
    dump = f"/var/backups/schoolctl/{new[0]}"
    assert apps.ok(f"stat -c '%a %U' {dump} /var/backups/schoolctl").split() == ["600", "root", "700", "root"]
    assert "TABLE DATA public mdl_user" in apps.ok(f"pg_restore --list {dump}")
    assert apps.ok(f"{psql} \"SELECT value FROM mdl_config_plugins WHERE plugin = 'local_schoolpads' "
                   "AND name = 'version'\"").strip() == str(version)
    assert apps.deploy("after the upgrade")["status"] == "unchanged"


@pytest.mark.parametrize(("lang", "title"), [("ca", "Documents compartits"), ("es", "Documentos compartidos")])
def test_the_pads_speak_the_schools_other_languages(apps, pad, lang: str, title: str) -> None:
    """local_schoolpads' own ca/es strings show once Moodle has the language (its pack from the mirror)."""
    student = person(apps, "student")
    b = Browser(apps)
    b.login(student["uid"], student["password"])
    code, _, page, _ = b.get(f"https://moodle.{apps.school.domain}{PADS}&lang={lang}")
    assert code == 200 and f'lang="{lang}"' in page and title in page, page[-2000:]
