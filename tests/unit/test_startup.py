"""Start-up (issue #16): `--help`, `validate` and `list` import only what they use. The libraries
of the verbs that connect (pyinfra, gevent, paramiko, testinfra's backends, jinja2, requests,
ansible's vault) are imported lazily; so are rich (plain lines are printed without it; `list`'s
table is rich's), the audit's controls (the ids of `accept:` entries are checked against
audit/ids.py) and packaging (only where versions are compared). Each command runs in a fresh
interpreter and its loaded modules are checked. bench/startup.py measures the CPU cost."""

from __future__ import annotations

import json
import os
import pkgutil
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import schoolctl.audit
from schoolctl.audit.catalogue import load_all
from schoolctl.audit.ids import CONTROL_IDS
from schoolctl.cli.main import app, for_argv, named_verb

from .conftest import REPO, SHIPPED

CONNECTING = ("pyinfra", "gevent", "paramiko", "jinja2", "requests", "ansible", "cryptography",
              "schoolctl.deploy", "schoolctl.cli.runner", "schoolctl.connect", "schoolctl.lab",
              "markdown_it", "rich.markdown")  # (rich's Markdown: the help is click's plain one)
# what a command that prints plain lines does not load (say/warn print them without rich)
PLAIN = ("rich",)
# the audit's modules but the list of ids: testinfra, the evidence parsers (html.parser), the controls
AUDIT = tuple(f"schoolctl.audit.{m.name}" for m in pkgutil.iter_modules(schoolctl.audit.__path__) if m.name != "ids")
# what each command may not load, besides CONNECTING: --help neither the model nor any YAML reader
NOT_LOADED = {
    ("--help",): ("pydantic", "ruamel", "yaml", "packaging", "schoolctl.config.model", "schoolctl.config.loader",
                  "schoolctl.audit", "schoolctl.journal", *PLAIN),
    ("validate", "demo"): ("testinfra", "html", *AUDIT, *PLAIN),
    ("list",): ("testinfra", "html", "schoolctl.audit"),
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


def loaded(args: tuple[str, ...], schools: Path = SHIPPED) -> tuple[int, set[str]]:
    """The exit code of `schoolctl ARGS` and the modules it loaded (piped, as a script would run it:
    no FORCE_COLOR or TTY_COMPATIBLE, which make rich draw list's table for a terminal)."""
    env = {**{k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")},
           "SCHOOLCTL_SCHOOLS_DIR": str(schools), "COLUMNS": "120"}
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


def test_versions_are_compared_with_packaging_only_when_the_fleet_lists_advisories(tmp_path: Path) -> None:
    """The shipped fleet lists advisories (validated and compared with packaging's PEP 440 ranges);
    a fleet without any does not import packaging."""
    schools = tmp_path / "schools"
    shutil.copytree(SHIPPED, schools)
    fleet = schools / "fleet.yaml"
    text, found = re.subn(r"(?m)^    advisories:\n(?:      .*\n)+", "", fleet.read_text(encoding="utf-8"))
    assert found and "advisories:" not in text
    fleet.write_text(text, encoding="utf-8")
    code, modules = loaded(("validate", "demo"), schools)
    assert code in (0, None) and not _hits(modules, ("packaging",))
    code, modules = loaded(("validate", "demo"))
    assert code in (0, None) and _hits(modules, ("packaging",))


def test_the_list_of_control_ids_is_the_catalogue(tmp_path: Path) -> None:
    """audit/ids.py names every control the audit has, and no other: a new control adds its id there."""
    ids = set(load_all())
    assert not ids - CONTROL_IDS, f"add to audit/ids.py: {sorted(ids - CONTROL_IDS)}"
    assert not CONTROL_IDS - ids, f"remove from audit/ids.py: {sorted(CONTROL_IDS - ids)}"


# --- the verb alone: typer builds the click command of every verb it holds on each start -----------

@pytest.mark.parametrize("argv", [["validate", "demo"], ["--schools-dir", "x", "-vv", "list"], ["--debug", "lab"],
                                  ["--schools-dir=x", "--verbose", "users", "import", "-h"], ["log", "--help"]])
def test_a_named_verb_runs_alone(argv: list[str]) -> None:
    verb = named_verb(argv)
    one = for_argv(argv)
    assert verb == next(a for a in argv if not a.startswith("-") and a != "x") and one is not app
    assert one.registered_callback is app.registered_callback
    assert len(one.registered_commands) + len(one.registered_groups) == 1


@pytest.mark.parametrize("argv", [[], ["--help"], ["-h", "validate"], ["--version"], ["--show-completion"],
                                  ["-vh", "list"], ["--", "list"], ["valdate"], ["-x", "list"]])
def test_anything_else_runs_the_whole_app(argv: list[str]) -> None:
    assert for_argv(argv) is app


def test_completion_runs_the_whole_app(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("_SCHOOLCTL_COMPLETE", "complete_bash")
    assert for_argv(["validate"]) is app


@pytest.mark.parametrize("argv", [["validate", "demo"], ["validate", "--bogus"], ["validate", "-h"], ["list", "--json"],
                                  ["list", "extra"], ["list", "--limit"], ["new"], ["schema", "--help"],
                                  ["inventory", "--format", "bad"], ["lab"], ["lab", "--help"], ["users", "-h"],
                                  ["backup", "--help"], ["secrets", "--help"], ["log", "--help"], ["deploy", "-h"],
                                  ["audit", "-h"], ["plan", "-h"], ["--schools-dir", "nowhere", "validate"],
                                  ["-v", "list", "--limit", "district=nope"]])
def test_a_verb_alone_says_what_the_whole_app_says(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    runs = [CliRunner().invoke(a, argv, prog_name="schoolctl") for a in (app, for_argv(argv))]
    assert [(r.exit_code, r.stdout, r.stderr) for r in runs[1:]] == [(runs[0].exit_code, runs[0].stdout,
                                                                       runs[0].stderr)]


def test_the_audit_knows_the_release_folder_the_deploy_uses() -> None:
    """audit/releases.py spells /srv itself (deploy/artifacts.py would pull requests and jinja2 into
    `validate`); they must agree."""
    from schoolctl.audit import releases
    from schoolctl.deploy import artifacts

    assert releases.SRV == artifacts.SRV
