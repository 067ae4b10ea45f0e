"""The desired state of a school server, as plain data.

Each service module (deploy/base.py, deploy/web.py, deploy/moodle.py, ...) is a pure function
`layer(school, ctx) -> Layer`: packages, files (rendered locally), directories, services and
guarded steps. deploy/school.py merges the layers and hands them to a few coarse pyinfra
operations (deploy/ops.py), each of which checks everything it manages in ONE remote command:
that is what makes a no-op deploy cost a handful of round trips instead of hundreds.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

from schoolctl.errors import RenderError

# Rounds run in order; within a round: packages -> directories -> files -> services -> steps.
SYSTEM, APPS, LAST = 0, 1, 2   # LAST: the check that what the landing page lists answers

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def checked_path(path: str) -> str:
    """`path` when it is an absolute path with no `.`/`..` component, no empty one and no control
    character: a file or folder built from config can never land outside where it was meant to."""
    parts = path.split("/")
    if not path.startswith("/") or _CONTROL.search(path) or any(p in (".", "..") for p in parts) \
            or "" in parts[1:-1]:
        raise RenderError(f"refusing the path {path!r}: not a plain absolute path (no '..', no control characters)")
    return path


@dataclass(frozen=True)
class File:
    """A file with exact content. When it changes: `check` must pass (e.g. `nginx -t`), then `then`
    runs (e.g. `update-ca-certificates`), then the `reload`/`restart` units are reloaded/restarted.
    A `secret` file's content is never shown in a plan diff."""

    path: str
    content: bytes | str
    mode: str = "0644"
    owner: str = "root"
    group: str = "root"
    reload: tuple[str, ...] = ()
    restart: tuple[str, ...] = ()
    check: str | None = None
    then: str | None = None
    secret: bool = False
    absent: bool = False  # the file must NOT exist (e.g. a package's default site); content ignored

    def __post_init__(self) -> None:
        checked_path(self.path)

    @property
    def data(self) -> bytes:
        return self.content.encode() if isinstance(self.content, str) else self.content


@dataclass(frozen=True)
class Directory:
    path: str
    mode: str = "0755"
    owner: str = "root"
    group: str = "root"

    def __post_init__(self) -> None:
        checked_path(self.path)


@dataclass(frozen=True)
class Service:
    """A systemd unit that must be enabled and running (or, with `running=False`, stopped and disabled).
    With `start=False` it is only enabled here: a step of its layer starts it once what it needs exists."""

    name: str
    running: bool = True
    start: bool = True


@dataclass(frozen=True)
class Step:
    """An idempotent action guarded by a check: `apply` runs only when `check` (a shell command)
    fails. Both run as root with `sh -ec`. With `upload`, a controller file is sent first."""

    name: str
    check: str
    apply: str
    timeout: int = 1800
    upload: tuple[str, str] | None = None  # (file on the controller, path on the server) sent first


@dataclass
class Layer:
    """What one part of the platform (base, web, database, a service...) wants on the server."""

    name: str
    round: int = SYSTEM
    packages: list[str] = field(default_factory=list)
    directories: list[Directory] = field(default_factory=list)
    files: list[File] = field(default_factory=list)
    services: list[Service] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    # steps that must run before the packages of this round (apt sources, debconf preseeds)
    pre_steps: list[Step] = field(default_factory=list)
    # files that must be in place before the packages of this round (apt proxy, apt sources, keys)
    pre_files: list[File] = field(default_factory=list)


@dataclass
class Round:
    """Every layer's wishes for one round, merged in layer order."""

    number: int
    pre_files: list[File] = field(default_factory=list)
    pre_steps: list[Step] = field(default_factory=list)
    packages: list[str] = field(default_factory=list)
    directories: list[Directory] = field(default_factory=list)
    files: list[File] = field(default_factory=list)
    services: list[Service] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)


class DesiredStateError(RenderError):
    """Two layers want contradicting things (e.g. the same file with different content): found before
    any connection, nothing changed (exit 2)."""


def merge(layers: list[Layer]) -> list[Round]:
    """Group layers into rounds, keeping order and refusing contradictions."""
    rounds: dict[int, Round] = {}
    owners: dict[str, tuple[str, File | Directory]] = {}
    for layer in layers:
        r = rounds.setdefault(layer.round, Round(layer.round))
        for item in [*layer.pre_files, *layer.files, *layer.directories]:
            if item.path in owners and owners[item.path][1] != item:
                raise DesiredStateError(f"{item.path} is wanted by both {owners[item.path][0]} and {layer.name} "
                                        "with different content",
                                        "look for two names or domains in the school's file and fleet.yaml that "
                                        "lead to the same file; otherwise it is a schoolctl bug worth reporting")
            owners[item.path] = (layer.name, item)
        r.pre_files += layer.pre_files
        r.pre_steps += layer.pre_steps
        r.packages += [p for p in layer.packages if p not in r.packages]
        r.directories += [d for d in layer.directories if d not in r.directories]
        r.files += [f for f in layer.files if f not in r.files]
        r.services += [s for s in layer.services if s not in r.services]
        r.steps += layer.steps
    return [rounds[k] for k in sorted(rounds)]


def running_current(unit: str, paths: list[str]) -> Step:
    """`unit` runs and started after its config files last changed: a deploy interrupted between
    writing a file and restarting the unit (a failed check, a lost connection) is healed next time.
    ctime, not mtime: uploaded files carry mtime 0."""
    newest = " ".join(shlex.quote(p) for p in paths)
    u = shlex.quote(unit)
    return Step(f"{unit} runs with its current configuration",
                check=f"systemctl is-active -q {u} && "
                      f"[ \"$(stat -c %Z {newest} | sort -n | tail -n1)\" -le \"$(date -d \"$(systemctl show -p "
                      f"ActiveEnterTimestamp --value {u})\" +%s)\" ]",
                apply=f"systemctl restart {u}")
