"""The HTML audit report at a fleet's scale (300 schools, the real controls), and its translations:
the summary's numbers, the district grouping, the tool version, a size bound, no English left in the
ca and es reports, nothing fetched from any origin; every control and label translated."""

from __future__ import annotations

import datetime as dt
import re
import time
from pathlib import Path

import pytest
from markupsafe import escape
from typer.testing import CliRunner

from schoolctl import __version__
from schoolctl.audit.catalogue import LEGAL, ControlResult, load_all, order_key
from schoolctl.audit.runner import NOT_CHECKED, SchoolAudit
from schoolctl.cli.reports import html
from schoolctl.config.model import Acceptance

WHEN = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)
DISTRICTS = ("Ciutat Vella", "Eixample", "Sants-Montjuïc", "Les Corts", "Sarrià-Sant Gervasi", "Gràcia",
             "Horta-Guinardó", "Nou Barris", "Sant Andreu", "Sant Martí")
SCHOOLS = 300
WAIVER = Acceptance(control="ETHERPAD-NO-KNOWN-VULNERABILITY", school="*", reason="upgrade planned for the holidays",
                    accepted_by="Ana Soler (DPD)", until=dt.date(2027, 1, 31))
MEDIUM = ("HOST-REBOOT-PENDING", "WEB-HSTS", "MOODLE-DPO-CONTACT")

# how each school is made (by its number i), so that the test knows the summary without the renderer:
unreachable = {i for i in range(SCHOOLS) if i % 50 == 49}                       # 6: ssh timeout
control_error = {i for i in range(SCHOOLS) if i % 100 == 0}                     # 3: one control errs, none fails
csp = {i for i in range(SCHOOLS) if i % 4 == 1} - unreachable                   # WEB-CSP (high) + HOST-TIME-SYNC
db = {i for i in range(SCHOOLS) if i % 4 == 2} - unreachable                    # DB-LOCAL-ONLY (high) + MEDIUM
accepted = {i for i in range(SCHOOLS) if i % 4 in (2, 3)} - unreachable         # ETHERPAD-... accepted


def _result(c, i: int):
    if c.service == "bigbluebutton":
        return ControlResult(c, "n/a", f"escola-{i:03d} does not run bigbluebutton", "")
    if c.id == "WEB-CSP" and i in csp:
        return ControlResult(c, "fail", f"moodle.escola-{i:03d}.edu.example: default-src 'self' "
                             "https://cdn.jsdelivr.example https://fonts.example; script-src 'unsafe-inline'",
                             "only the school's own origins (default-src 'self')")
    if c.id == "HOST-TIME-SYNC" and i in csp:
        return ControlResult(c, "fail", "timedatectl: NTPSynchronized=no, systemd-timesyncd inactive",
                             "NTPSynchronized=yes")
    if (c.id == "DB-LOCAL-ONLY" or c.id in MEDIUM) and i in db:
        return ControlResult(c, "fail", "ss -ltn: postgres listening on 0.0.0.0:5432 and [::]:5432; "
                             "listen_addresses = '*'", "127.0.0.1:5432 and [::1]:5432 only")
    if c.id == WAIVER.control and i in accepted:
        return ControlResult(c, "accepted", "Etherpad 3.3.1 running; affected by CVE-2026-114516 (critical, "
                             "affected <3.3.3)", "Etherpad 3.3.3 or later (fixes CVE-2026-114516)", WAIVER)
    if c.id == "HOST-APT-SECURITY-SUITE" and i in control_error:
        return ControlResult(c, "error", "RuntimeError: apt_pkg: E:Could not open lock file /var/lib/apt/lists/lock",
                             "")
    return ControlResult(c, "pass", f"{c.id.lower()}: as the school's policy says (checked on escola-{i:03d})",
                         "as configured")


def fleet() -> tuple[list[SchoolAudit], dict[str, str]]:
    """300 schools' results as the runner makes them (an unreachable one: its error once, every
    applicable control `error` "not checked"), and their districts."""
    controls = load_all()
    ids = sorted(controls, key=order_key)
    audits, districts = [], {}
    for i in range(SCHOOLS):
        school = f"escola-{i:03d}"
        districts[school] = DISTRICTS[i % len(DISTRICTS)]
        if i in unreachable:
            audits.append(SchoolAudit(school, f"Escola {i}", [
                ControlResult(controls[c], "n/a", "", "") if controls[c].service == "bigbluebutton" else
                ControlResult(controls[c], "error", NOT_CHECKED, "") for c in ids],
                error=f"ssh: connect to host 10.213.{i // 250}.{i % 250} port 22: Connection timed out", seconds=30.0))
        else:
            audits.append(SchoolAudit(school, f"Escola {i}", [_result(controls[c], i) for c in ids], seconds=4.2))
    return audits, districts


