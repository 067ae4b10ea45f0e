"""Every registered control as one testinfra test (see plugin.py for how to run it)."""

from __future__ import annotations

from typing import Any

import pytest

from schoolctl.audit.catalogue import NA, PASS, load_all, order_key, run_control

CONTROLS = load_all()


@pytest.mark.parametrize("control_id", sorted(CONTROLS, key=order_key))
def test_control(control_id: str, audit_context: Any) -> None:
    c = CONTROLS[control_id]
    result = run_control(c, audit_context)
    if result.status == NA:
        pytest.skip(f"{control_id}: {result.observed}")
    assert result.status == PASS, (f"{control_id} ({c.severity}) {c.title}: {result.status}\n"
                                   f"  observed: {result.observed}\n  expected: {result.expected}\n"
                                   f"  legal: {'; '.join(c.legal_text)}")
