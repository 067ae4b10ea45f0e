"""The fleet at scale: N lab hosts (default 30, t-fleet-01..) with the base layers only
(SCHOOLCTL_LAYERS, default base,firewall), then: the first deploy of all at once, the no-op deploy
of all at once against one school, the audit of all at once against one school, the controller's
CPU seconds per school, its peak memory, and where its CPU goes in a no-op fleet deploy (cProfile,
grouped by library). Every host is removed at the end, also on Ctrl-C or a failure.

    .venv/bin/python bench/fleet.py [--hosts 30] [--layers base,firewall] [--runs 3] [--keep]

An idle lab host costs ~16 MiB. The issue's aim: a 300-school no-op run within 60 s on 2 cores,
i.e. about 0.2 s of controller CPU per school (the estimate line says where this run stands).
"""

from __future__ import annotations

import argparse
import cProfile
import importlib.util
import os
import pstats
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _bench_deploy() -> Any:
    """bench/deploy.py as a module (its helpers: make_fleet, deploy; it patches gevent first)."""
    spec = importlib.util.spec_from_file_location("schoolctl_bench_deploy", HERE / "deploy.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cpu() -> float:
    """CPU seconds of this process (every greenlet and thread) and of its waited-for children."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def measure(fn: Callable[[], Any], runs: int = 1) -> tuple[float, float]:
    """(median wall seconds, median controller CPU seconds) of `fn`."""
    walls, cpus = [], []
    for _ in range(runs):
        c, t = cpu(), time.monotonic()
        fn()
        walls.append(time.monotonic() - t)
        cpus.append(cpu() - c)
    return statistics.median(walls), statistics.median(cpus)


_GROUPS = (("schoolctl", ("/core/", "/deploy/", "/cli/", "/audit/", "/inventories/", "/bench/")),
           ("pyinfra", ("/pyinfra/",)), ("paramiko", ("/paramiko/",)), ("gevent", ("/gevent/",)),
           ("cryptography", ("/cryptography/", "/nacl/", "/bcrypt/")), ("jinja2", ("/jinja2/", "/markupsafe/")),
           ("pydantic", ("/pydantic",)), ("yaml", ("/yaml/",)), ("testinfra", ("/testinfra/",)))


def profile_summary(stats: pstats.Stats, top: int = 12) -> list[str]:
    """Own CPU time by library, then the costliest functions."""
    by_group: dict[str, float] = defaultdict(float)
    rows = []
    total = 0.0
    for (filename, line, func), (_cc, _nc, tt, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        group = next((g for g, marks in _GROUPS if any(m in filename for m in marks)),
                     "python (stdlib, builtins)")
        by_group[group] += tt
        total += tt
        rows.append((tt, f"{Path(filename).name}:{line}({func})"))
    lines = [f"  {g:28} {t:6.2f} s  {100 * t / total:5.1f} %" for g, t in
             sorted(by_group.items(), key=lambda kv: -kv[1]) if t >= 0.005]
    lines.append("  costliest functions (own time):")
    lines += [f"    {t:6.3f} s  {name}" for t, name in sorted(rows, reverse=True)[:top]]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hosts", type=int, default=30)
    ap.add_argument("--layers", default="base,firewall", help="SCHOOLCTL_LAYERS for the deploys")
    ap.add_argument("--runs", type=int, default=3, help="runs per no-op / audit figure (the median)")
    ap.add_argument("--keep", action="store_true", help="leave the hosts up (remove them with `lab down`)")
    args = ap.parse_args()
    os.environ["SCHOOLCTL_LAYERS"] = args.layers
    bd = _bench_deploy()  # patches gevent before anything else imports the network

    from schoolctl.audit.runner import audit_all, audit_school
    from schoolctl.config.loader import load
    from schoolctl.lab import Lab
    from schoolctl.secrets import SecretStore

    names = [f"t-fleet-{i:02d}" for i in range(1, args.hosts + 1)]
    lab = Lab()
    tmp = Path(tempfile.mkdtemp(prefix="schoolctl-bench-fleet-"))
    os.environ.update(SCHOOLCTL_VAULT_KEY_FILE=str(tmp / "vault.key"), SCHOOLCTL_SECRETS_DIR=str(tmp / "secrets"))
    store = SecretStore()
    store.init_key()
    n = len(names)
    try:
        t = time.monotonic()
        lab.up(names, timeout=600)
        boot = time.monotonic() - t
        print(f"boot {n} lab hosts ({args.layers}): {boot:.1f} s", flush=True)
        config = load(bd.make_fleet(tmp, names))
        schools = [config.schools[x] for x in names]
        first, first_cpu = measure(lambda: bd.deploy(schools, store, parallel=n))
        print(f"first deploy, {n} at once: {first:.1f} s, controller CPU {first_cpu:.1f} s", flush=True)
        one, one_cpu = measure(lambda: bd.deploy(schools[:1], store), args.runs)
        results: list = []
        fleet, fleet_cpu = measure(lambda: results.__setitem__(slice(None), bd.deploy(schools, store, parallel=n)),
                                   args.runs)
        changed = [r.school for r in results if r.status != "unchanged"]
        profiler = cProfile.Profile(time.process_time)  # CPU time: waiting on a socket costs nothing
        profiler.enable()
        bd.deploy(schools, store, parallel=n)
        profiler.disable()
        audit_one, audit_one_cpu = measure(lambda: audit_school(schools[0]), args.runs)
        audits: list = []
        audit_n, audit_cpu = measure(lambda: audits.__setitem__(slice(None), audit_all(schools, parallel=n)),
                                     args.runs)
        unaudited = [a.school for a in audits if a.error]
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        kids_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        per_school = fleet_cpu / n
        print(f"\nfleet of {n} lab hosts, layers {args.layers}, {os.cpu_count()} cores")
        print(f"boot:                              {boot:7.1f} s")
        print(f"first deploy, all at once:         {first:7.1f} s   controller CPU {first_cpu:6.1f} s "
              f"({first_cpu / n:.2f} s per school)")
        print(f"no-op deploy, one school:          {one:7.2f} s   controller CPU {one_cpu:6.2f} s")
        print(f"no-op deploy, all at once:         {fleet:7.2f} s   controller CPU {fleet_cpu:6.2f} s "
              f"({per_school:.3f} s per school; {fleet / one:.1f}x one school)"
              + (f"; NOT unchanged: {', '.join(changed)}" if changed else ""))
        print(f"audit, one school:                 {audit_one:7.2f} s   controller CPU {audit_one_cpu:6.2f} s")
        print(f"audit, all at once:                {audit_n:7.2f} s   controller CPU {audit_cpu:6.2f} s "
              f"({audit_cpu / n:.3f} s per school; {audit_n / audit_one:.1f}x one school)"
              + (f"; not audited: {', '.join(unaudited)}" if unaudited else ""))
        print(f"peak RSS: controller {rss:.0f} MiB, largest child {kids_rss:.0f} MiB "
              "(the audit's ssh masters run detached: their CPU is not counted)")
        cores = os.cpu_count() or 1
        print(f"300-school no-op estimate:         {300 * per_school / cores:7.1f} s of CPU-bound time on {cores} "
              f"cores (aim: 60 s, i.e. 0.2 s per school)")
        print("where the controller's CPU goes in a no-op fleet deploy (cProfile on CPU time, own time):")
        print("\n".join(profile_summary(pstats.Stats(profiler))))
    finally:
        if not args.keep:
            t = time.monotonic()
            try:
                lab.down(names)
            except KeyboardInterrupt:  # a second Ctrl-C: say what is left
                print(f"interrupted; remove the hosts with `schoolctl lab down {' '.join(names)}`", file=sys.stderr)
                raise
            print(f"removed {n} lab hosts in {time.monotonic() - t:.1f} s")
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
