"""The audit as ONE static HTML file: a fleet x control matrix and, per school, every control with
its evidence, expected value, reason and legal basis; an accepted risk (a failing control the
fleet accepts until a date) shows as `accepted`, with its reason, who accepted it, until when, and
the evidence. Inline CSS only, no script, no request to any
other origin: it opens in a browser with no network. Readable in Catalan, Spanish or English."""

from __future__ import annotations

import datetime as dt
from functools import cache
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from schoolctl.resources import templates
from schoolctl.secrets import redact

TEMPLATES = templates() / "report"
LANGS = ("ca", "es", "en")

TEXT: dict[str, dict[str, str]] = {
    "en": {"title": "Privacy and security audit", "generated": "Generated", "fleet": "Fleet overview",
           "control": "Control", "school": "School", "status": "Status", "severity": "Severity",
           "observed": "Observed", "expected": "Expected", "why": "Why it matters", "legal": "Legal basis",
           "pass": "pass", "fail": "fail", "error": "error", "n/a": "n/a", "high": "high", "medium": "medium",
           "low": "low", "schools": "Schools", "details": "Controls per school", "school_error": "School error",
           "summary": "{fail} failed, {error} errors, {accepted} accepted, {pass} passed, {na} not applicable",
           "legend": "Each cell links to the evidence below. n/a: the school does not run that service. "
                     "accepted: it fails, and the city accepts the risk until the date shown.",
           "service": "Service", "seconds": "audit time", "accepted": "accepted", "accepted_until": "Accepted until",
           "accepted_by": "Accepted by", "reason": "Reason"},
    "ca": {"title": "Auditoria de privacitat i seguretat", "generated": "Generat", "fleet": "Visió de conjunt",
           "control": "Control", "school": "Escola", "status": "Estat", "severity": "Gravetat",
           "observed": "Observat", "expected": "Esperat", "why": "Per què importa", "legal": "Base legal",
           "pass": "correcte", "fail": "falla", "error": "error", "n/a": "n/a", "high": "alta", "medium": "mitjana",
           "low": "baixa", "schools": "Escoles", "details": "Controls per escola", "school_error": "Error de l'escola",
           "summary": "{fail} fallen, {error} errors, {accepted} acceptats, {pass} correctes, {na} no aplicables",
           "legend": "Cada cel·la enllaça amb l'evidència de sota. n/a: l'escola no té aquest servei. "
                     "acceptat: falla, i la ciutat n'accepta el risc fins a la data indicada.",
           "service": "Servei", "seconds": "temps d'auditoria", "accepted": "acceptat",
           "accepted_until": "Acceptat fins al", "accepted_by": "Acceptat per", "reason": "Motiu"},
    "es": {"title": "Auditoría de privacidad y seguridad", "generated": "Generado", "fleet": "Visión de conjunto",
           "control": "Control", "school": "Escuela", "status": "Estado", "severity": "Gravedad",
           "observed": "Observado", "expected": "Esperado", "why": "Por qué importa", "legal": "Base legal",
           "pass": "correcto", "fail": "falla", "error": "error", "n/a": "n/a", "high": "alta", "medium": "media",
           "low": "baja", "schools": "Escuelas", "details": "Controles por escuela",
           "school_error": "Error de la escuela",
           "summary": "{fail} fallan, {error} errores, {accepted} aceptados, {pass} correctos, {na} no aplicables",
           "legend": "Cada celda enlaza con la evidencia de abajo. n/a: la escuela no tiene ese servicio. "
                     "aceptado: falla, y la ciudad acepta el riesgo hasta la fecha indicada.",
           "service": "Servicio", "seconds": "tiempo de auditoría", "accepted": "aceptado",
           "accepted_until": "Aceptado hasta", "accepted_by": "Aceptado por", "reason": "Motivo"},
}


def _cell(r: Any, where: str, t: dict[str, str]) -> dict[str, str]:
    """A matrix cell: its status and, for an accepted risk, a tooltip with the date and who."""
    if r is None:
        return {"status": "n/a", "anchor": where, "note": ""}
    note = f"{t['accepted_until']} {r.accepted.until.isoformat()} ({r.accepted.accepted_by})" if r.accepted else ""
    return {"status": r.status, "anchor": where, "note": redact(note)}


@cache
def _env() -> Environment:
    return Environment(loader=FileSystemLoader(TEMPLATES), undefined=StrictUndefined, autoescape=True,
                       trim_blocks=True, lstrip_blocks=True)


def anchor(*parts: str) -> str:
    return "-".join("".join(ch if ch.isalnum() else "_" for ch in p) for p in parts)


def _accepted(a: Any) -> dict[str, str] | None:
    """The waiver of an accepted result as the drill-down shows it (None: not accepted)."""
    return None if a is None else {"reason": redact(a.reason), "by": redact(a.accepted_by),
                                   "until": a.until.isoformat()}


def render(audits: list[Any], lang: str = "en", generated: dt.datetime | None = None) -> str:
    if lang not in LANGS:
        raise ValueError(f"unknown language {lang!r} (one of {', '.join(LANGS)})")
    t = TEXT[lang]
    generated = generated or dt.datetime.now(dt.UTC)
    controls: dict[str, Any] = {}
    for a in audits:
        for r in a.controls:
            controls.setdefault(r.control.id, r.control)
    cells = {(a.school, r.control.id): r for a in audits for r in a.controls}
    schools = []
    for a in audits:
        counts = a.counts()
        schools.append({
            "id": a.school, "name": a.name, "status": a.status, "error": redact(a.error) if a.error else "",
            "seconds": f"{a.seconds:.1f}",
            "summary": t["summary"].format(fail=counts["fail"], error=counts["error"], na=counts["n/a"],
                                           accepted=counts["accepted"], **{"pass": counts["pass"]}),
            "rows": [{"id": r.control.id, "anchor": anchor(a.school, r.control.id), "status": r.status,
                      "title": r.control.title_in(lang), "service": r.control.service,
                      "severity": r.control.severity, "observed": redact(r.observed), "expected": redact(r.expected),
                      "why": r.control.why, "legal": r.control.legal_text,
                      "accepted": _accepted(r.accepted)} for r in a.controls],
        })
    matrix = [{"id": cid, "title": c.title_in(lang), "severity": c.severity,
               "cells": [_cell(cells.get((a.school, cid)), anchor(a.school, cid), t) for a in audits]}
              for cid, c in controls.items()]
    html = _env().get_template("report.html.j2").render(
        t=t, lang=lang, generated=generated.strftime("%Y-%m-%d %H:%M UTC"), schools=schools, matrix=matrix,
        css=(TEMPLATES / "report.css").read_text(encoding="utf-8"))
    return redact(html)
