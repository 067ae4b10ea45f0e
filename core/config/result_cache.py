"""The result cache of `schoolctl validate` and `schoolctl list`, as Python's bytecode cache or
mypy's and ruff's caches: the same code validating the same inputs with the same settings on the
same day gives the same result, so a command line that succeeded before (exit 0) is answered with
its recorded output, byte for byte, without importing typer, pydantic, PyYAML or the model.

An entry is reused only when all of these are as they were when it was recorded:

1. the code: (path, size, mtime_ns) of every .py file of the installed schoolctl (all of its
   packages), Python's version, and the installed distributions (the *.dist-info names of
   site-packages: schoolctl's, pydantic's, PyYAML's, rich's version...);
2. the inputs, found by construction while the recorded run ran: an audit hook sees every file it
   opened and every folder it listed, and os.stat/os.lstat are watched for paths it only looked at.
   Each file read is re-hashed (sha256) on every hit (they are small YAML files, so no size and
   mtime shortcut), each folder must hold the same names, each path looked at must be of the same
   kind (missing, file, folder, link, other). Python's own and the libraries' files are not
   inputs (their versions are in 1), nor schoolctl's .py files (in 1);
3. the settings, which name the entry's file: the command line (ids, --limit, --json,
   --schools-dir...), the working folder, every SCHOOLCTL_* variable, TZ, the locale and the
   streams' encodings, and whatever changes the bytes rich prints: isatty of stdin/stdout/stderr,
   the terminal's size, COLUMNS, LINES, NO_COLOR, FORCE_COLOR, TERM, COLORTERM, TTY_COMPATIBLE...;
4. the day: the day the run judged support dates and `accept:` entries by, in the fleet's time
   zone (`note_day`, from releases.today), and the local day, stored as the span of seconds each
   day lasts (a hit needs no time zone library).

What is recorded is the command's output: what it wrote to sys.stdout and sys.stderr, in order
(a hit replays `2>&1` interleaved as the run did), and its exit status. A run is not recorded
when it failed (exit status not 0: an invalid config is always validated afresh), wrote a file,
opened a device, opened or listed the vault key or the secrets folder (a path under it that was
only looked at is recorded by its kind, never its content), wrote to a stream's binary buffer,
or when an input changed while it ran.

The entries are JSON files, one per command line and settings, in SCHOOLCTL_CACHE_DIR (default
$XDG_CACHE_HOME/schoolctl, ~/.cache/schoolctl): the folder 0700, the files 0600 and written
atomically. SCHOOLCTL_CACHE_DIR=off turns the cache off (set but empty is a mistake, exit 2, as
for every path setting). A failure to write is silent; an entry that cannot be read, is corrupt,
or is not the user's own with mode 0600 is a miss. The folder may be deleted at any time.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import sys
import time
from collections.abc import Callable

TYPE_CHECKING = False  # a hit imports neither typing nor datetime
if TYPE_CHECKING:
    from datetime import date
    from typing import IO, Any, NoReturn

FORMAT = 1
OFF = "off"
ENV = "SCHOOLCTL_CACHE_DIR"
# the packages of schoolctl, each a folder when installed editable (in a wheel, all under schoolctl/)
PACKAGES = ("schoolctl", "schoolctl.cli", "schoolctl.audit", "schoolctl.deploy", "schoolctl.inventories",
            "schoolctl.templates")
# the environment that can change what the command prints, besides SCHOOLCTL_*
ENV_PREFIXES = ("SCHOOLCTL_", "LC_", "PYDANTIC_")
ENV_NAMES = ("TZ", "HOME", "LANG", "LANGUAGE", "PYTHONIOENCODING", "PYTHONUTF8", "PYTHONWARNINGS",
             # rich's (rich.console.Console: colour, width, terminal detection)
             "COLUMNS", "LINES", "NO_COLOR", "FORCE_COLOR", "TERM", "COLORTERM", "TTY_COMPATIBLE",
             "TTY_INTERACTIVE", "JUPYTER_COLUMNS", "JUPYTER_LINES")
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_MAX_ENTRY = 16 * 1024 * 1024

_recording: _Recorder | None = None  # the run being recorded: the audit hook is a no-op without one
_hooked = False                      # sys.addaudithook cannot be undone: added once per process
_real_stat, _real_lstat = os.stat, os.lstat


# --- where, and under which name ----------------------------------------------------------------

def directory() -> str | None:
    """The cache's folder: SCHOOLCTL_CACHE_DIR, else $XDG_CACHE_HOME/schoolctl (an absolute
    XDG_CACHE_HOME only, as the XDG spec says), else ~/.cache/schoolctl; None when it is off
    (`off`, or set but empty, which the command itself then refuses)."""
    value = os.environ.get(ENV)
    if value is not None:
        return None if value.strip() in ("", OFF) else os.path.abspath(os.path.expanduser(value))
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(xdg):
        home = os.path.expanduser("~")
        if not os.path.isabs(home):
            return None
        xdg = os.path.join(home, ".cache")
    return os.path.join(xdg, "schoolctl")


def _terminal_size() -> list[int] | None:
    """The terminal's size as rich reads it: of the first of stdin, stdout, stderr that has one."""
    for fd in (0, 1, 2):
        try:
            return list(os.get_terminal_size(fd))
        except (AttributeError, ValueError, OSError):
            continue
    return None


