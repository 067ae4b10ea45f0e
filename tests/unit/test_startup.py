"""Start-up (issue #16): `--help`, `validate` and `list` import only what they use. The libraries
of the verbs that connect (pyinfra, gevent, paramiko, testinfra's backends, jinja2, requests,
ansible's vault) are imported lazily; each command runs in a fresh interpreter and its loaded
modules are checked. bench/startup.py measures the CPU cost."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from .conftest import REPO, SHIPPED

CONNECTING = ("pyinfra", "gevent", "paramiko", "jinja2", "requests", "ansible", "cryptography",
              "schoolctl.deploy", "schoolctl.cli.runner", "schoolctl.connect", "schoolctl.lab",
              "markdown_it", "rich.markdown")  # (rich's Markdown: the help is click's plain one)
# what each command may not load, besides CONNECTING: --help neither the model nor any YAML reader
NOT_LOADED = {
    ("--help",): ("pydantic", "ruamel", "yaml", "schoolctl.config.model", "schoolctl.config.loader",
                  "schoolctl.audit", "schoolctl.journal"),
    ("validate", "demo"): (),
    ("list",): ("testinfra", "schoolctl.audit"),
}
PROBE = """
import json, sys
sys.argv = ["schoolctl", *json.loads(sys.argv[1])]
from schoolctl.cli.main import main
try:
    main()
except SystemExit as e:
    code = e.code
else:
    code = 0
sys.stderr.write("\\nMODULES " + json.dumps({"code": code, "modules": sorted(sys.modules)}) + "\\n")
"""


def loaded(args: tuple[str, ...]) -> tuple[int, set[str]]:
    env = {**os.environ, "SCHOOLCTL_SCHOOLS_DIR": str(SHIPPED), "COLUMNS": "120"}
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps(list(args))], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=60, check=False)
    report = json.loads(proc.stderr.rsplit("MODULES ", 1)[1])
    return report["code"], set(report["modules"])


def _hits(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules for n in names if m == n or m.startswith(n + "."))


@pytest.mark.parametrize("args", list(NOT_LOADED), ids=" ".join)
def test_a_local_command_loads_nothing_it_does_not_use(args: tuple[str, ...]) -> None:
    code, modules = loaded(args)
    assert code in (0, None)
    assert not _hits(modules, CONNECTING + NOT_LOADED[args])


def test_the_audit_knows_the_release_folder_the_deploy_uses() -> None:
    """audit/releases.py spells /srv itself (deploy/artifacts.py would pull requests and jinja2 into
    `validate`); they must agree."""
    from schoolctl.audit import releases
    from schoolctl.deploy import artifacts

    assert releases.SRV == artifacts.SRV
