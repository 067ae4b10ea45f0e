"""`schoolctl secrets`: the vault key. Values themselves are never shown."""

from __future__ import annotations

import typer

from ..output import say
from ..secrets import SecretStore

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
