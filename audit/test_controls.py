"""Every registered control as one testinfra test (see plugin.py for how to run it)."""

from __future__ import annotations

from typing import Any

import pytest

from schoolctl.audit.catalogue import ACCEPTED, NA, PASS, load_all, order_key, run_control, waived
from schoolctl.releases import accepted_text

CONTROLS = load_all()


@pytest.mark.parametrize("control_id", sorted(CONTROLS, key=order_key))
def test_control(control_id: str, audit_context: Any) -> None:
    c = CONTROLS[control_id]
    result = waived(run_control(c, audit_context), audit_context.school, audit_context.day)
    if result.status == NA:
        pytest.skip(f"{control_id}: {result.observed}")
    if result.status == ACCEPTED:  # a failing control the fleet accepts until a date: skipped, with why
        pytest.skip(f"{control_id}: {accepted_text(result.accepted)}; observed: {result.observed}; "
                    f"expected: {result.expected}")
    assert result.status == PASS, (f"{control_id} ({c.severity}) {c.title}: {result.status}\n"
                                   f"  observed: {result.observed}\n  expected: {result.expected}\n"
                                   f"  legal: {'; '.join(c.legal_text)}")
