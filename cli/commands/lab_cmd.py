"""`schoolctl lab ...`: boot, list, enter and remove lab hosts; start the city services."""

from __future__ import annotations

import functools
import os
import subprocess
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

import typer

lab_app = typer.Typer(
    help="The lab: real Debian 13 school servers on this machine (systemd-nspawn, one network "
    "namespace each, reached over SSH). Needs root.",
    no_args_is_help=True,
)
services_app = typer.Typer(
    help="City-side services for lab hosts: package proxies, ACME (pebble), artifact mirror.",
    invoke_without_command=True,
)
lab_app.add_typer(services_app, name="services")

F = TypeVar("F", bound=Callable[..., Any])


def _errors(func: F) -> F:
    """A system call that failed under the lab (LabError itself goes to the root handler): exit 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (OSError, subprocess.SubprocessError, ValueError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def _lab() -> Any:
    from schoolctl.lab.lab import Lab

    return Lab()


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


@lab_app.command()
@_errors
def up(
    names: list[str] = typer.Argument(..., help="Host names (lowercase letters, digits, dashes)."),
    timeout: float = typer.Option(90.0, min=1, help="Seconds to wait for each boot."),
) -> None:
    """Boot lab hosts (a running one is left alone) and wait until they answer over SSH."""
    lab = _lab()
    hosts = lab.up(names, timeout=timeout)
    typer.echo(_table([("NAME", "ADDRESS", "STATE")] + [(h.name, h.address, h.state) for h in hosts]))
    typer.echo(f"ssh config: {lab.ssh_config_path}  (e.g. `ssh -F {lab.ssh_config_path} {hosts[0].name}`)")


@lab_app.command()
@_errors
def down(names: list[str] = typer.Argument(None, help="Hosts to remove; all when none given.")) -> None:
    """Stop and remove lab hosts; with none left, the services and the bridge go too."""
    from schoolctl.lab.names import validate_name

    for name in names or []:  # a bad name is refused before the lab's state is touched (its lock made)
        validate_name(name)
    removed = _lab().down(names or None)
    typer.echo(f"removed: {', '.join(removed)}" if removed else "nothing to remove")


@lab_app.command()
@_errors
def status(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List lab hosts: name, address, state."""
    hosts = _lab().status()
    if as_json:
        from schoolctl.cli.json_out import emit

        emit("lab status", {"hosts": [{"name": h.name, "address": h.address, "state": h.state} for h in hosts]})
    elif hosts:
        typer.echo(_table([("NAME", "ADDRESS", "STATE")] + [(h.name, h.address, h.state) for h in hosts]))
    else:
        typer.echo("no lab hosts")


@lab_app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@_errors
def ssh(
    name: str = typer.Argument(..., help="Lab host."),
    command: list[str] = typer.Argument(None, help="Command to run (after `--`); a shell when none."),
) -> None:
    """SSH into a lab host with the lab's SSH config: `lab ssh demo -- uname -a`."""
    lab = _lab()
    lab.host(name)
    argv = ["ssh", "-F", str(lab.ssh_config_path), name, *(command or [])]
    if not command and os.isatty(0):
        argv.insert(1, "-t")
    rc = subprocess.run(argv, check=False).returncode
    raise typer.Exit(rc)


def _print_services(svc: Any) -> None:
    for key, value in asdict(svc).items():
        typer.echo(f"{key:14} {value if value is not None else '-'}")


@services_app.callback()
@_errors
def services(
    ctx: typer.Context,
    mirror: Path = typer.Option(None, help="Folder to serve as artifact mirror (default: $SCHOOLCTL_MIRROR)."),
    acme: bool = typer.Option(True, help="Start pebble (ACME) and its mock DNS."),
) -> None:
    """Start the city services (idempotent) and print their URLs; `services down` stops them."""
    if ctx.invoked_subcommand is not None:
        return
    _print_services(_lab().services(acme=acme, mirror=mirror))


@services_app.command("down")
@_errors
def services_down() -> None:
    """Stop the city services (the bridge goes too when no host is left)."""
    _lab().services_down()
    typer.echo("services stopped")


@lab_app.command()
@_errors
def image() -> None:
    """Build the Debian 13 base image now if it is missing or outdated (`up` does it when needed)."""
    import time

    start = time.monotonic()
    path = _lab().ensure_image()
    typer.echo(f"base image {path} ready ({time.monotonic() - start:.0f} s)")


@lab_app.command()
@_errors
def doctor() -> None:
    """Check this machine for the lab: root, Debian packages, kernel, subnet, disk space."""
    from schoolctl.lab import doctor as doc

    ok, report = doc.run_doctor()
    typer.echo(report)
    if not ok:
        raise typer.Exit(2)