@pytest.fixture(scope="module")
def reports() -> dict[str, tuple[str, float]]:
    audits, districts = fleet()
    out = {}
    for lang in html.LANGS:
        start = time.perf_counter()
        page = html.render(audits, lang, WHEN, districts=districts)
        out[lang] = (page, time.perf_counter() - start)
    return out


def _tally(page: str) -> list[int]:
    summary = page[page.index('<ul class="tally">'):page.index("</ul>")]
    return [int(n) for n in re.findall(r"<b>(\d+)</b>", summary)]


def test_summary_numbers_and_failing_controls(reports: dict[str, tuple[str, float]]) -> None:
    page, _ = reports["en"]
    failing = csp | db
    errors = control_error - failing - unreachable
    only_accepted = accepted - failing
    passing = SCHOOLS - len(failing) - len(unreachable) - len(errors) - len(only_accepted)
    assert _tally(page) == [SCHOOLS, len(failing), len(unreachable), len(errors), len(only_accepted), passing]
    assert _tally(page) == [300, 147, 6, 3, 72, 72]
    high = page[page.index("Failing high-severity controls"):page.index("Other failing controls")]
    rows = re.findall(r'<tr><td><a href="#([A-Z0-9-]+)">.*?<td class="n">(\d+)</td><td class="n">(\d+)</td>'
                      r'<td class="n">(\d+)</td></tr>', high)
    # high first by the number of failing schools; unreachable schools' unchecked controls count nowhere
    assert rows == [("DB-LOCAL-ONLY", str(len(db)), "0", "0"), ("WEB-CSP", str(len(csp)), "0", "0"),
                    ("HOST-APT-SECURITY-SUITE", "0", "3", "0"), (WAIVER.control, "0", "0", str(len(accepted)))]
    other = page[page.index("Other failing controls"):page.index("Schools with the most failures")]
    assert all(f'href="#{c}"' in other for c in (*MEDIUM, "HOST-TIME-SYNC"))
    worst = page[page.index("Schools with the most failures"):page.index("Schools that could not be audited")]
    assert len(re.findall(r"<tr><td><a href=\"#escola-", worst)) == html.WORST
    assert 'href="#escola-002"' in worst  # a DB school: one high and three medium fail
    unreachable_ids = page[page.index("Schools that could not be audited"):page.index("<h3>Districts")]
    assert re.findall(r'href="#(escola-\d+)"', unreachable_ids) == [f"escola-{i:03d}" for i in sorted(unreachable)]


def test_grouped_by_district_with_a_css_filter(reports: dict[str, tuple[str, float]]) -> None:
    page, _ = reports["ca"]
    sections = re.findall(r'<section class="district" id="(D_\d+)">\n<h2>([^<]+) <small>', page)
    assert [name for _, name in sections] == sorted(DISTRICTS, key=str.casefold)
    for n, (anchor, name) in enumerate(sections):
        body = page[page.index(f'id="{anchor}"'):]
        body = body[:body.index('<section class="district"', 10)] if n + 1 < len(sections) else body
        rows = re.findall(r'<tr id="(escola-\d+)">', body)
        k = DISTRICTS.index(name)
        assert rows == [f"escola-{i:03d}" for i in range(SCHOOLS) if i % len(DISTRICTS) == k], name
        assert f"body:has(#F_{n + 1}:checked) section.district:not(#{anchor}){{display:none}}" in page
        assert f'<label for="F_{n + 1}">{name} (30)</label>' in page
    # an unreachable school: its one line once, none of its "not checked" controls
    assert page.count("Connection timed out") == len(unreachable) and NOT_CHECKED not in page
    assert 'id="escola_049-HOST_SSH_NO_PASSWORD"' not in page


def test_version_print_layout_and_size(reports: dict[str, tuple[str, float]]) -> None:
    for lang, (page, seconds) in reports.items():
        size = len(page.encode())
        print(f"\n{lang}: {SCHOOLS} schools x {len(load_all())} controls: {size / 1e6:.2f} MB in {seconds:.2f} s")
        assert f"schoolctl {__version__}" in page and __version__ in page[:2000]
        assert "@media print" in page
        assert size < 1_000_000, size  # measured: 0.60 MB, rendered in about 0.1 s
        assert page.count('class="ctl"') == len(load_all())  # each control's texts once


# a URL a browser would fetch: src/href/action/poster/url()/@import with a scheme or protocol-relative
FETCHING = re.compile(r"""(?:\b(?:src|href|action|poster|data|srcset)\s*=\s*["']?\s*(?:https?:)?//)"""
                      r"""|url\(\s*["']?\s*(?:https?:)?//|@import""", re.I)


