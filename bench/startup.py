"""Start-up cost of the CLI: CPU seconds (user + system, of the child and its children) of
`schoolctl --help`, `schoolctl validate demo` and `schoolctl list` on the shipped schools/,
each the median of 5 runs, measured with resource.getrusage(RUSAGE_CHILDREN) around each run.

    .venv/bin/python bench/startup.py [--runs N] [--budget SECONDS]

Exits 1 when a median is over the budget (default 0.3 s).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCHOOLCTL = REPO / ".venv" / "bin" / "schoolctl"
COMMANDS = {"--help": ["--help"], "validate demo": ["validate", "demo"], "list": ["list"]}


def cpu_seconds(args: list[str]) -> float:
    """The CPU time one run of `schoolctl ARGS` took (it must exit 0)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    env = {**os.environ, "SCHOOLCTL_SCHOOLS_DIR": str(REPO / "schools"), "COLUMNS": "120"}
    proc = subprocess.run([str(SCHOOLCTL), *args], env=env, cwd=REPO, capture_output=True, text=True, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"schoolctl {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--budget", type=float, default=0.3)
    opts = parser.parse_args()
    over = []
    for name, args in COMMANDS.items():
        runs = [cpu_seconds(args) for _ in range(opts.runs)]
        median = statistics.median(runs)
        print(f"schoolctl {name:<14} CPU median {median:.3f} s over {opts.runs} runs "
              f"(min {min(runs):.3f}, max {max(runs):.3f})")
        if median > opts.budget:
            over.append(name)
    if over:
        print(f"over the {opts.budget} s budget: {', '.join(over)}", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
