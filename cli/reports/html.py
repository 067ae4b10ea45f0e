"""The audit as ONE static HTML file that reads at a fleet of hundreds of schools.

First a summary (schools audited, failing, unreachable; the failing controls, high severity first,
with how many schools fail each; the schools with the most failures; one line per district), then
the schools grouped by district (one row each: counts, the failing controls as links, or the one
line saying why the school could not be audited), then per school only what needs acting on
(fail, error, accepted, with the evidence), and last the catalogue of controls, once: title, why
it matters and legal basis, each linked from the schools' findings. Passing controls are counted,
not repeated. A district filter works with CSS alone (`:has()`); the page has no script, loads
nothing from any origin and has a print layout. Every word is Catalan, Spanish or English: the
labels and the controls' "why" and legal basis from `templates/report/i18n/<lang>.yaml`, the
controls' titles from their declarations (`@control(..., titles=...)`)."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Mapping
from functools import cache
from typing import Any

import yaml
from jinja2 import Environment, FileSystemLoader, StrictUndefined

import schoolctl
from schoolctl.resources import templates
from schoolctl.secrets import redact

TEMPLATES = templates() / "report"
I18N = TEMPLATES / "i18n"
LANGS = ("ca", "es", "en")
WORST = 10  # schools listed under "the most failures"
FINDINGS = ("fail", "error", "accepted")  # the results a school's section shows with their evidence
SEVERITY_RANK = {"high": 0, "medium": 1, "low": 2}


@cache
def translations(lang: str) -> dict[str, dict[str, str]]:
    """`templates/report/i18n/<lang>.yaml`: {"labels": ..., "legal": {article: text}, "why": {control id: text}}
    (English has labels only: the controls' English texts are their declarations)."""
    if lang not in LANGS:
        raise ValueError(f"unknown language {lang!r} (one of {', '.join(LANGS)})")
    data = yaml.safe_load((I18N / f"{lang}.yaml").read_text(encoding="utf-8")) or {}
    return {part: dict(data.get(part) or {}) for part in ("labels", "legal", "why")}


def labels(lang: str) -> dict[str, str]:
    """The report's words in `lang` (English where a translation is missing)."""
    return {**translations("en")["labels"], **translations(lang)["labels"]}


def why(control: Any, lang: str) -> str:
    return translations(lang)["why"].get(control.id, control.why)


def legal(control: Any, lang: str) -> list[str]:
    """The control's legal basis, one text per GDPR article it cites."""
    from schoolctl.audit.catalogue import LEGAL

    words = translations(lang)["legal"]
    return [words.get(article, LEGAL[article]) for article in control.legal]


def anchor(*parts: str) -> str:
    """An element id: school ids are lower case, control ids upper case; `_` replaces the rest."""
    return "-".join("".join(ch if ch.isalnum() else "_" for ch in p) for p in parts)


@cache
def _env() -> Environment:
    return Environment(loader=FileSystemLoader(TEMPLATES), undefined=StrictUndefined, autoescape=True,
                       trim_blocks=True, lstrip_blocks=True)


def _finding(a: Any, r: Any, t: dict[str, str], lang: str) -> dict[str, Any]:
    """One fail/error/accepted result with its evidence (the control's texts are in the catalogue)."""
    w = r.accepted
    return {"id": r.control.id, "anchor": anchor(a.school, r.control.id), "status": r.status,
            "title": r.control.title_in(lang), "severity": r.control.severity,
            "observed": redact(r.observed), "expected": redact(r.expected),
            "accepted": None if w is None else {"reason": redact(w.reason), "by": redact(w.accepted_by),
                                                "until": w.until.isoformat()},
            "note": "" if w is None else redact(f"{t['accepted_until']} {w.until.isoformat()} ({w.accepted_by})")}


def _school(a: Any, district: str, t: dict[str, str], lang: str) -> dict[str, Any]:
    counts = a.counts()
    # an unreachable school says why once; its controls were not checked, so none is listed
    findings = [] if a.error else [_finding(a, r, t, lang) for r in a.controls if r.status in FINDINGS]
    return {"id": a.school, "name": a.name or a.school, "district": district, "status": a.status,
            "error": redact(a.error) if a.error else "", "seconds": f"{a.seconds:.1f}", "counts": counts,
            "high": sum(f["severity"] == "high" and f["status"] in ("fail", "error") for f in findings),
            "findings": findings, "evidence": anchor("E", a.school)}


def _districts(schools: list[dict[str, Any]], t: dict[str, str]) -> list[dict[str, Any]]:
    by: dict[str, list[dict[str, Any]]] = {}
    for s in schools:
        by.setdefault(s["district"], []).append(s)
    out = []
    for n, name in enumerate(sorted(by, key=lambda d: (d == "", d.casefold())), 1):
        members = sorted(by[name], key=lambda s: s["id"])
        out.append({"name": name or t["no_district"], "anchor": f"D_{n}", "filter": f"F_{n}", "schools": members,
                    "tally": _tally(members)})
    return out


def _tally(schools: list[dict[str, Any]]) -> dict[str, int]:
    """How many schools: audited, failing, unreachable, with control errors, only accepted risks, passing."""
    status = Counter("unreachable" if s["error"] else s["status"] for s in schools)
    return {"audited": len(schools), "failing": status["fail"], "unreachable": status["unreachable"],
            "errors": status["error"], "accepted": status["accepted"], "passing": status["pass"] + status["n/a"]}


def _failing_controls(audits: list[Any], lang: str) -> list[dict[str, Any]]:
    """Every control failing (or in error, or accepted) somewhere, with how many schools; high severity
    first, then by the number of failing schools. Unreachable schools' unchecked controls do not count."""
    per: dict[str, Counter[str]] = {}
    control: dict[str, Any] = {}
    for a in audits:
        if a.error:
            continue
        for r in a.controls:
            if r.status in FINDINGS:
                per.setdefault(r.control.id, Counter())[r.status] += 1
                control[r.control.id] = r.control
    rows = [{"id": cid, "title": control[cid].title_in(lang), "severity": control[cid].severity,
             "fail": n["fail"], "error": n["error"], "accepted": n["accepted"]} for cid, n in per.items()]
    return sorted(rows, key=lambda r: (SEVERITY_RANK[r["severity"]], -r["fail"], -r["error"], -r["accepted"], r["id"]))


def _catalogue(audits: list[Any], schools: list[dict[str, Any]], lang: str) -> list[dict[str, Any]]:
    """Each control of the results once, with the schools where it needs acting on."""
    controls: dict[str, Any] = {}
    for a in audits:
        for r in a.controls:
            controls.setdefault(r.control.id, r.control)
    at: dict[str, list[dict[str, str]]] = {}
    for s in schools:
        for f in s["findings"]:
            at.setdefault(f["id"], []).append({"school": s["id"], "anchor": f["anchor"], "status": f["status"]})
    return [{"id": cid, "title": c.title_in(lang), "service": c.service, "severity": c.severity,
             "why": why(c, lang), "legal": legal(c, lang), "at": at.get(cid, [])} for cid, c in controls.items()]


def render(audits: list[Any], lang: str = "en", generated: dt.datetime | None = None,
           districts: Mapping[str, str] | None = None) -> str:
    """The report in `lang`; `districts` maps a school id to its district (a school without one is grouped
    under "no district")."""
    if lang not in LANGS:
        raise ValueError(f"unknown language {lang!r} (one of {', '.join(LANGS)})")
    t = labels(lang)
    generated = generated or dt.datetime.now(dt.UTC)
    districts = districts or {}
    schools = [_school(a, districts.get(a.school) or getattr(a, "district", "") or "", t, lang) for a in audits]
    failing = _failing_controls(audits, lang)
    worst = sorted((s for s in schools if s["findings"] and s["status"] in ("fail", "error")),
                   key=lambda s: (-s["high"], -s["counts"]["fail"], -s["counts"]["error"], s["id"]))[:WORST]
    catalogue = _catalogue(audits, schools, lang)
    page = _env().get_template("report.html.j2").render(
        t=t, lang=lang, version=schoolctl.__version__, generated=generated.strftime("%Y-%m-%d %H:%M UTC"),
        tally=_tally(schools), high=[c for c in failing if c["severity"] == "high"],
        other=[c for c in failing if c["severity"] != "high"], worst=worst,
        unreachable=[s for s in schools if s["error"]], districts=_districts(schools, t), catalogue=catalogue,
        css=(TEMPLATES / "report.css").read_text(encoding="utf-8"))
    return redact(page)
