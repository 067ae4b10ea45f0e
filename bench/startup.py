"""Start-up cost of the CLI: CPU seconds (user + system, of the child and its children) of
`schoolctl --help`, `schoolctl validate demo` and `schoolctl list` on the shipped schools/,
each the median of 5 runs, measured with resource.getrusage(RUSAGE_CHILDREN) around each run.

    .venv/bin/python bench/startup.py [--runs N] [--budget SECONDS] [--cold] [--instructions]

By default Python's bytecode is cached as for an installed schoolctl (pip compiles it at install;
a checkout writes __pycache__ on its first run): in a private folder (PYTHONPYCACHEPREFIX), filled
by one uncounted run of each command, so the checkout is left as it is. `--cold` compiles every
module on every run instead (PYTHONDONTWRITEBYTECODE=1, as some CI sandboxes set it).

CPU seconds swing by half on a busy machine (other processes share the cores and their caches).
`--instructions` counts instead the instructions one run executes, under valgrind (callgrind;
about 15 s a command): the same figure however busy the machine is, to compare two versions by
(on the 2-core build machine, quiet, about 3.3e9 of them take a second of CPU).

Exits 1 when a median is over the budget (default 0.3 s).
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCHOOLCTL = REPO / ".venv" / "bin" / "schoolctl"
COMMANDS = {"--help": ["--help"], "validate demo": ["validate", "demo"], "list": ["list"]}


def environment(cold: bool, cache: str) -> dict[str, str]:
    """The children's environment: the shipped schools, and bytecode cached in `cache` unless `cold`."""
    env = {**os.environ, "SCHOOLCTL_SCHOOLS_DIR": str(REPO / "schools"), "COLUMNS": "120"}
    if cold:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env.pop("PYTHONPYCACHEPREFIX", None)
    else:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = cache
    return env


def cpu_seconds(args: list[str], env: dict[str, str]) -> float:
    """The CPU time one run of `schoolctl ARGS` took (it must exit 0)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run([str(SCHOOLCTL), *args], env=env, cwd=REPO, capture_output=True, text=True, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"schoolctl {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def instructions(args: list[str], env: dict[str, str]) -> int:
    """The instructions one run of `schoolctl ARGS` executes (valgrind's callgrind; hash seed fixed)."""
    proc = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
                           str(SCHOOLCTL.parent / "python"), str(SCHOOLCTL), *args],
                          env={**env, "PYTHONHASHSEED": "0"}, cwd=REPO, capture_output=True, text=True, check=False)
    found = re.search(r"Collected : (\d+)", proc.stderr)
    if proc.returncode != 0 or found is None:
        raise SystemExit(f"valgrind schoolctl {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--budget", type=float, default=0.3)
    parser.add_argument("--cold", action="store_true", help="Compile every module on every run (no bytecode cache).")
    parser.add_argument("--instructions", action="store_true",
                        help="Count the instructions of one run of each command (valgrind) instead of CPU seconds.")
    opts = parser.parse_args()
    over = []
    cache = tempfile.TemporaryDirectory(prefix="schoolctl-bench-pycache-")
    env = environment(opts.cold, cache.name)
    print(f"bytecode: {'none (compiled on every run)' if opts.cold else 'cached, as installed'}")
    for name, args in COMMANDS.items():
        if not opts.cold:
            cpu_seconds(args, env)  # fills the bytecode cache; not counted
        if opts.instructions:
            print(f"schoolctl {name:<14} {instructions(args, env) / 1e6:,.0f} million instructions")
            continue
        runs = [cpu_seconds(args, env) for _ in range(opts.runs)]
        median = statistics.median(runs)
        print(f"schoolctl {name:<14} CPU median {median:.3f} s over {opts.runs} runs "
              f"(min {min(runs):.3f}, max {max(runs):.3f})")
        if median > opts.budget:
            over.append(name)
    cache.cleanup()
    if over:
        print(f"over the {opts.budget} s budget: {', '.join(over)}", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
