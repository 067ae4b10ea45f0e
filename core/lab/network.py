"""Lab networking: one isolated bridge on the host side, one namespace + veth per lab host.

Hosts reach only the host side (the bridge address); bridge port isolation keeps them apart
and an nftables table drops anything the kernel would forward to or from the bridge, so lab
traffic never leaves this machine even when IP forwarding is on.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

from schoolctl.errors import LabError
from schoolctl.lab.addresses import bridge_address, overlapping
from schoolctl.lab.config import BRIDGE, NETNS_PREFIX, VETH_PREFIX
from schoolctl.lab.run import run

NFT_TABLE = "schoolctl_lab"


def netns_name(host: str) -> str:
    return f"{NETNS_PREFIX}{host}"


def netns_path(host: str) -> Path:
    return Path("/run/netns") / netns_name(host)


def link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def lab_netns() -> list[str]:
    """Network namespaces named by the lab (whoever made them)."""
    d = Path("/run/netns")
    return sorted(p.name for p in d.iterdir() if p.name.startswith(NETNS_PREFIX)) if d.is_dir() else []


def lab_links() -> list[str]:
    """Interfaces in the root namespace named like the lab's (bridge and host-side veths)."""
    return sorted(
        p.name for p in Path("/sys/class/net").iterdir() if p.name == BRIDGE or p.name.startswith(VETH_PREFIX)
    )


def bridge_ports() -> list[str]:
    d = Path("/sys/class/net", BRIDGE, "brif")
    return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


def check_subnet(subnet: ipaddress.IPv4Network) -> None:
    """Raise LabError when ``subnet`` overlaps an address or route that is not the lab's."""
    pairs: list[tuple[str, str]] = []
    for entry in json.loads(run(["ip", "-j", "-4", "addr", "show"]).stdout or "[]"):
        for info in entry.get("addr_info", []):
            pairs.append((entry.get("ifname", "?"), f"{info['local']}/{info['prefixlen']}"))
    for entry in json.loads(run(["ip", "-j", "-4", "route", "show", "table", "all"]).stdout or "[]"):
        dst = entry.get("dst", "")
        if dst and dst != "default" and entry.get("type", "unicast") == "unicast":
            pairs.append((entry.get("dev", "?"), dst))
    hits = overlapping(subnet, pairs, own_ifaces=[BRIDGE])
    if hits:
        raise LabError(
            f"lab subnet {subnet} collides with this machine's network: {', '.join(sorted(set(hits)))}",
            "set SCHOOLCTL_LAB_SUBNET to a free private range, e.g. 10.214.0.0/24",
            usage=True,
        )


def ensure_bridge(subnet: ipaddress.IPv4Network) -> None:
    """Create the lab bridge with the host-side address (idempotent) and the forward-drop rules."""
    addr = f"{bridge_address(subnet)}/{subnet.prefixlen}"
    if not link_exists(BRIDGE):
        check_subnet(subnet)
        run(["ip", "link", "add", BRIDGE, "type", "bridge", "stp_state", "0"])
    current = run(["ip", "-j", "-4", "addr", "show", "dev", BRIDGE]).stdout
    have = {f"{a['local']}/{a['prefixlen']}" for e in json.loads(current or "[]") for a in e.get("addr_info", [])}
    if addr not in have:
        if have:
            raise LabError(
                f"bridge {BRIDGE} has {', '.join(sorted(have))}, not {addr}",
                "the lab subnet changed while hosts run: `schoolctl lab down` first",
            )
        run(["ip", "addr", "add", addr, "dev", BRIDGE])
    run(["ip", "link", "set", BRIDGE, "up"])
    ensure_forward_drop()


def ensure_forward_drop() -> None:
    """An nftables table that drops forwarded traffic to or from the lab bridge."""
    ruleset = (
        f"table inet {NFT_TABLE} {{\n"
        "  chain forward {\n"
        "    type filter hook forward priority -10; policy accept;\n"
        f'    iifname "{BRIDGE}" drop\n'
        f'    oifname "{BRIDGE}" drop\n'
        "  }\n"
        "}\n"
    )
    run(["nft", "-f", "-"], input=f"table inet {NFT_TABLE}\ndelete table inet {NFT_TABLE}\n{ruleset}")


def remove_bridge() -> None:
    """Remove the bridge and the nftables table (idempotent)."""
    if link_exists(BRIDGE):
        run(["ip", "link", "del", BRIDGE])
    run(["nft", "delete", "table", "inet", NFT_TABLE], check=False)


def create_host_net(host: str, veth: str, address: str, subnet: ipaddress.IPv4Network) -> None:
    """Namespace + veth pair (host end on the bridge, isolated; eth0 inside with ``address``)."""
    ns = netns_name(host)
    gateway = str(bridge_address(subnet))
    if not netns_path(host).exists():
        run(["ip", "netns", "add", ns])
    if not link_exists(veth):
        peer = f"{veth}c"
        run(["ip", "link", "add", veth, "type", "veth", "peer", "name", peer, "netns", ns])
        run(["ip", "-n", ns, "link", "set", peer, "name", "eth0"])
    run(["ip", "link", "set", veth, "master", BRIDGE])
    run(["bridge", "link", "set", "dev", veth, "isolated", "on"])
    run(["ip", "link", "set", veth, "up"])
    run(["ip", "-n", ns, "addr", "replace", f"{address}/{subnet.prefixlen}", "dev", "eth0"])
    run(["ip", "-n", ns, "link", "set", "lo", "up"])
    run(["ip", "-n", ns, "link", "set", "eth0", "up"])
    run(["ip", "-n", ns, "route", "replace", "default", "via", gateway])
    forget_neighbor(address)


def forget_neighbor(address: str) -> None:
    """Drop the bridge's ARP entry for ``address``: a re-used address has a new MAC behind it,
    and a stale entry would black-hole the first seconds of traffic to the new host."""
    if link_exists(BRIDGE):
        run(["ip", "neigh", "flush", "to", address, "dev", BRIDGE], check=False)


def remove_host_net(host: str, veth: str, address: str | None = None) -> None:
    """Delete the namespace (which takes the veth pair with it), any stray host end, its ARP entry."""
    if netns_path(host).exists():
        run(["ip", "netns", "del", netns_name(host)])
    if veth and link_exists(veth):
        run(["ip", "link", "del", veth], check=False)
    if address:
        forget_neighbor(address)