@pytest.mark.parametrize("lang", html.LANGS)
def test_loads_nothing_from_anywhere(reports: dict[str, tuple[str, float]], lang: str) -> None:
    page, _ = reports[lang]
    assert not FETCHING.search(page) and "<script" not in page.lower()
    assert not re.search(r"\bsrc\s*=", page, re.I)
    hrefs = re.findall(r'href="([^"]*)"', page)
    assert hrefs and all(h.startswith("#") for h in hrefs)
    ids = set(re.findall(r' id="([^"]+)"', page))
    assert {h[1:] for h in hrefs} <= ids  # every link lands on something in the page


ENGLISH = [c.why for c in (load_all()[i] for i in ("WEB-CSP", "HOST-SSH-NO-PASSWORD", "MOODLE-LOG-LIFETIME",
                                                      "JITSI-STUN-OWN", "NEXTCLOUD-NO-LOOKUP-SERVER"))]


@pytest.mark.parametrize("lang", ["ca", "es"])
def test_ca_and_es_reports_have_no_english_left(reports: dict[str, tuple[str, float]], lang: str) -> None:
    page, _ = reports[lang]
    for text in ENGLISH:
        assert str(escape(text)) not in page, text
    for label in ("Why it matters", "Legal basis", "Observed", "Expected", "Accepted until", "data minimisation",
                  "security of processing", "Failing high-severity controls", "Districts"):
        assert label not in page, label
    control = load_all()["WEB-CSP"]
    assert str(escape(html.why(control, lang))) in page and control.titles[lang] in page
    assert {"ca": "Per què importa", "es": "Por qué importa"}[lang] in page
    assert {"ca": "RGPD art. 32 seguretat del tractament", "es": "RGPD art. 32 seguridad del tratamiento"}[
        lang] in page


# --- every control and label translated ---------------------------------------------------------

@pytest.mark.parametrize("lang", ["ca", "es"])
def test_every_control_has_its_title_why_and_legal_basis_translated(lang: str) -> None:
    controls = load_all()
    words = html.translations(lang)
    missing = [f"{cid}: title (titles= in its @control)" for cid, c in controls.items() if not c.titles.get(lang)]
    missing += [f"{cid}: why (templates/report/i18n/{lang}.yaml, why:)" for cid in controls
                if not words["why"].get(cid)]
    missing += [f"{article}: legal (templates/report/i18n/{lang}.yaml, legal:)" for article in LEGAL
                if not words["legal"].get(article)]
    assert not missing, "\n".join(missing)
    assert not set(words["why"]) - set(controls), "translations of controls that do not exist"
    assert not set(words["legal"]) - set(LEGAL)
    same = [cid for cid, c in controls.items() if words["why"][cid] == c.why]
    assert not same, f"left in English: {same}"


def test_every_label_is_translated() -> None:
    en = html.translations("en")["labels"]
    assert en and not html.translations("en")["why"]  # English texts are the declarations
    for lang in ("ca", "es"):
        labels = html.translations(lang)["labels"]
        assert set(labels) == set(en), (lang, set(en) ^ set(labels))
        assert all(isinstance(v, str) and v.strip() for v in labels.values())
        template = (html.TEMPLATES / "report.html.j2").read_text(encoding="utf-8")
        used = set(re.findall(r"\bt\.(\w+)", template)) | set(re.findall(r"\bt\[\"([^\"]+)\"\]", template))
        assert used <= set(en), used - set(en)


# --- through the CLI --------------------------------------------------------------------------

def test_cli_html_report_groups_by_the_schools_districts(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import schoolctl.audit.runner as runner
    from schoolctl.cli.main import app

    audits, _ = fleet()
    monkeypatch.setenv("SCHOOLCTL_SCHOOLS_DIR", str(Path(__file__).resolve().parents[2] / "schools"))

    def fake_audit_all(schools, **kw):  # the real schools' ids on made-up results
        return [SchoolAudit(s.id, s.name, audits[n + 1].controls) for n, s in enumerate(schools)]

    monkeypatch.setattr(runner, "audit_all", fake_audit_all)
    out = tmp_path / "audit.html"
    res = CliRunner().invoke(app, ["audit", "escola-pins", "institut-mar", "--format", "html", "--lang", "es",
                                   "-o", str(out)])
    assert res.exit_code == 1, res.output  # escola-pins fails WEB-CSP
    page = out.read_text(encoding="utf-8")
    assert re.findall(r'<section class="district" id="D_\d+">\n<h2>([^<]+) <small>', page) == [
        "Horta-Guinardó", "Sant Martí"]
    assert "Auditoría de privacidad y seguridad" in page and f"schoolctl {__version__}" in page
