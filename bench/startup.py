"""Start-up cost of the CLI: CPU seconds (user + system, of the child and its children) of
`schoolctl --help`, `schoolctl validate demo` and `schoolctl list` on the shipped schools/,
each the median of 5 runs, measured with resource.getrusage(RUSAGE_CHILDREN) around each run.

    .venv/bin/python bench/startup.py [--runs N] [--budget SECONDS] [--cold] [--instructions]
                                      [--no-result-cache]

By default Python's bytecode is cached as for an installed schoolctl (pip compiles it at install;
a checkout writes __pycache__ on its first run): in a private folder (PYTHONPYCACHEPREFIX), filled
by one uncounted run of each command, so the checkout is left as it is. `--cold` compiles every
module on every run instead (PYTHONDONTWRITEBYTECODE=1, as some CI sandboxes set it).

`validate` and `list` keep their results in the result cache (schoolctl.config.result_cache), here
a private temporary folder (SCHOOLCTL_CACHE_DIR), never the user's: the uncounted first run records
them, so the runs counted after it are cache hits, as a repeated `validate` is. Each is measured
again uncached (SCHOOLCTL_CACHE_DIR=off: a validation from scratch, as after any edit);
`--no-result-cache` measures only that.

CPU seconds swing by half on a busy machine (other processes share the cores and their caches).
`--instructions` counts instead the instructions one run executes, under valgrind (callgrind;
about 15 s a command): the same figure however busy the machine is, to compare two versions by
(on the 2-core build machine, quiet, about 3.3e9 of them take a second of CPU).

Exits 1 when a median is over the budget (default 0.3 s): the figures of the cache hits (and of
`--help`), or with `--no-result-cache` the uncached ones.
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


def environment(cold: bool, cache: str, results: str) -> dict[str, str]:
    """The children's environment: the shipped schools, bytecode cached in `cache` unless `cold`,
    the result cache in `results` (`off`: none)."""
    env = {**os.environ, "SCHOOLCTL_SCHOOLS_DIR": str(REPO / "schools"), "COLUMNS": "120",
           "SCHOOLCTL_CACHE_DIR": results}
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


def valgrind(args: list[str]) -> list[str]:
    """The command line running `schoolctl ARGS` under valgrind (the interpreter named: a script's
    `#!` line is not followed)."""
    return ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", str(SCHOOLCTL.parent / "python"),
            str(SCHOOLCTL), *args]


def instructions(args: list[str], env: dict[str, str]) -> int:
    """The instructions one run of `schoolctl ARGS` executes (valgrind's callgrind; hash seed fixed)."""
    proc = subprocess.run(valgrind(args), env={**env, "PYTHONHASHSEED": "0"}, cwd=REPO, capture_output=True,
                          text=True, check=False)
    found = re.search(r"Collected : (\d+)", proc.stderr)
    if proc.returncode != 0 or found is None:
        raise SystemExit(f"valgrind schoolctl {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    return int(found.group(1))


def measure(name: str, args: list[str], env: dict[str, str], opts: argparse.Namespace, label: str) -> float | None:
    """Print the figure of `schoolctl ARGS` in `env`; return the median CPU seconds (None: instructions)."""
    if not opts.cold or env["SCHOOLCTL_CACHE_DIR"] != "off":
        cpu_seconds(args, env)  # fills the bytecode cache, and the result cache; not counted
    title = f"schoolctl {name:<14} {label:<10}"
    if opts.instructions:
        print(f"{title} {instructions(args, env) / 1e6:,.0f} million instructions")
        return None
    runs = [cpu_seconds(args, env) for _ in range(opts.runs)]
    median = statistics.median(runs)
    print(f"{title} CPU median {median:.3f} s over {opts.runs} runs (min {min(runs):.3f}, max {max(runs):.3f})")
    return median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--budget", type=float, default=0.3)
    parser.add_argument("--cold", action="store_true", help="Compile every module on every run (no bytecode cache).")
    parser.add_argument("--instructions", action="store_true",
                        help="Count the instructions of one run of each command (valgrind) instead of CPU seconds.")
    parser.add_argument("--no-result-cache", action="store_true",
                        help="Measure validate and list uncached only (SCHOOLCTL_CACHE_DIR=off).")
    opts = parser.parse_args()
    over = []
    cache = tempfile.TemporaryDirectory(prefix="schoolctl-bench-pycache-")
    results = tempfile.TemporaryDirectory(prefix="schoolctl-bench-results-")
    hits = environment(opts.cold, cache.name, results.name)
    uncached = environment(opts.cold, cache.name, "off")
    print(f"bytecode: {'none (compiled on every run)' if opts.cold else 'cached, as installed'}")
    for name, args in COMMANDS.items():
        figures = []  # (label, environment, held to the budget)
        if name == "--help":
            figures.append(("", uncached, True))
        else:
            if not opts.no_result_cache:
                figures.append(("cache hit", hits, True))
            figures.append(("uncached", uncached, opts.no_result_cache))
        for label, env, held in figures:
            median = measure(name, args, env, opts, label)
            if held and median is not None and median > opts.budget:
                over.append(f"{name} {label}".strip())
    cache.cleanup()
    results.cleanup()
    if over:
        print(f"over the {opts.budget} s budget: {', '.join(over)}", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