def _isatty(fd: int) -> bool:
    try:
        return os.isatty(fd)
    except OSError:
        return False


def settings(verb: str, argv: list[str]) -> dict[str, Any]:
    """Everything outside the files read that can change the command's output (the key)."""
    streams = [[getattr(s, "encoding", None), getattr(s, "errors", None)] for s in (sys.stdout, sys.stderr)]
    return {
        "verb": verb, "argv": argv, "cwd": os.getcwd(),
        "env": {k: v for k, v in sorted(os.environ.items()) if k.startswith(ENV_PREFIXES) or k in ENV_NAMES},
        # the interpreter and its environment (python or python3, links to one program: one key)
        "python": [os.path.realpath(sys.executable), sys.prefix, sys.version, sys.path, sys.flags.optimize,
                   sys.flags.dev_mode, sys.flags.utf8_mode, sys.warnoptions],
        "terminal": [[_isatty(fd) for fd in (0, 1, 2)], _terminal_size(), streams],
    }


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, ensure_ascii=True).encode()).hexdigest()


# --- the code ----------------------------------------------------------------------------------

def package_roots() -> list[tuple[str, str]]:
    """(package, folder) of each of schoolctl's PACKAGES that is not inside another's folder."""
    import importlib.util

    found: list[tuple[str, str]] = []
    for name in PACKAGES:
        module = sys.modules.get(name)
        spec = None if module is not None else importlib.util.find_spec(name)
        paths = list(getattr(module, "__path__", None) or (spec and spec.submodule_search_locations) or [])
        found += [(name, os.path.abspath(p)) for p in paths]
    return [(name, folder) for name, folder in found
            if not any(folder != other and folder.startswith(other + os.sep) for _, other in found)]


def _py_files(folder: str, prefix: str, out: list[str]) -> None:
    with os.scandir(folder) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            if entry.is_dir(follow_symlinks=False):
                if entry.name != "__pycache__":
                    _py_files(entry.path, f"{prefix}/{entry.name}", out)
            elif entry.name.endswith(".py"):
                st = entry.stat()
                out.append(f"{prefix}/{entry.name} {st.st_size} {st.st_mtime_ns}")


def distributions() -> list[str]:
    """The *.dist-info and *.egg-info names of every site-packages folder on sys.path: each
    installed library's name and version (pydantic-2.14.4.dist-info), schoolctl's own too."""
    names: list[str] = []
    for folder in sys.path:
        if os.path.basename(folder) in ("site-packages", "dist-packages") and os.path.isdir(folder):
            names += sorted(n for n in os.listdir(folder) if n.endswith((".dist-info", ".egg-info")))
    return names


