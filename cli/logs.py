"""Logging: secrets are masked in every record, whatever logger writes it; `-v`/`-vv`/`--debug`
(or SCHOOLCTL_LOG) decide how much of pyinfra's and testinfra's own log reaches stderr."""

from __future__ import annotations

import logging
import os
import sys

from schoolctl.secrets import RedactingFilter

LIBRARIES = ("pyinfra", "testinfra", "schoolctl")  # the loggers -v and -vv open up
# loggers heard only from -v (or SCHOOLCTL_LOG=INFO): paramiko logs a traceback of ~20 lines for every
# connection that fails, whose cause the verbs already say in one line (schoolctl.connect.ssh_reason)
HUSHED = ("paramiko",)


class _Stderr(logging.StreamHandler):
    """A handler writing to whatever sys.stderr is at the time (a test runner swaps it)."""

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


_handler = _Stderr()
_handler.addFilter(RedactingFilter())
_handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
_state = {"verbosity": 0}


def level_of(verbosity: int, debug: bool = False) -> int:
    """The library log level of `-v` counted `verbosity` times (0: SCHOOLCTL_LOG or WARNING)."""
    if debug or verbosity >= 2:
        return logging.DEBUG
    if verbosity == 1:
        return logging.INFO
    name = os.environ.get("SCHOOLCTL_LOG", "WARNING").upper()
    level = logging.getLevelName(name)
    return level if isinstance(level, int) else logging.WARNING


def setup(verbosity: int = 0, debug: bool = False) -> None:
    """One redacting stderr handler on the root logger. `-v`: INFO of pyinfra, testinfra and
    schoolctl; `-vv`: their DEBUG; `--debug`: DEBUG of every library, and internal errors with
    their traceback. Without any, SCHOOLCTL_LOG (default WARNING) is the level of everything."""
    root = logging.getLogger()
    if _handler not in root.handlers:
        root.addHandler(_handler)
    for handler in root.handlers:  # whoever else writes records: masked as well
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
    _state["verbosity"] = 3 if debug else verbosity
    level = level_of(verbosity, debug)
    if debug or not verbosity:
        root.setLevel(level)
    else:
        root.setLevel(min(root.level or logging.WARNING, logging.WARNING))
    for name in LIBRARIES:
        logging.getLogger(name).setLevel(level if verbosity or debug else logging.NOTSET)
    for name in HUSHED:
        logging.getLogger(name).setLevel(logging.NOTSET if shows_libraries() else logging.CRITICAL + 1)


def shows_libraries() -> bool:
    """Whether pyinfra's own records should reach stderr (-v or more, or SCHOOLCTL_LOG <= INFO)."""
    return _state["verbosity"] > 0 or level_of(0) <= logging.INFO


def debugging() -> bool:
    """--debug, or SCHOOLCTL_LOG=DEBUG: internal errors are shown with their traceback."""
    return _state["verbosity"] >= 3 or level_of(0) <= logging.DEBUG
