"""The audit as JUnit XML: one testsuite per school, one testcase per control; fail -> <failure>
with the evidence, error -> <error>, n/a -> <skipped>, accepted -> <skipped> with the message
"accepted until YYYY-MM-DD by WHO: REASON" and the evidence in its body."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from schoolctl.releases import accepted_text
from schoolctl.secrets import redact


def render(audits: list[Any]) -> str:
    root = ET.Element("testsuites", name="schoolctl audit")
    for a in audits:
        counts = a.counts()
        suite = ET.SubElement(root, "testsuite", name=a.school, tests=str(len(a.controls)),
                              failures=str(counts["fail"]), errors=str(counts["error"]),
                              skipped=str(counts["n/a"] + counts["accepted"]), time=f"{a.seconds:.2f}")
        if a.error:
            ET.SubElement(suite, "properties").append(ET.Element("property", name="school-error",
                                                                 value=redact(a.error)))
        for r in a.controls:
            c = r.control
            case = ET.SubElement(suite, "testcase", classname=f"{a.school}.{c.service}", name=f"{c.id}: {c.title}")
            detail = redact(f"observed: {r.observed}\nexpected: {r.expected}\nwhy: {c.why}\n"
                            f"legal: {'; '.join(c.legal_text)}\nseverity: {c.severity}")
            if r.status == "fail":
                ET.SubElement(case, "failure", message=redact(r.observed)[:500], type=c.severity).text = detail
            elif r.status == "error":
                ET.SubElement(case, "error", message=redact(r.observed)[:500]).text = detail
            elif r.status == "accepted":
                ET.SubElement(case, "skipped", message=redact(accepted_text(r.accepted))[:500]).text = detail
            elif r.status == "n/a":
                ET.SubElement(case, "skipped", message=redact(r.observed)[:500])
            else:
                ET.SubElement(case, "system-out").text = detail
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