def _version(dists: list[str], name: str) -> str | None:
    """`name`'s installed version, from its dist-info folder's name (importlib.metadata is slower)."""
    for n in dists:
        dist, _, rest = n.partition("-")
        if dist.lower().replace("_", "-") == name:
            return rest.rsplit(".", 1)[0]
    return None


def code_fingerprint() -> str:
    """The digest of the code that makes the result: schoolctl's .py files (path, size, mtime_ns),
    schoolctl's, pydantic's and every library's version, Python's version."""
    files: list[str] = []
    for name, folder in package_roots():
        files.append(f"{name} {folder}")
        _py_files(folder, name, files)
    dists = distributions()
    return _digest({"files": files, "dists": dists, "schoolctl": _version(dists, "schoolctl"),
                    "pydantic": _version(dists, "pydantic"), "python": sys.version, "format": FORMAT})


# --- recording a run ---------------------------------------------------------------------------

def _kind(path: str, follow: bool = True) -> str:
    """What `path` is: missing, file, folder, link, other, or error (it cannot be looked at)."""
    try:
        mode = (_real_stat(path) if follow else _real_lstat(path)).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return "missing"
    except (OSError, ValueError):
        return "error"
    return _kind_of(mode)


def _kind_of(mode: int) -> str:
    return ("file" if stat.S_ISREG(mode) else "folder" if stat.S_ISDIR(mode)
            else "link" if stat.S_ISLNK(mode) else "other")


def _path(value: Any) -> str | None:
    """An audited path as an absolute str; None for a file descriptor."""
    if value is None:
        return os.getcwd()
    if isinstance(value, int):
        return None
    return os.path.abspath(os.fsdecode(os.fspath(value)))


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


