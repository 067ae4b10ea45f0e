"""schoolctl: deploy and audit a city's school platform from plain YAML.

The typer app (`app`) is made on first use (`_build`): `main()` first asks the result cache
(schoolctl.config.result_cache) whether this `validate` or `list` ran before with the same code,
files, settings and day; a hit prints the recorded output without importing typer or pydantic."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator

# a cached `validate` or `list` imports only what it uses: not typing, logging, pathlib (nor typer)
TYPE_CHECKING = False
if TYPE_CHECKING:  # typer >= 0.2x carries its own click: importing the package costs start-up time
    from typing import Annotated, Any

    import click
    import typer

    app: typer.Typer
    SETTINGS: dict[str, Any]


def _build() -> None:
    """Import typer and make the app: the root command (`_Root`), its options (`_root`) and every
    verb. Made on first use of `app`, `SETTINGS` or `_Root` (module __getattr__) or of for_argv."""
    global typer, _Root, SETTINGS, app, Annotated
    if "app" in globals():
        return
    from typing import Annotated  # what typer reads _root's options with

    import typer
    from typer.core import TyperGroup

    from schoolctl.cli.output import warn
    from schoolctl.errors import SchoolctlError

    class _Root(TyperGroup):
        """The root command: every SchoolctlError, from any verb, becomes its lines on stderr and its
        exit code here (2 bad input, 1 a server or the lab failed), and nowhere else."""

        def invoke(self, ctx: click.Context) -> Any:
            try:
                return super().invoke(ctx)
            except SchoolctlError as e:
                for line in e.lines():
                    warn(line)
                raise typer.Exit(e.exit_code) from None

    # rich_markup_mode=None: click's plain help (rich's panels would import rich's Markdown, ~0.05 s each start)
    SETTINGS = dict(
        name="schoolctl", cls=_Root, no_args_is_help=True, add_completion=True, rich_markup_mode=None,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 120},
        help="Deploy and audit the free-software platform of a city's schools "
             "(Moodle, Nextcloud, Etherpad, Jitsi Meet, BigBlueButton).")
    app = typer.Typer(**SETTINGS)
    app.callback()(_root)
    _mount()


def __getattr__(name: str) -> Any:
    """`app`, `SETTINGS`, `_Root` and `typer`, made on first use (_build)."""
    if name in ("app", "SETTINGS", "_Root", "typer"):
        _build()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def version() -> str:
    """The installed schoolctl's version."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("schoolctl")
    except PackageNotFoundError:  # run from a checkout that is not installed
        return "unknown"


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"schoolctl {version()}")
        raise typer.Exit()


def _root(ctx: typer.Context,
          schools_dir: Annotated[str | None, typer.Option("--schools-dir", envvar="SCHOOLCTL_SCHOOLS_DIR",
                                                          metavar="DIR", show_default="./schools",
                                                           help="Folder with fleet.yaml and <school>.yaml files.")]
          = None,
          verbose: Annotated[int, typer.Option("--verbose", "-v", count=True,
                                               help="Show pyinfra's and testinfra's log: -v their steps, -vv "
                                                    "everything (secrets masked).")] = 0,
          debug: Annotated[bool, typer.Option("--debug", help="Every library's debug log, and the traceback of "
                                                              "an internal error (secrets masked).")] = False,
          _version: Annotated[bool, typer.Option("--version", callback=_show_version, is_eager=True,
                                                 help="Print schoolctl's version and exit.")] = False) -> None:
    from pathlib import Path

    from schoolctl.cli.context import Context
    from schoolctl.config.loader import default_schools_dir

    if verbose or debug:
        from schoolctl.cli.logs import setup

        setup(verbose, debug)
    from schoolctl.errors import SettingError

    if schools_dir is not None and not schools_dir.strip():  # Path("") would be the current folder
        source = ctx.get_parameter_source("schools_dir")
        env = getattr(source, "name", "") == "ENVIRONMENT"
        raise SettingError(f"{'SCHOOLCTL_SCHOOLS_DIR is set but' if env else '--schools-dir is'} empty",
                           "name the schools folder ('.' for the current folder)")
    # resolved here, inside the root's error handling: an empty SCHOOLCTL_SCHOOLS_DIR is exit 2
    ctx.obj = Context(schools_dir=Path(schools_dir) if schools_dir is not None else default_schools_dir())
    _check_settings()


