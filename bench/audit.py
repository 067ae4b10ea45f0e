"""How fast is `schoolctl audit`? Figures and ratios against the floor: one SSH command per school
running the same evidence script.

    .venv/bin/python bench/audit.py [--hosts 10] [--setup] [--runs 5] [--down]

--setup boots lab hosts a-b1..a-bN and deploys the base+firewall layers on them (a few minutes);
the full-stack figure uses lab host a-1 with school a-audit (deployed by tests/lab/test_audit_host.py
with SCHOOLCTL_KEEP_LAB=1, or by --setup-full). Prints medians."""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]

DEPLOY = """
import sys
from gevent import monkey
monkey.patch_all()
import os
os.environ["SCHOOLCTL_LAYERS"] = sys.argv[2]
from pathlib import Path
from cli.config.loader import load
from cli.runner import run
bad = [r for r in run(load(Path(sys.argv[1])).select(sys.argv[3:]), plan=False, progress=lambda s, w: None)
       if r.status == "failed"]
print(*(f"{r.school}: {r.error}" for r in bad), sep="\\n")
sys.exit(1 if bad else 0)
"""


def schools_dir(base: Path, n: int) -> Path:
    d = base / "schools"
    d.mkdir(parents=True, exist_ok=True)
    fleet = yaml.safe_load((ROOT / "schools" / "fleet.yaml").read_text())
    fleet.update(dns=[], ntp=[])
    (d / "fleet.yaml").write_text(yaml.safe_dump(fleet))
    contacts = {"dpo": {"name": "DPD", "email": "dpd@bcn.example"}}
    (d / "a-audit.yaml").write_text(yaml.safe_dump({
        "id": "a-audit", "name": "Escola Auditada", "district": "Lab", "server": "lab:a-1",
        "services": {"moodle": {}}, "contacts": contacts, "privacy": {"log_retention_days": 7}}))
    for i in range(1, n + 1):
        (d / f"a-bench{i}.yaml").write_text(yaml.safe_dump({
            "id": f"a-bench{i}", "name": f"Bench {i}", "district": "Lab", "server": f"lab:a-b{i}",
            "services": {}, "contacts": contacts, "privacy": {"log_retention_days": 7}}))
    return d


