"""Every fact of a deploy read ahead in one command (deploy/ops.py, cli/runner.py: _read_ahead): the
script's sections come back exactly as each command alone would answer, a failing fact is read live,
and the operations use what was read ahead only until one of them changes something."""

from __future__ import annotations

import re
import subprocess

import pytest
from pyinfra.api import Config, Inventory, State
from pyinfra.api.connect import connect_all
from pyinfra.api.deploy import add_deploy
from pyinfra.api.operations import run_ops

from schoolctl.deploy import ops
from schoolctl.deploy.school import school_deploy
from schoolctl.deploy.state import File, Round, Service, Step

TOKEN = "--schoolctl-fact-0123456789abcdef"
COMMANDS = ["printf 'a|b\\n\\nc\\n'; true", "printf 'no final newline'", "echo gone; exit 3", "true",
            "echo 'x --schoolctl-fact-looks-alike'"]


def sh(script: str) -> list[str]:
    return subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True).stdout.splitlines()


def test_the_script_gives_each_command_its_own_output() -> None:
    before, outputs = ops.parse_prefetch(sh(ops.prefetch_script("echo guard said no", COMMANDS, TOKEN)), COMMANDS,
                                         TOKEN)
    assert before == ["guard said no"]
    assert outputs == {COMMANDS[0]: ["a|b", "", "c"], COMMANDS[1]: ["no final newline"], COMMANDS[3]: [],
                       COMMANDS[4]: ["x --schoolctl-fact-looks-alike"]}  # the failing one: read live
    for command in (COMMANDS[0], COMMANDS[4]):
        assert outputs[command] == sh(command)


def test_without_guards_nothing_comes_before() -> None:
    before, outputs = ops.parse_prefetch(sh(ops.prefetch_script("", COMMANDS[:1], TOKEN)), COMMANDS[:1], TOKEN)
    assert before == [] and outputs == {COMMANDS[0]: ["a|b", "", "c"]}


def rounds() -> list[Round]:
    return [Round(0, packages=["nginx"], files=[File("/etc/a.conf", "a\n")], services=[Service("nginx")],
                  steps=[Step("s", check="test -e /etc/s", apply="touch /etc/s")]),
            Round(1, files=[File("/etc/b.conf", "b\n")],
                  steps=[Step("t", check="test -e /etc/t", apply="touch /etc/t")])]


def converged(r: list[Round]) -> dict[str, list[str]]:
    """Fact outputs of a server that holds every round exactly (nothing to change)."""
    import hashlib

    outputs = {}
    for command in ops.fact_commands(r):
        if command.startswith("stat "):
            files = [f for x in r for f in x.files if shlex_quoted(f.path) in command]
            outputs[command] = [*(f"regular file|644|root|root|{f.path}" for f in files), "--sha--",
                                *(f"{hashlib.sha256(f.data).hexdigest()}  {f.path}" for f in files)]
        elif command.startswith("dpkg-query"):
            outputs[command] = ["nginx|ii "]
        elif command.startswith("systemctl show"):
            outputs[command] = ["Id=nginx.service", "UnitFileState=enabled", "ActiveState=active", "LoadState=loaded"]
        else:
            outputs[command] = [f"{i}:ok" for i in range(command.count("\n") + 1)]
    return outputs


def shlex_quoted(path: str) -> str:
    import shlex

    return shlex.quote(path)


def deploy(outputs: dict[str, list[str]] | None, plan: bool = False) -> list[str]:
    """Run the rounds on pyinfra's @fake host with `outputs` primed; the commands it executed."""
    name = "@fake/read-ahead"
    inventory = Inventory(([(name, {"fake_delay": 0, "fake_delay_jitter": 0})], {}))
    state = State(inventory=inventory, config=Config(), check_for_changes=plan)
    connect_all(state)
    ops.reset_changes(name)
    if outputs is not None:
        ops.prime(name, outputs)
    try:
        add_deploy(state, school_deploy, rounds())
        if not plan:
            run_ops(state)
    finally:
        ops.forget(name)
    return [str(c) for c in inventory.get_host(name).connector.executed_commands]


def test_a_converged_server_costs_no_command() -> None:
    assert deploy(converged(rounds())) == []
    assert ops.changes("@fake/read-ahead") == []


def test_after_a_change_the_next_operations_read_live() -> None:
    outputs = converged(rounds())
    unit_fact = next(c for c in outputs if c.startswith("systemctl show"))
    outputs[unit_fact] = ["Id=nginx.service", "UnitFileState=disabled", "ActiveState=inactive", "LoadState=loaded"]
    executed = deploy(outputs)
    assert executed[0] == "systemctl enable --now nginx.service"
    # every fact after the change is read again from the server (here @fake: empty, so all to do)
    later = [c for c in executed[1:] if re.match(r"^(if \(|stat )", c)]
    assert len(later) == 3 and any(c.startswith("stat ") and "/etc/b.conf" in c for c in later)


def test_a_plan_keeps_what_was_read_ahead() -> None:
    outputs = converged(rounds())
    outputs[next(c for c in outputs if c.startswith("dpkg-query"))] = []
    assert deploy(outputs, plan=True) == []  # no fact read live, nothing run
    assert [c["kind"] for c in ops.changes("@fake/read-ahead")] == ["packages"]


@pytest.mark.parametrize("missing", [0, 1, 2, 3, 4])
def test_a_fact_not_read_ahead_is_read_live(missing: int) -> None:
    outputs = converged(rounds())
    command = list(outputs)[missing]
    del outputs[command]
    executed = deploy(outputs)
    # the first command sent is that fact (on @fake its empty answer then leaves its operation work to do)
    assert executed[0] == command and len(executed) > 1