# settings that name a file or folder: set but empty is a mistake, never "the default" or "here"
PATH_SETTINGS = {"SCHOOLCTL_JOURNAL": "the run journal's file", "SCHOOLCTL_LAB_DIR": "the lab's state folder",
                 "SCHOOLCTL_LAB_SUBNET": "the lab's IPv4 subnet, e.g. 10.213.0.0/24",
                 "SCHOOLCTL_LETTERS_FONT": "a TrueType font file",
                 "SCHOOLCTL_CACHE_DIR": "the result cache's folder, or off to turn the cache off"}
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _check_settings() -> None:
    """The SCHOOLCTL_* settings, once, before any school is touched: exit 2 when bad."""
    import logging
    from pathlib import Path

    from schoolctl.config.values import check_mirror
    from schoolctl.errors import SettingError

    for var, what in PATH_SETTINGS.items():
        value = os.environ.get(var)
        if value is not None and not value.strip():
            raise SettingError(f"{var} is set but empty", f"unset it for the default, or set it to {what}")
    lab_dir = os.environ.get("SCHOOLCTL_LAB_DIR")
    if lab_dir and Path(lab_dir).exists() and not Path(lab_dir).is_dir():
        raise SettingError(f"SCHOOLCTL_LAB_DIR={lab_dir} is not a folder", "set it to the lab's state folder, or "
                           "unset it for /var/lib/schoolctl/lab")
    journal = os.environ.get("SCHOOLCTL_JOURNAL")
    if journal and Path(journal).expanduser().is_dir():
        raise SettingError(f"SCHOOLCTL_JOURNAL={journal} is a folder", "set it to a file, e.g. "
                           f"{Path(journal) / 'journal.jsonl'}")
    level = os.environ.get("SCHOOLCTL_LOG")
    if level and not isinstance(logging.getLevelName(level.upper()), int):  # as cli/logs.py reads it
        raise SettingError(f"SCHOOLCTL_LOG={level!r} is not a log level", f"use one of {', '.join(LOG_LEVELS)}, "
                           "or unset it (WARNING)")
    mirror = os.environ.get("SCHOOLCTL_MIRROR")
    if mirror == "":
        raise SettingError("SCHOOLCTL_MIRROR is set but empty", "unset it for no mirror, or name a folder or URL")
    if mirror is not None:
        try:
            check_mirror(mirror)
        except ValueError as e:
            raise SettingError(f"SCHOOLCTL_MIRROR: {e}", "unset it, or name an existing folder or URL") from None
    layers = os.environ.get("SCHOOLCTL_LAYERS")
    if layers is not None and not layers.replace(",", "").strip():
        raise SettingError(f"SCHOOLCTL_LAYERS={layers!r} names no layer",
                           "unset it to deploy every layer, or name some, e.g. SCHOOLCTL_LAYERS=base,web")
    if layers:
        from schoolctl.deploy.school import selected_layers  # pyinfra: only when the setting is there

        try:
            selected_layers()
        except ValueError as e:
            raise SettingError(str(e), "unset SCHOOLCTL_LAYERS to deploy every layer") from None


def _mount() -> None:
    from schoolctl.cli.commands import (
        audit_cmd,
        backup_cmd,
        deploy_cmd,
        fleet,
        lab_cmd,
        log_cmd,
        rollback_cmd,
        secrets_cmd,
        users_cmd,
    )

    for group in (fleet, deploy_cmd, rollback_cmd, audit_cmd, log_cmd):
        app.registered_commands.extend(group.app.registered_commands)
    app.registered_commands.extend(backup_cmd.verbs.registered_commands)
    app.add_typer(backup_cmd.app, name="backup")
    app.add_typer(secrets_cmd.app, name="secrets")
    app.add_typer(users_cmd.app, name="users", help="The school's people: import a roster into its directory.")
    app.add_typer(lab_cmd.lab_app, name="lab", help="Local test school servers (systemd-nspawn).")


# verbs that never open a connection: they start without gevent (its patching costs ~0.1 s of CPU)
LOCAL_VERBS = frozenset({"validate", "list", "new", "schema", "inventory", "log"})


