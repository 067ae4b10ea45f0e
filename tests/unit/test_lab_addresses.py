"""Address allocation, subnet collision detection and the traffic guard (no root needed)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from schoolctl.errors import LabError
from schoolctl.lab import netutil
from schoolctl.lab.addresses import (
    allocate,
    bridge_address,
    host_address,
    load_assignments,
    max_index,
    overlapping,
    save_assignments,
    veth_name,
)

NET = ipaddress.IPv4Network("10.213.0.0/24")


def test_bridge_and_host_addresses() -> None:
    assert str(bridge_address(NET)) == "10.213.0.1"
    assert str(host_address(NET, 10)) == "10.213.0.10"
    assert max_index(NET) == 254


def test_first_host_gets_10_and_keeps_it() -> None:
    a: dict[str, int] = {}
    assert allocate("demo", a, NET) == 10
    assert allocate("t-a", a, NET) == 11
    assert allocate("demo", a, NET) == 10
    assert a == {"demo": 10, "t-a": 11}


def test_taken_indexes_are_skipped_and_a_taken_own_index_moves() -> None:
    a = {"demo": 10}
    assert allocate("t-a", a, NET, taken=[11, 12]) == 13
    assert allocate("demo", a, NET, taken=[10]) == 11


def test_full_subnet_reclaims_names_that_are_not_live() -> None:
    net = ipaddress.IPv4Network("10.213.0.0/28")  # indexes 10..14
    a: dict[str, int] = {}
    for i in range(5):
        allocate(f"h{i}", a, net)
    live = ["h0", "h2", "h3", "h4"]
    assert allocate("new", a, net, live=live) == 11
    assert "h1" not in a
    with pytest.raises(LabError, match="no free address"):
        allocate("more", a, net, live=[*live, "new"])


def test_assignments_persist(tmp_path: Path) -> None:
    path = tmp_path / "addresses.json"
    assert load_assignments(path) == {}
    save_assignments(path, {"demo": 10, "t-a": 11})
    assert load_assignments(path) == {"demo": 10, "t-a": 11}


def test_veth_names_fit_ifnamsiz() -> None:
    assert veth_name(10) == "sclv10"
    assert len(veth_name(65534) + "c") <= 15


def test_overlapping_addresses_and_routes_are_found() -> None:
    existing = [
        ("eth0", "192.0.2.2/24"),
        ("wg0", "10.213.0.0/16"),
        ("sclab0", "10.213.0.1/24"),
        ("lo", "127.0.0.1/8"),
    ]
    assert overlapping(NET, existing, own_ifaces=["sclab0"]) == ["10.213.0.0/16 on wg0"]
    assert overlapping(ipaddress.IPv4Network("10.99.0.0/24"), existing, own_ifaces=[]) == []


def test_network_helpers_refuse_addresses_outside_the_lab() -> None:
    netutil.allow_network(NET)
    for addr in ("192.0.2.1", "10.1.1.1", "8.8.8.8"):
        with pytest.raises(LabError, match="refusing"):
            netutil.port_open(addr, 80)
        with pytest.raises(LabError, match="refusing"):
            netutil.http(f"http://{addr}/")
    assert netutil.port_open("127.0.0.1", 1) in (True, False)
