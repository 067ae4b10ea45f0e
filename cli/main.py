"""schoolctl: deploy and audit a city's school platform from plain YAML."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from .config.loader import default_schools_dir
from .context import Context

app = typer.Typer(name="schoolctl", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Deploy and audit the free-software platform of a city's schools "
                       "(Moodle, Nextcloud, Etherpad, Jitsi Meet, BigBlueButton).")


@app.callback()
def _root(ctx: typer.Context,
          schools_dir: Annotated[Path, typer.Option("--schools-dir", envvar="SCHOOLCTL_SCHOOLS_DIR",
                                                    help="Folder with fleet.yaml and <school>.yaml files.")]
          = default_schools_dir()) -> None:
    ctx.obj = Context(schools_dir=schools_dir)


def _mount() -> None:
    from .commands import audit_cmd, deploy_cmd, fleet, secrets_cmd, users_cmd

    for group in (fleet, deploy_cmd, audit_cmd):
        app.registered_commands.extend(group.app.registered_commands)
    app.add_typer(secrets_cmd.app, name="secrets")
    app.add_typer(users_cmd.app, name="users", help="The school's people: import a roster into its directory.")
    try:
        from .lab.commands import lab_app
    except ImportError:  # the lab package is optional on machines without it
        return
    app.add_typer(lab_app, name="lab", help="Local test school servers (systemd-nspawn).")


_mount()


def main() -> None:
    """Console entry point."""
    # pyinfra is gevent based: patch before ssl/threading are used; resolve names in-line (gevent's
    # thread-pool resolver prints a traceback for every name that does not resolve)
    os.environ.setdefault("GEVENT_RESOLVER", "block")
    from gevent import monkey

    monkey.patch_all()
    from .logs import setup

    setup()
    try:
        app()
    except Exception as e:  # never a traceback for the user; secrets scrubbed from the message
        from .output import warn
        from .secrets import redact

        warn(f"internal error: {type(e).__name__}: {redact(str(e))} (set SCHOOLCTL_LOG=DEBUG for details)")
        if os.environ.get("SCHOOLCTL_LOG", "").upper() == "DEBUG":
            import traceback

            warn("".join(traceback.format_exception(e)).rstrip())  # warn() redacts
        raise SystemExit(1) from None
