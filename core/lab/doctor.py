"""`lab doctor`: everything the lab needs from this machine, and what to do about what is missing."""

from __future__ import annotations

import shutil
from pathlib import Path

from schoolctl.errors import LabError
from schoolctl.lab import image, prereqs
from schoolctl.lab.config import BRIDGE, state_dir_from_env, subnet_from_env


def run_doctor() -> tuple[bool, str]:
    """Return (all good, a human report)."""
    lines: list[str] = []
    ok = True
    results = prereqs.checks(services=True)
    for c in results:
        mark = "ok     " if c.ok else "MISSING"
        extra = f" (package {c.package})" if c.package and not c.ok else ""
        extra += f" ({c.detail})" if c.detail and not c.ok else ""
        lines.append(f"{mark} {c.what}{extra}")
        ok &= c.ok
    pkgs = prereqs.missing_packages(results)
    try:
        subnet = subnet_from_env()
        lines.append(f"ok      lab subnet {subnet} (set SCHOOLCTL_LAB_SUBNET to change)")
        if results[0].ok and prereqs.which("ip"):
            from schoolctl.lab.network import check_subnet, link_exists

            if not link_exists(BRIDGE):
                check_subnet(subnet)
    except LabError as exc:
        lines.append(f"PROBLEM {exc}")
        ok = False
    state = state_dir_from_env()
    probe = state
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    base = image.image_dir(state / "images")
    have_image = image.is_complete(base)
    need = 0 if have_image else prereqs.MIN_FREE_BYTES
    disk_ok = free >= need + (256 << 20)
    lines.append(f"{'ok     ' if disk_ok else 'PROBLEM'} {free >> 20} MiB free for {state}")
    ok &= disk_ok
    from schoolctl.lab.hosts import KERNEL_MINIMUMS

    for key, minimum in KERNEL_MINIMUMS.items():
        try:
            value = int((Path("/proc/sys") / key).read_text())
        except (OSError, ValueError):
            continue
        if value < minimum:
            lines.append(f"info    {key.replace('/', '.')}={value}: `lab up` raises it to {minimum} (many hosts)")
    lines.append(f"info    base image {base}: {'built' if have_image else 'not built yet (about 1-2 min)'}")
    if pkgs:
        lines.append(f"\ninstall the missing packages with:\n  {prereqs.apt_line(pkgs)}")
    lines.append("\nall good" if ok else "\nthe lab cannot run here yet")
    return ok, "\n".join(lines)
