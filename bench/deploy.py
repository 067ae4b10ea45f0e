"""Deploy benchmark on lab hosts: first deploy, no-op re-deploy, no-op of 1, 3 and 10 schools at
once, against the floor (one SSH command running the same checks) and against the same state
written the plain pyinfra way (one operation per item). Prints figures and ratios.

    .venv/bin/python bench/deploy.py [--hosts 10] [--keep]

Lab hosts t-fleet-d1..t-fleet-dN, removed at the end (unless --keep). The no-op figure is also
taken with the runner as it was before its speed-ups (`before_speedups`), in the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("GEVENT_RESOLVER", "block")  # as the CLI does: no thread-pool resolver noise

from gevent import monkey

monkey.patch_all()

import yaml  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

from schoolctl.cli.runner import run  # noqa: E402
from schoolctl.config.loader import load  # noqa: E402
from schoolctl.deploy import ops  # noqa: E402
from schoolctl.deploy.school import school_rounds  # noqa: E402
from schoolctl.deploy.sites import build_site  # noqa: E402
from schoolctl.lab import Lab  # noqa: E402
from schoolctl.secrets import SecretStore  # noqa: E402


def timed(fn, repeat: int = 1) -> float:
    times = []
    for _ in range(repeat):
        t = time.monotonic()
        fn()
        times.append(time.monotonic() - t)
    return statistics.median(times)


def make_fleet(tmp: Path, names: list[str]) -> Path:
    schools = tmp / "schools"
    schools.mkdir()
    fleet = yaml.safe_load((ROOT / "schools" / "fleet.yaml").read_text())
    fleet.update(dns=[], ntp=[])  # names in the allow-list must resolve; none do on a build machine
    (schools / "fleet.yaml").write_text(yaml.safe_dump(fleet))
    for n in names:
        (schools / f"{n}.yaml").write_text(yaml.safe_dump({
            "id": n, "name": n, "district": "Bench", "server": f"lab:{n}", "services": {},
            "contacts": {"dpo": {"name": "DPO", "email": "dpo@example.org"}}}))
    return schools


def deploy(schools, store, parallel: int = 20) -> list:
    results = run(schools, plan=False, store=store, parallel=parallel)
    failed = [r for r in results if r.status == "failed"]
    if failed:
        raise SystemExit(f"deploy failed: {failed[0].school}: {failed[0].error}")
    return results


@contextlib.contextmanager
def before_speedups() -> Iterator[None]:
    """The runner as it was before the no-op speed-ups, for a before/after figure from one run: Nagle
    left on (no TCP_NODELAY), the upgrade guards in a command of their own and every operation's
    fact read live (one command per operation, nothing read ahead)."""
    from pyinfra.facts.server import Command

    from schoolctl.cli import runner
    from schoolctl.deploy.upgrade import is_guard

    def guards_only(host, rounds) -> list[str]:  # cli/runner.py's _refusals, as it was
        guards = [s for r in rounds for s in r.pre_steps if is_guard(s)]
        if not guards:
            return []
        script = "\n".join(f"( {ops.guarded(g)} ) 2>&1 </dev/null" for g in guards)
        found = host.get_fact(Command, command=f"{script}\ntrue")
        return [line for line in (found or "").splitlines() if line.strip()]

    saved = runner.no_delay, runner._read_ahead
    runner.no_delay, runner._read_ahead = (lambda host: None), guards_only
    try:
        yield
    finally:
        runner.no_delay, runner._read_ahead = saved


def floor_script(school, store) -> str:
    """One shell script running exactly the checks the coarse operations run."""
    rounds = school_rounds(build_site(school, store, readonly=True))
    parts = []
    for r in rounds:
        files = [*r.pre_files, *r.files]
        paths = tuple(dict.fromkeys([d.path for d in r.directories] + [f.path for f in files]))
        parts.append(ops.PathStates().command(paths=paths))
        if r.packages:
            parts.append(ops.PackageStates().command(packages=tuple(r.packages)))
        if r.services:
            parts.append(ops.UnitStates().command(units=tuple(ops.unit_name(s.name) for s in r.services)))
        checks = tuple(s.check for s in [*r.pre_steps, *r.steps])
        if checks:
            parts.append(ops.StepChecks().command(checks=checks))
    return "\n".join(parts)


@contextlib.contextmanager
def without_server_record() -> Iterator[None]:
    """The runner without the run record it leaves on the server (its one extra command)."""
    from schoolctl.cli import runner

    saved = runner._record
    runner._record = lambda *args: None
    try:
        yield
    finally:
        runner._record = saved


def per_item_noop(school, store, lab: Lab) -> float:
    """The same state as plain pyinfra operations, one per item (files.put, apt, systemd, guards)."""
    import io

    from pyinfra.api import Config, Inventory, State
    from pyinfra.api import deploy as pyinfra_deploy
    from pyinfra.api.connect import connect_all, disconnect_all
    from pyinfra.api.deploy import add_deploy
    from pyinfra.api.operations import run_ops
    from pyinfra.operations import apt, files, server, systemd

    from schoolctl.connect import pyinfra_data

    rounds = school_rounds(build_site(school, store, readonly=True))

    @pyinfra_deploy("per item")
    def per_item() -> None:
        for r in rounds:
            for d in r.directories:
                files.directory(path=d.path, mode=d.mode, user=d.owner, group=d.group)
            for f in [*r.pre_files, *r.files]:
                if not f.absent:
                    files.put(src=io.BytesIO(f.data), dest=f.path, mode=f.mode, user=f.owner, group=f.group)
            if r.packages:
                apt.packages(packages=r.packages)
            for s in r.services:
                systemd.service(service=ops.unit_name(s.name), running=s.running, enabled=s.running)
            for s in [*r.pre_steps, *r.steps]:
                server.shell(commands=[f"( {s.check} ) >/dev/null 2>&1 || true"])

    def once() -> None:
        inv = Inventory(([(school.id, pyinfra_data(school.server))], {}))
        state = State(inventory=inv, config=Config(), check_for_changes=False)
        connect_all(state)
        add_deploy(state, per_item)
        run_ops(state)
        disconnect_all(state)

    once()
    return timed(once, 3)


def interleaved(cases: dict[str, Any], repeat: int) -> dict[str, float]:
    """Median seconds of each case, run in turns (so that a change in the machine's load falls on
    every case alike); a case is (function, context manager factory)."""
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(repeat):
        for name, (fn, ctx) in cases.items():
            with ctx():
                t = time.monotonic()
                fn()
                times[name].append(time.monotonic() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hosts", type=int, default=10)
    ap.add_argument("--layers", default=None, help="SCHOOLCTL_LAYERS for every deploy (default: all of them)")
    ap.add_argument("--keep", action="store_true", help="leave the bench hosts up")
    args = ap.parse_args()
    if args.layers:
        os.environ["SCHOOLCTL_LAYERS"] = args.layers
    names = [f"t-fleet-d{i}" for i in range(1, args.hosts + 1)]  # lab names of its own (t-fleet-: bench/fleet.py)
    lab = Lab()
    tmp = Path(tempfile.mkdtemp(prefix="schoolctl-bench-"))
    os.environ.update(SCHOOLCTL_VAULT_KEY_FILE=str(tmp / "vault.key"), SCHOOLCTL_SECRETS_DIR=str(tmp / "secrets"))
    store = SecretStore()
    store.init_key()
    try:
        t = time.monotonic()
        lab.up(names)
        print(f"boot {len(names)} lab hosts: {time.monotonic() - t:.1f} s", flush=True)
        config = load(make_fleet(tmp, names))
        schools = [config.schools[n] for n in names]
        first = timed(lambda: deploy(schools[:1], store))
        rounds = school_rounds(build_site(schools[0], store, True))
        items = sum(len(r.files) + len(r.pre_files) + len(r.directories) + len(r.packages) + len(r.services)
                    + len(r.steps) + len(r.pre_steps) for r in rounds)
        print(f"layers:                             {os.environ.get('SCHOOLCTL_LAYERS') or 'all'}")
        print(f"managed items per school:           {items}")
        print(f"first deploy, one school:           {first:6.2f} s", flush=True)
        script = floor_script(schools[0], store)
        one = lambda: deploy(schools[:1], store)  # noqa: E731
        floor_run = lambda: lab.run(names[0], script, check=True)  # noqa: E731
        fresh = ["ssh", "-F", str(lab.ssh_config_path), "-o", "ControlMaster=no", "-o", "ControlPath=none", names[0]]
        floor_fresh = lambda: subprocess.run([*fresh, script], check=True, capture_output=True)  # noqa: E731
        render = lambda: school_rounds(build_site(schools[0], store, True))  # noqa: E731
        got = interleaved({"now": (one, contextlib.nullcontext), "before": (one, before_speedups),
                           "unrecorded": (one, without_server_record),
                           "floor": (floor_run, contextlib.nullcontext),
                           "floor_fresh": (floor_fresh, contextlib.nullcontext),
                           "render": (render, contextlib.nullcontext)}, 7)
        noop1, floor, floor_new = got["now"], got["floor"], got["floor_fresh"]
        print(f"no-op deploy, one school:           {noop1:6.2f} s   of which rendering (lab set-up, layers) "
              f"{got['render']:.2f} s")
        print(f"floor (one SSH script, same checks):{floor:6.2f} s   schoolctl/floor = {noop1 / floor:.1f}x "
              "(the lab's ssh_config: an open ControlMaster connection, no SSH handshake)")
        print(f"floor, on a new SSH connection:     {floor_new:6.2f} s   schoolctl/floor = {noop1 / floor_new:.1f}x "
              "(a deploy always opens its own connection)")
        print(f"no-op one school, before speed-ups: {got['before']:6.2f} s   before/floor = "
              f"{got['before'] / floor:.1f}x (Nagle on, one command per fact)")
        print(f"no-op one school, no server record: {got['unrecorded']:6.2f} s   the record's command costs "
              f"{1000 * (noop1 - got['unrecorded']):+.0f} ms", flush=True)
        plain = per_item_noop(schools[0], store, lab)
        print(f"plain pyinfra, one op per item:     {plain:6.2f} s   plain/schoolctl = {plain / noop1:.1f}x",
              flush=True)
        deploy(schools, store)  # bring every bench school up to date
        noop3 = timed(lambda: deploy(schools[:3], store), 3)
        print(f"no-op deploy, 3 schools at once:    {noop3:6.2f} s   ({noop3 / noop1:.2f}x one school)")
        noop_all = timed(lambda: deploy(schools, store), 3)
        print(f"no-op deploy, {len(schools):2d} schools at once:   {noop_all:6.2f} s   "
              f"({noop_all / noop1:.2f}x one school, {noop_all / len(schools):.2f} s per school)")
    finally:
        if not args.keep:
            lab.down(names)
        shutil.rmtree(tmp, ignore_errors=True)
        subprocess.run(["true"])


if __name__ == "__main__":
    main()
