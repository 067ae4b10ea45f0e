"""Lab host names, subnets and prerequisite messages (no root needed)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from schoolctl.errors import LabError
from schoolctl.lab import prereqs
from schoolctl.lab.config import subnet_from_env
from schoolctl.lab.names import MAX_NAME, validate_name


@pytest.mark.parametrize("name", ["demo", "t-a", "school-42", "a", "x" * MAX_NAME, "gs-nord-2"])
def test_valid_names(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "Demo", "1abc", "-a", "a-", "a--b", "a_b", "a.b", "x" * (MAX_NAME + 1), "ä", "a b", "../x"]
)
def test_invalid_names_are_usage_errors(name: str) -> None:
    with pytest.raises(LabError) as info:
        validate_name(name)
    assert info.value.usage
    assert "invalid lab host name" in str(info.value) and "hint:" in str(info.value)


def test_subnet_default_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SCHOOLCTL_LAB_SUBNET", raising=False)
    assert subnet_from_env() == ipaddress.IPv4Network("10.213.0.0/24")
    monkeypatch.setenv("SCHOOLCTL_LAB_SUBNET", "10.214.0.0/24")
    assert subnet_from_env() == ipaddress.IPv4Network("10.214.0.0/24")


@pytest.mark.parametrize("bad", ["nonsense", "10.213.0.1/24", "8.8.8.0/24", "10.0.0.0/8", "10.1.2.0/30"])
def test_bad_subnets_are_refused(monkeypatch: pytest.MonkeyPatch, bad: str) -> None:
    monkeypatch.setenv("SCHOOLCTL_LAB_SUBNET", bad)
    with pytest.raises(LabError) as info:
        subnet_from_env()
    assert info.value.usage


def test_apt_line_names_each_package_once() -> None:
    assert prereqs.apt_line(["pebble", "debootstrap", "pebble"]) == (
        "apt-get update && apt-get install -y debootstrap pebble"
    )


def test_every_command_maps_to_a_package() -> None:
    assert {"debootstrap", "systemd-container", "tinyproxy", "apt-cacher-ng", "pebble"} <= set(prereqs.ALL_PACKAGES)


def test_missing_packages_are_named_with_the_install_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prereqs.os, "geteuid", lambda: 0)
    monkeypatch.setattr(prereqs, "which", lambda cmd: None if cmd in ("pebble", "tinyproxy") else "/bin/x")
    with pytest.raises(LabError) as info:
        prereqs.require(services=True)
    assert info.value.usage
    assert "missing Debian packages: pebble, tinyproxy" in str(info.value)
    assert "apt-get install -y pebble tinyproxy" in str(info.value)


def test_not_root_is_reported_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prereqs.os, "geteuid", lambda: 1000)
    with pytest.raises(LabError, match="needs root"):
        prereqs.require()


def test_too_little_disk_space_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LabError, match="not enough disk space"):
        prereqs.require_disk(tmp_path / "not" / "yet", need=1 << 62)
    prereqs.require_disk(tmp_path, need=1)