def needs_gevent(argv: list[str]) -> bool:
    """Whether the command line runs a verb that connects to servers (pyinfra, testinfra): not for
    --help/-h/--version, shell completion, nor the LOCAL_VERBS."""
    if any(a in ("-h", "--help", "--version", "--show-completion", "--install-completion") for a in argv):
        return False
    if os.environ.get("_SCHOOLCTL_COMPLETE"):
        return False
    verb = next((a for a in _words(argv) if not a.startswith("-")), None)
    return verb is not None and verb not in LOCAL_VERBS  # no verb: the help


def _words(argv: list[str]) -> Iterator[str]:
    """The command line's words but the value of --schools-dir (the one root option with a value)."""
    args = iter(argv)
    for arg in args:
        if arg == "--schools-dir":
            next(args, None)
        else:
            yield arg


def named_verb(argv: list[str]) -> str | None:
    """The verb the command line runs when only root options that show nothing of their own come
    before it (--schools-dir DIR, -v, --debug); None for anything else (no verb, --help, -h,
    --version, shell completion, a mistake)."""
    if os.environ.get("_SCHOOLCTL_COMPLETE"):
        return None
    for arg in _words(argv):
        if arg.startswith("--schools-dir=") or arg in ("--verbose", "--debug") or re.fullmatch(r"-v+", arg):
            continue
        elif arg.startswith("-"):
            return None
        else:
            return arg
    return None


def for_argv(argv: list[str]) -> typer.Typer:
    """The app that runs `argv`: the root with the one verb it names, else the whole app. typer
    builds the click command of every verb it holds on each start (about 0.03 s of CPU for all of
    them), and a named verb's command line is parsed, helped and refused by that verb alone."""
    _build()
    verb = named_verb(argv)
    if verb is None:
        return app
    one = typer.Typer(**SETTINGS)
    one.registered_callback = app.registered_callback
    for command in app.registered_commands:
        if verb == (command.name or typer.main.get_command_name(command.callback.__name__)):
            one.registered_commands.append(command)
            return one
    for group in app.registered_groups:
        if verb == group.name:
            one.registered_groups.append(group)
            return one
    return app  # not a verb: the whole app says so (and suggests one)


# verbs whose successful result is reused while its code, inputs, settings and day hold
CACHED_VERBS = frozenset({"validate", "list"})


def cached_verb(argv: list[str]) -> str | None:
    """The verb of CACHED_VERBS the command line runs, when its result may come from the result
    cache (schoolctl.config.result_cache): not for help, version or completion, nor when a log is
    shown (-v, --debug, SCHOOLCTL_LOG below WARNING: its lines are no result)."""
    verb = named_verb(argv)
    if verb not in CACHED_VERBS:
        return None
    if any(a in ("-h", "--help", "--version", "--verbose", "--debug") or re.fullmatch(r"-v+", a) for a in argv):
        return None
    if os.environ.get("SCHOOLCTL_LOG", "WARNING").upper() not in ("WARNING", "ERROR", "CRITICAL"):
        return None
    return verb


def main() -> None:
    """Console entry point."""
    # no pydantic plugin sees the config (it holds the fleet's settings); and none is looked for
    # among every installed package's entry points, which costs start-up time
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    argv = sys.argv[1:]
    verb = cached_verb(argv)
    if verb is None:
        _run(argv)
    else:
        from schoolctl.config import result_cache

        result_cache.run(verb, argv, lambda: _run(argv))


def _run(argv: list[str]) -> None:
    """Run the command line: the app of for_argv; an unexpected error is one masked line, exit 1."""
    if needs_gevent(argv):
        # pyinfra is gevent based: patch before ssl is used; resolve names in-line (gevent's
        # thread-pool resolver prints a traceback for every name that does not resolve)
        os.environ.setdefault("GEVENT_RESOLVER", "block")
        from gevent import monkey

        monkey.patch_all()
    from schoolctl.cli.logs import setup

    setup()
    try:
        for_argv(argv)()
    except Exception as e:  # never a traceback for the user; secrets scrubbed from the message
        from schoolctl.cli.logs import debugging
        from schoolctl.cli.output import warn
        from schoolctl.secrets import redact

        warn(f"internal error: {type(e).__name__}: {redact(str(e))} (run with --debug for details)")
        if debugging():
            import traceback

            warn("".join(traceback.format_exception(e)).rstrip())  # warn() redacts
        raise SystemExit(1) from None
