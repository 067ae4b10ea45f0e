"""Lab addresses: the bridge address, one address per host (persisted), collision checks."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable
from pathlib import Path

from schoolctl.errors import LabError
from schoolctl.lab.config import FIRST_HOST_INDEX, VETH_PREFIX


def bridge_address(subnet: ipaddress.IPv4Network) -> ipaddress.IPv4Address:
    """The host side's address on the bridge: the subnet's first address."""
    return subnet.network_address + 1


def host_address(subnet: ipaddress.IPv4Network, index: int) -> ipaddress.IPv4Address:
    """Address number ``index`` in ``subnet``."""
    return subnet.network_address + index


def max_index(subnet: ipaddress.IPv4Network) -> int:
    """The last usable host index (the broadcast address excluded)."""
    return subnet.num_addresses - 2


def veth_name(index: int) -> str:
    """Host-side veth name for host ``index``; fits IFNAMSIZ (15) for any /16 index."""
    name = f"{VETH_PREFIX}{index}"
    assert len(name) <= 15
    return name


def load_assignments(path: Path) -> dict[str, int]:
    """The persisted name -> index map (empty when none)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): int(v) for k, v in data.items()}


def save_assignments(path: Path, assignments: dict[str, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(dict(sorted(assignments.items())), indent=1) + "\n")
    tmp.replace(path)


def allocate(
    name: str,
    assignments: dict[str, int],
    subnet: ipaddress.IPv4Network,
    *,
    live: Iterable[str] = (),
    taken: Iterable[int] = (),
) -> int:
    """The index for ``name``: its persisted one, else the lowest free one from 10.

    ``assignments`` is updated in place. ``live`` names hold their index for sure; indexes
    of names not live may be reclaimed when the subnet is full. ``taken`` are indexes in use
    by something else (e.g. an interface of that name that the lab did not make).
    """
    top = max_index(subnet)
    taken_set = set(taken)
    if name in assignments and FIRST_HOST_INDEX <= assignments[name] <= top:
        if assignments[name] not in taken_set:
            return assignments[name]
        del assignments[name]
    used = {i for n, i in assignments.items() if n != name}
    for index in range(FIRST_HOST_INDEX, top + 1):
        if index not in used and index not in taken_set:
            assignments[name] = index
            return index
    live_set = set(live)
    for other, index in sorted(assignments.items(), key=lambda kv: kv[1]):
        if other not in live_set and other != name and index not in taken_set:
            del assignments[other]
            assignments[name] = index
            return index
    raise LabError(f"no free address left in {subnet} for lab host {name!r}", "bring some hosts down")


def overlapping(
    subnet: ipaddress.IPv4Network, existing: Iterable[tuple[str, str]], own_ifaces: Iterable[str]
) -> list[str]:
    """Existing (interface, cidr) addresses or routes that overlap ``subnet``, ours excluded."""
    own = set(own_ifaces)
    hits = []
    for iface, cidr in existing:
        if iface in own:
            continue
        try:
            net = ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            continue
        if net.version == 4 and net.prefixlen > 0 and net.overlaps(subnet):
            hits.append(f"{cidr} on {iface}")
    return hits