class _Tee:
    """sys.stdout or sys.stderr while a run is recorded: what is written goes to the stream, and
    is noted; everything else is the stream's own."""

    def __init__(self, stream: IO[str], fd: int, recorder: _Recorder) -> None:
        self._stream, self._fd, self._recorder = stream, fd, recorder

    def write(self, text: str) -> int:
        n = self._stream.write(text)
        self._recorder.wrote(self._fd, text)
        return n

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    @property
    def buffer(self) -> Any:  # bytes written there would not be in the recorded text
        self._recorder.refuse("wrote to a binary stream")
        return self._stream.buffer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class _Recorder:
    """What one run reads, lists, looks at and writes, noted while it runs (start/stop)."""

    def __init__(self) -> None:
        self.opened: dict[str, tuple[int, int, int]] = {}   # file -> (size, mtime_ns, inode) when opened
        self.listed: dict[str, int] = {}                     # folder -> mtime_ns when listed
        self.looked: dict[tuple[str, bool], str] = {}        # (path, follow symlinks) -> kind
        self.days: list[list[Any]] = []                      # [zone, day, first second, end second]
        self.output: list[list[Any]] = []                    # [1 or 2, text], in order
        self.refused: str | None = None                      # why the run cannot be reused
        self.skip: list[str] = []                            # library folders: not inputs
        self.code: list[str] = []                            # schoolctl's folders: their .py are code
        self.local: list[Any] = []                            # the local day, when the run started
        self.busy = False
        self._streams: tuple[Any, Any] = (None, None)

    def refuse(self, why: str) -> None:
        self.refused = self.refused or why

    # the run's events

    def wrote(self, fd: int, text: str) -> None:
        if self.output and self.output[-1][0] == fd:
            self.output[-1][1] += text
        else:
            self.output.append([fd, text])

    def _ignored(self, path: str) -> bool:
        if any(_within(path, f) for f in self.skip) or f"{os.sep}__pycache__{os.sep}" in path:
            return True
        return path.endswith((".py", ".pyc")) and any(_within(path, f) for f in self.code)

    def event(self, event: str, args: tuple[Any, ...]) -> None:
        """An audit event: `open` (a file read, or written), `os.listdir`/`os.scandir`."""
        if event == "open":
            path = _path(args[0])
            if path is None or self._ignored(path):
                return
            mode, flags = (*args[1:3], None, None)[:2]
            if (isinstance(mode, str) and any(c in mode for c in "wax+")) or (isinstance(flags, int)
                                                                               and flags & _WRITE_FLAGS):
                self.refuse(f"wrote {path}")
                return
            try:
                st = _real_stat(path)
            except (FileNotFoundError, NotADirectoryError):
                self.looked[(path, True)] = "missing"
                return
            if stat.S_ISREG(st.st_mode):
                self.opened.setdefault(path, (st.st_size, st.st_mtime_ns, st.st_ino))
            elif stat.S_ISDIR(st.st_mode):
                self.looked[(path, True)] = "folder"
            else:
                self.refuse(f"read {path}, not a regular file")
        elif event in ("os.listdir", "os.scandir"):
            path = _path(args[0] if args else None)
            if path is None:
                self.refuse("listed a folder by its descriptor")
            elif not any(_within(path, f) for f in self.skip) and path not in self.listed:
                try:
                    self.listed[path] = _real_stat(path).st_mtime_ns
                except (FileNotFoundError, NotADirectoryError):  # the listing fails: the run sees none
                    self.looked[(path, True)] = _kind(path)

    def stat_seen(self, path: Any, follow: bool, kwargs: dict[str, Any], result: Any, error: Exception | None) -> None:
        """os.stat or os.lstat was called on `path` (by the run) and gave `result` or `error`."""
        if kwargs.get("dir_fd") is not None:
            self.refuse("looked at a path relative to a folder descriptor")
            return
        p = _path(path)
        if p is None or self._ignored(p):
            return
        if error is not None:
            kind = "missing" if isinstance(error, FileNotFoundError | NotADirectoryError) else "error"
        else:
            kind = _kind_of(result.st_mode)
        self.looked.setdefault((p, follow), kind)

    def note_day(self, zone: str, day: date) -> None:
        """The run judged dates by `day` in the time zone `zone` (an IANA name)."""
        from datetime import datetime, timedelta
        from datetime import time as midnight
        from zoneinfo import ZoneInfo

        tz = ZoneInfo(zone)
        # the day's first and last second (both readings of a midnight a clock change repeats or skips)
        first = max(datetime.combine(day, midnight(), tzinfo=tz).replace(fold=f).timestamp() for f in (0, 1))
        end = min(datetime.combine(day + timedelta(days=1), midnight(), tzinfo=tz).replace(fold=f).timestamp()
                  for f in (0, 1))
        entry = [zone, day.isoformat(), first, end]
        if entry not in self.days:
            self.days.append(entry)

    # start and stop

    def start(self) -> None:
        import sysconfig

        global _recording, _hooked
        names = ("stdlib", "platstdlib", "purelib", "platlib")
        prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
        skip = {sysconfig.get_paths()[n] for n in names}
        skip |= {sysconfig.get_paths(vars={"base": p, "platbase": p})[n] for p in prefixes for n in names}
        skip |= {p for p in sys.path if p and any(_within(os.path.abspath(p), x) for x in prefixes)}
        if sys.pycache_prefix:
            skip.add(sys.pycache_prefix)
        self.skip = sorted(os.path.abspath(p) for p in skip)
        self.code = [folder for _, folder in package_roots()]
        self.local = _local_day()
        if sys.stdout is None or sys.stderr is None:
            raise RuntimeError("no stdout or stderr to record")
        if not _hooked:
            sys.addaudithook(_audit)
            _hooked = True
        self._streams = (sys.stdout, sys.stderr)
        sys.stdout, sys.stderr = _Tee(sys.stdout, 1, self), _Tee(sys.stderr, 2, self)  # type: ignore[assignment]
        os.stat, os.lstat = _watched_stat, _watched_lstat
        _recording = self

    def stop(self) -> None:
        global _recording
        _recording = None
        os.stat, os.lstat = _real_stat, _real_lstat
        for name, original in zip(("stdout", "stderr"), self._streams, strict=True):
            if isinstance(getattr(sys, name), _Tee):
                setattr(sys, name, original)
            else:
                self.refuse(f"replaced sys.{name}")

    def entry(self, key: str, code: str, verb: str, argv: list[str]) -> dict[str, Any] | None:
        """The entry to store (None: the run cannot be reused, self.refused says why)."""
        if self.refused is None and _local_day() != self.local:
            self.refuse("the day changed while it ran")
        try:
            secret = _secret_places()
        except Exception:
            secret, self.refused = [], self.refused or "cannot tell where the secrets are"
        for path in [*self.opened, *self.listed]:
            real = os.path.realpath(path)
            if any(_within(real, s) for s in secret):
                self.refuse("opened the vault key or the secrets folder")
        files = []
        for path, seen in sorted(self.opened.items()):
            st = _real_stat(path)
            if (st.st_size, st.st_mtime_ns, st.st_ino) != seen:
                self.refuse(f"{path} changed while it ran")
                break
            files.append([path, st.st_size, st.st_mtime_ns, _sha256(path)])
        folders = []
        for path, seen in sorted(self.listed.items()):
            names = sorted(os.listdir(path))
            if _real_stat(path).st_mtime_ns != seen:
                self.refuse(f"{path} changed while it ran")
            folders.append([path, names])
        if self.refused is not None:
            return None
        return {"format": FORMAT, "key": key, "verb": verb, "argv": argv, "code": code, "files": files,
                "folders": folders, "looked": [[p, follow, kind] for (p, follow), kind in sorted(self.looked.items())],
                "days": [*self.days, self.local], "exit": 0, "output": self.output}


