"""Benchmark the lab: base image build (cold), boot of one host and of ten, memory per idle host.

Run as root: ``python bench/lab.py [--skip-cold] [--hosts 10] [--json]``. Uses the lab's state
dir for the warm runs (the base image stays cached there), host names ``bench-N`` only, and
removes everything it made, also when interrupted.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from schoolctl.errors import LabError
from schoolctl.lab import Lab, image


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            tree.setdefault(ppid, []).append(int(p.name))
    return tree


def pss_kib(root_pid: int) -> int:
    """Proportional set size (KiB) of ``root_pid`` and all its descendants."""
    tree, total, todo = _children(), 0, [root_pid]
    while todo:
        pid = todo.pop()
        todo.extend(tree.get(pid, []))
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
                    break
        except OSError:
            continue
    return total


def mem_available_kib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1])
    return 0


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    start = time.monotonic()
    out = fn(*args, **kwargs)
    return time.monotonic() - start, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-cold", action="store_true", help="skip the cold base image build")
    ap.add_argument("--hosts", type=int, default=10, help="hosts to boot at once (default 10)")
    ap.add_argument("--settle", type=float, default=5.0, help="seconds to let hosts go idle before measuring")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args()

    lab = Lab()
    names = [f"bench-{i}" for i in range(1, args.hosts + 1)]
    res: dict[str, float] = {}
    tmp = Path(tempfile.mkdtemp(prefix="schoolctl-lab-bench-", dir="/var/tmp"))
    try:
        if not args.skip_cold:
            res["image_cold_s"] = image.build(tmp / "cold" / "base", http_proxy=None)
            shutil.rmtree(tmp / "cold", ignore_errors=True)
        # the lab's own base image (built through apt-cacher-ng the first time, else cached)
        res["image_lab_cached_s"], _ = timed(lab.ensure_image)
        svc = lab.services(acme=False)
        res["image_rebuild_warm_cache_s"] = image.build(tmp / "warm" / "base", http_proxy=svc.apt_proxy_url)
        shutil.rmtree(tmp / "warm", ignore_errors=True)

        lab.down(names)
        before = mem_available_kib()
        res["boot_one_s"], hosts = timed(lab.up, names[:1])
        time.sleep(args.settle)
        res["idle_pss_one_mib"] = pss_kib(hosts[0].pid) / 1024
        res["mem_delta_one_mib"] = (before - mem_available_kib()) / 1024
        res["down_one_s"], _ = timed(lab.down, names[:1])

        before = mem_available_kib()
        res[f"boot_{args.hosts}_s"], hosts = timed(lab.up, names, timeout=300)
        time.sleep(args.settle)
        pss = [pss_kib(h.pid) / 1024 for h in hosts if h.pid]
        res["idle_pss_per_host_mib"] = sum(pss) / len(pss)
        res["mem_delta_per_host_mib"] = (before - mem_available_kib()) / 1024 / len(hosts)
        res[f"down_{args.hosts}_s"], _ = timed(lab.down, names)

        res[f"ratio_boot_{args.hosts}_vs_one"] = res[f"boot_{args.hosts}_s"] / res["boot_one_s"]
        res[f"ratio_boot_{args.hosts}_per_host_vs_one"] = res[f"boot_{args.hosts}_s"] / args.hosts / res["boot_one_s"]
        if "image_cold_s" in res:
            res["ratio_image_cold_vs_boot_one"] = res["image_cold_s"] / res["boot_one_s"]
            res["ratio_image_cold_vs_warm_cache"] = res["image_cold_s"] / res["image_rebuild_warm_cache_s"]
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        lab.down(names)
        shutil.rmtree(tmp, ignore_errors=True)

    if args.json:
        print(json.dumps({k: round(v, 3) for k, v in res.items()}, indent=1))
    else:
        for key, value in res.items():
            print(f"{key:40} {value:10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
