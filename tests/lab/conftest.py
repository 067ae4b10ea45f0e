"""Fixtures for lab tests: one Lab for the session and a factory that boots hosts and removes them.

Lab tests need root and the lab's Debian packages; they skip with the reason otherwise. Host
names must start with ``t-`` so tests never touch a developer's own hosts (e.g. ``demo``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from schoolctl.errors import LabError
from schoolctl.lab import Lab, LabHost, prereqs

# The lab modules, longest first: `make test` runs them on two workers, one module each at a time
# (pytest-xdist --dist loadfile --no-loadscope-reorder), and a worker takes the next module in this
# order; a module not listed comes after these. test_lab.py and test_video.py run alone before them
# (Makefile: LAB_ALONE).
LONGEST_FIRST = ("test_backup", "test_upgrades", "test_demo", "test_people",
                 "test_wiring", "test_moodle", "test_jitsi", "test_nextcloud_etherpad", "test_users_import",
                 "test_deploy", "test_platform_web", "test_audit_host", "test_packaging", "test_release_controls",
                 "test_updates", "test_run_record")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Lab modules in LONGEST_FIRST order (stable within a module)."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(rank)) if item.get_closest_marker("lab") else -1)


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "lab tests need root (systemd-nspawn, network namespaces, mounts)"
    missing = prereqs.missing_packages(prereqs.checks(services=True))
    if missing:
        return f"lab prerequisites missing: {', '.join(missing)} (run: {prereqs.apt_line(missing)})"
    try:
        prereqs.require(services=True)
    except LabError as exc:
        return f"lab prerequisites missing: {exc}"
    return None


@pytest.fixture(scope="session")
def lab() -> Lab:
    """The lab (state in $SCHOOLCTL_LAB_DIR or /var/lib/schoolctl/lab, so the base image is reused)."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    return Lab()


@pytest.fixture(scope="session")
def lab_hosts(lab: Lab) -> Iterator[Callable[..., list[LabHost]]]:
    """``lab_hosts("t-a", "t-b")`` boots hosts (idempotent); all are removed at session end."""
    made: list[str] = []

    def make(*names: str, timeout: float = 120.0) -> list[LabHost]:
        for name in names:
            if not name.startswith("t-"):
                raise ValueError(f"test host names start with 't-' (got {name!r})")
            if name not in made:
                made.append(name)
        return lab.up(names, timeout=timeout)

    yield make
    if made:
        lab.down(made)