def _local_day() -> list[Any]:
    """["", today, its first second, its end] in the local time zone (TZ, /etc/localtime)."""
    now = time.localtime()
    first = time.mktime((now.tm_year, now.tm_mon, now.tm_mday, 0, 0, 0, 0, 0, -1))
    end = time.mktime((now.tm_year, now.tm_mon, now.tm_mday + 1, 0, 0, 0, 0, 0, -1))
    return ["", time.strftime("%Y-%m-%d", now), first, end]


def _secret_places() -> list[str]:
    """The vault key file and the secrets folder, symlinks resolved."""
    from schoolctl.secrets import default_key_file, default_secrets_dir

    return [os.path.realpath(os.path.abspath(p)) for p in (default_key_file(), default_secrets_dir())]


def _audit(event: str, args: tuple[Any, ...]) -> None:
    recorder = _recording
    if recorder is None or recorder.busy or event not in ("open", "os.listdir", "os.scandir"):
        return
    recorder.busy = True
    try:
        recorder.event(event, args)
    except Exception as e:  # never the run's failure: only a run not reused
        recorder.refuse(f"cannot record {event}: {e}")
    finally:
        recorder.busy = False


def _watch(real: Callable[..., Any], follow: bool) -> Callable[..., Any]:
    def watched(path: Any, *args: Any, **kwargs: Any) -> Any:
        recorder = _recording
        if recorder is None or recorder.busy:
            return real(path, *args, **kwargs)
        try:
            result = real(path, *args, **kwargs)
        except Exception as e:
            _seen(recorder, path, follow and kwargs.get("follow_symlinks", True), kwargs, None, e)
            raise
        _seen(recorder, path, follow and kwargs.get("follow_symlinks", True), kwargs, result, None)
        return result

    watched.__name__, watched.__doc__ = real.__name__, real.__doc__
    return watched


def _seen(recorder: _Recorder, path: Any, follow: bool, kwargs: dict[str, Any], result: Any,
          error: Exception | None) -> None:
    recorder.busy = True
    try:
        recorder.stat_seen(path, follow, kwargs, result, error)
    except Exception as e:
        recorder.refuse(f"cannot record a stat: {e}")
    finally:
        recorder.busy = False


_watched_stat, _watched_lstat = _watch(_real_stat, True), _watch(_real_lstat, False)


def note_day(zone: str, day: date) -> None:
    """Tell the recorder (if a run is recorded) that the run judged dates by `day` in `zone`:
    its entry is reused on that day only."""
    recorder = _recording
    if recorder is not None:
        try:
            recorder.note_day(zone, day)
        except Exception as e:  # never the run's failure: only a run not reused
            recorder.refuse(f"cannot note the day in {zone!r}: {e}")