def median(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.monotonic()
        fn()
        times.append(time.monotonic() - t)
    return statistics.median(times)


def script_floor(schools, expects) -> None:
    """The same evidence as ONE plain ssh command per school (all schools at once)."""
    from schoolctl.audit.catalogue import CachedHost, prefetch_commands
    from schoolctl.audit.runner import connect

    def one(pair):
        school, expect = pair
        CachedHost(connect(school)).prefetch(prefetch_commands(school, expect))

    with ThreadPoolExecutor(len(schools)) as ex:
        list(ex.map(one, zip(schools, expects, strict=True)))


def audit_many(schools, expects) -> list:
    from schoolctl.audit.runner import audit_school

    with ThreadPoolExecutor(len(schools)) as ex:
        return list(ex.map(lambda p: audit_school(p[0], expect=p[1]), zip(schools, expects, strict=True)))


def uncached(school, expect, ssh_config: str | None) -> None:
    """Every control's commands as separate ssh commands (plain testinfra style)."""
    import testinfra

    from schoolctl.audit.catalogue import Context, load_all, run_control

    if ssh_config:
        host = testinfra.get_host(f"ssh://{school.server.lab_name}", ssh_config=ssh_config)
    else:  # a new ssh connection per command (no ControlMaster): testinfra's ssh:// without a ControlPath
        from schoolctl.lab import Lab

        lab = Lab()
        addr = lab.host(school.server.lab_name).address
        host = testinfra.get_host(f"ssh://root@{addr}", ssh_identity_file=str(lab.paths.ssh_key), controlpersist=0,
                                  ssh_extra_args=f"-o UserKnownHostsFile={lab.paths.known_hosts} -o BatchMode=yes")
    ctx = Context(host, school, expect)
    for c in load_all().values():
        run_control(c, ctx)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hosts", type=int, default=10)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--setup", action="store_true", help="boot a-b1..a-bN and deploy base+firewall")
    ap.add_argument("--setup-full", action="store_true", help="also deploy base+firewall+database+web on a-1")
    ap.add_argument("--down", action="store_true", help="remove the bench hosts a-b1..a-bN at the end")
    args = ap.parse_args()

    from schoolctl.audit.runner import expectations
    from schoolctl.config.loader import load
    from schoolctl.lab import Lab

    base = Path(tempfile.mkdtemp(prefix="schoolctl-bench-audit-"))
    sdir = schools_dir(base, args.hosts)
    env = dict(os.environ, SCHOOLCTL_VAULT_KEY_FILE=str(base / "vault.key"), SCHOOLCTL_SECRETS_DIR=str(base / "s"))
    os.environ.update({k: env[k] for k in ("SCHOOLCTL_VAULT_KEY_FILE", "SCHOOLCTL_SECRETS_DIR")})
    subprocess.run([sys.executable, "-m", "schoolctl.cli", "secrets", "init"], env=env, cwd=ROOT, check=True,
                   capture_output=True)
    lab = Lab()
    bench_hosts = [f"a-b{i}" for i in range(1, args.hosts + 1)]
    if args.setup or args.setup_full:
        t = time.monotonic()
        lab.up(bench_hosts + (["a-1"] if args.setup_full else []), timeout=300)
        ids = [f"a-bench{i}" for i in range(1, args.hosts + 1)]
        subprocess.run([sys.executable, "-c", DEPLOY, str(sdir), "base,firewall", *ids], env=env, cwd=ROOT,
                       check=True, timeout=3600)
        if args.setup_full:
            subprocess.run([sys.executable, "-c", DEPLOY, str(sdir), "base,firewall,database,web", "a-audit"],
                           env=env, cwd=ROOT, check=True, timeout=3600)
        print(f"setup: {time.monotonic() - t:.0f} s")
    config = load(sdir)
    print(f"controls: {len(__import__('audit.catalogue', fromlist=['load_all']).load_all())}")

    rows = []
    running = {h.name for h in lab.status() if h.state == "running"}
    if "a-1" in running:
        full = config.select(["a-audit"])[0]
        fexp = replace(expectations(full), pages=(full.domain,))
        first = audit_many([full], [fexp])[0]
        a = median(lambda: audit_many([full], [fexp]), args.runs)
        s = median(lambda: script_floor([full], [fexp]), args.runs)
        u = median(lambda: uncached(full, fexp, str(lab.ssh_config_path)), max(1, args.runs // 2))
        n = median(lambda: uncached(full, fexp, None), 1)
        print(f"\nfull stack (a-1, base+firewall+database+web), {first.prefetched} prefetched commands, "
              f"{first.extra_commands} extra; status {first.status}")
        rows += [("1 school, full stack: schoolctl audit", a, s),
                 ("1 school, full stack: controls without prefetch, ControlMaster", u, s),
                 ("1 school, full stack: controls without prefetch, new ssh per command", n, s)]
    for n_schools in (1, 3, 10):
        if n_schools > args.hosts:
            continue
        hosts = bench_hosts[:n_schools]
        if not set(hosts) <= running:
            print(f"skip {n_schools} schools: hosts {', '.join(sorted(set(hosts) - running))} not running "
                  "(use --setup)")
            continue
        schools = config.select([f"a-bench{i}" for i in range(1, n_schools + 1)])
        expects = [expectations(s) for s in schools]
        audit_many(schools, expects)  # warm the ssh masters
        a = median(lambda s=schools, e=expects: audit_many(s, e), args.runs)
        s = median(lambda s=schools, e=expects: script_floor(s, e), args.runs)
        rows.append((f"{n_schools} school(s) in parallel, base+firewall: schoolctl audit", a, s))
    print(f"\n{'case':75} {'time':>8} {'floor':>8} {'ratio':>6}")
    for name, a, s in rows:
        print(f"{name:75} {a:7.2f}s {s:7.2f}s {a / s:5.1f}x")
    if args.down:
        lab.down(bench_hosts)


if __name__ == "__main__":
    main()
