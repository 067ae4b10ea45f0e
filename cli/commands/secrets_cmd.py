"""`schoolctl secrets`: the vault key. Values themselves are never shown."""

from __future__ import annotations

import typer

from schoolctl.cli.output import say
from schoolctl.secrets import SecretStore

app = typer.Typer(help="The encrypted vault of generated secrets (values are never shown).",
                  no_args_is_help=True)


@app.command()
def init() -> None:
    """Create the vault key (SCHOOLCTL_VAULT_KEY_FILE, default .schoolctl/vault.key) if missing."""
    store = SecretStore()
    if store.init_key():
        say(f"created the vault key {store.key_file} (keep it out of git; back it up safely)")
    else:
        say(f"the vault key {store.key_file} already exists; left as it is")


@app.command("list")
def list_(school: str = typer.Argument(..., help="School id (or 'fleet').")) -> None:
    """The names (never the values) of a school's stored secrets."""
    names = sorted(SecretStore().load(school))
    say("\n".join(names) if names else f"no secrets stored for {school} yet")


@app.command("set")
def set_(scope: str = typer.Argument(..., help="School id, or 'fleet' for the city's own secrets."),
         name: str = typer.Argument(..., help="Secret name, e.g. bbb_pool.")) -> None:
    """Store a secret given by the city (e.g. the BBB pool's shared secret), read from standard input
    (one line of printable text: a newline or another control character in it is refused)."""
    import sys

    from schoolctl.cli.output import fail
    from schoolctl.secrets import check_value

    store = SecretStore()
    store.path(scope)  # a bad scope is refused before anything is read
    if sys.stdin.isatty():
        value = typer.prompt(f"{scope}/{name}", hide_input=True)
    else:  # all of it: a second line is refused, not silently dropped
        value = sys.stdin.read().removesuffix("\n").removesuffix("\r")
    check_value(value)
    if len(value) < 8:
        fail("a secret needs at least 8 characters")
    store.put(scope, name, value)
    say(f"stored {scope}/{name} in the vault")


@app.command()
def adopt(scope: str = typer.Argument(..., help="School id (or 'fleet') whose vault file to mark.")) -> None:
    """Mark a vault made before vaults named their school (no `_scope` line) as this school's, so that
    it is refused if it is ever renamed to another school's. Only a vault without the marker is
    written; one marked for another school is refused."""
    store = SecretStore()
    if store.adopt(scope):
        say(f"marked {store.path(scope)} as {scope}'s vault")
    else:
        say(f"{store.path(scope)} is already marked as {scope}'s vault; left as it is")