# --- reusing an entry ----------------------------------------------------------------------------

def _read(path: str) -> dict[str, Any] | None:
    """The entry in `path`, if it is the user's own regular file, mode 0600, and valid JSON."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if (not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077
                or st.st_size > _MAX_ENTRY):
            return None
        with os.fdopen(fd, "rb", closefd=False) as f:
            entry = json.loads(f.read())
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)
    return entry if isinstance(entry, dict) else None


def _still(entry: dict[str, Any], key: str, code: Callable[[], str]) -> bool:
    """Whether `entry` is the result of running now: same key, day, paths, folders, files and code."""
    if entry.get("format") != FORMAT or entry.get("key") != key or entry.get("exit") != 0:
        return False
    now = time.time()
    if not all(first <= now < end for _, _, first, end in entry["days"]):
        return False
    if not all(_kind(p, follow) == kind for p, follow, kind in entry["looked"]):
        return False
    for path, names in entry["folders"]:
        try:
            if sorted(os.listdir(path)) != names:
                return False
        except OSError:
            return False
    for path, _, _, digest in entry["files"]:
        try:
            if _sha256(path) != digest:
                return False
        except OSError:
            return False
    return entry["code"] == code() and all(fd in (1, 2) and isinstance(t, str) for fd, t in entry["output"])


def _replay(entry: dict[str, Any]) -> NoReturn:
    """Write the recorded output as the run wrote it, and exit with its status."""
    try:
        for fd, text in entry["output"]:
            stream = sys.stdout if fd == 1 else sys.stderr
            stream.write(text)
            stream.flush()
    except BrokenPipeError:  # as cli/output.py: quietly, exit 1
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        raise SystemExit(1) from None
    raise SystemExit(entry["exit"])


def _store(path: str, entry: dict[str, Any]) -> None:
    """Write `entry` to `path` atomically (a temporary file beside it, then os.replace), 0600 in a
    0700 folder; any failure is silent."""
    import tempfile

    folder = os.path.dirname(path)
    tmp = None
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".entry-", suffix=".tmp")  # 0600
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(entry, f, ensure_ascii=False)
        os.replace(tmp, path)
        tmp = None
    except Exception:
        pass
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def _holds(entry: dict[str, Any], key: str, code: dict[str, str]) -> bool:
    """`_still`, any malformed entry being a miss."""
    try:
        return _still(entry, key, lambda: code.setdefault("now", code_fingerprint()))
    except Exception:
        return False


def _keep(path: str, key: str, before: str, recorder: _Recorder, verb: str, argv: list[str]) -> None:
    """Store the successful run's entry, unless it cannot be reused; silently."""
    try:
        if code_fingerprint() == before:  # else the code changed while it ran
            entry = recorder.entry(key, before, verb, argv)
            if entry is not None:
                _store(path, entry)
    except Exception:
        pass


def run(verb: str, argv: list[str], command: Callable[[], object]) -> None:
    """Run `command` (the CLI on `argv`, which runs `verb`; it ends with SystemExit) through the
    cache: replay a recorded result that still holds, else run it, recording its result when it
    succeeds. The command runs once (or not at all, on a hit) whatever the cache meets."""
    try:
        folder = directory()
        key = _digest(settings(verb, argv)) if folder is not None else ""
    except Exception:  # e.g. the working folder was removed: no cache, the command says the rest
        folder = None
    if folder is None:
        command()
        return
    path = os.path.join(folder, f"{verb}-{key[:40]}.json")
    code: dict[str, str] = {}
    entry = _read(path)
    if entry is not None and _holds(entry, key, code):
        _replay(entry)
    recorder = _Recorder()
    try:
        before = code.setdefault("now", code_fingerprint())
        recorder.start()
    except Exception:
        command()
        return
    status: object = None
    try:
        command()
        status = 0
    except SystemExit as e:
        status = 0 if e.code is None else e.code
        raise
    finally:
        recorder.stop()
        if status == 0:
            _keep(path, key, before, recorder, verb, argv)
