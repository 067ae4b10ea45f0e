"""The audit's controls as a plain testinfra suite, from the installed package. This module is the
`pytest11` plugin `schoolctl-audit` (pytest loads it wherever schoolctl is installed):

    pytest --pyargs schoolctl.audit --hosts=ssh://root@ADDR --school ID [--schools-dir DIR]

One test per control (schoolctl/audit/test_controls.py; n/a -> skipped; a failing control the
fleet accepts (`accept:`, until its date) -> skipped with "accepted until DATE by WHO: REASON"
and the evidence). The evidence is
prefetched once per host in one command, as in `schoolctl audit`; each control still reads the
real host."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("schoolctl audit")
    group.addoption("--school", help="The school id whose effective policy the host is audited against.")
    group.addoption("--schools-dir", default=None, help="Folder with fleet.yaml and the school files "
                                                        "(default: $SCHOOLCTL_SCHOOLS_DIR or ./schools).")


@pytest.fixture(scope="session")
def school(request: pytest.FixtureRequest) -> Any:
    from schoolctl.config.loader import default_schools_dir, load

    sid = request.config.getoption("--school")
    if not sid:
        pytest.skip("pass --school ID (the school whose policy the host must follow)")
    folder = request.config.getoption("--schools-dir")
    return load(Path(folder) if folder else default_schools_dir()).select([sid])[0]


@pytest.fixture(scope="session")
def expect(school: Any) -> Any:
    from schoolctl.audit.runner import expectations

    return expectations(school)


@pytest.fixture(scope="module")
def audit_context(host: Any, school: Any, expect: Any) -> Any:
    """The testinfra `host` wrapped in the evidence cache, prefetched once."""
    from schoolctl.audit.catalogue import CachedHost, Context, prefetch_commands

    cached = CachedHost(host)
    cached.prefetch(prefetch_commands(school, expect))
    return Context(cached, school, expect)
