"""Read a YAML file keeping where every key and value stands, so errors can name the line."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.composer import Composer
from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import AliasEvent
from ruamel.yaml.nodes import MappingNode, SequenceNode

from schoolctl.config.problems import Problem

MIB = 1024 * 1024
MAX_BYTES = 2 * MIB      # the default; the loader passes the limit of each kind of file
MAX_DEPTH = 50           # levels of nesting, the top mapping being level 1 (a school file needs 5)
MAX_NODES = 10_000       # keys, values and list items, every alias counted as all it stands for


# --- reading a file, bounded ---------------------------------------------------------------------

class FileRefused(Exception):
    """A file refused before its content is read."""


class NotRegularFile(FileRefused):
    """A FIFO, a device or a socket: reading one may wait for ever or never end."""


class FileTooLarge(FileRefused):
    """Larger than allowed: `size` as the file system told, None when it grew while being read."""

    def __init__(self, size: int | None, limit: int) -> None:
        self.size, self.limit = size, limit
        super().__init__(f"{size} bytes" if size is not None else f"more than {limit} bytes")


def size_text(limit: int) -> str:
    """`1048576 bytes (1 MiB)`; `50 bytes`."""
    return f"{limit} bytes ({limit // MIB} MiB)" if limit >= MIB and limit % MIB == 0 else f"{limit} bytes"


_SPECIAL = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
            (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _check_stat(st: os.stat_result, path: Path, limit: int) -> None:
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    if not stat.S_ISREG(st.st_mode):
        kind = next((name for test, name in _SPECIAL if test(st.st_mode)), "a special file")
        raise NotRegularFile(f"it is {kind}, not a regular file")
    if st.st_size > limit:
        raise FileTooLarge(st.st_size, limit)


def _check_path(path: Path, limit: int) -> None:
    _check_stat(os.stat(path), path, limit)


def read_bounded(path: Path, limit: int) -> bytes:
    """The bytes of `path`, a regular file of at most `limit` bytes. A FIFO, device or socket is
    refused (NotRegularFile) before it is opened, a larger file (FileTooLarge) before it is read, a
    directory as IsADirectoryError; other failures are OSError. Should the path change between the
    check and the open, the open does not wait (O_NONBLOCK) and what was opened is checked again."""
    _check_path(path, limit)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    try:
        _check_stat(os.fstat(fd), path, limit)
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(limit + 1)      # never more, even if the file grew since
    finally:
        os.close(fd)
    if len(data) > limit:
        raise FileTooLarge(None, limit)
    return data


# --- composing a document, bounded ---------------------------------------------------------------

class DocumentTooBig(YAMLError):
    """A document past MAX_DEPTH or MAX_NODES, or an alias that would make it so."""

    def __init__(self, mark: Any, message: str, hint: str) -> None:
        super().__init__(message)
        self.mark, self.message, self.hint = mark, message, hint


class BoundedComposer(Composer):
    """ruamel's composer, counting as it goes: every node, every alias as all it stands for (an alias
    bomb of a few lines stands for a billion values), and the depth of nesting, aliases included. It
    stops at the first node past a limit, before the document is built."""

    def __init__(self, loader: Any = None) -> None:
        super().__init__(loader)
        self.nodes = 0
        self.sizes: dict[int, tuple[Any, int, int]] = {}   # id(node) -> (node, values it stands for, depth)

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.parser.peek_event()
        if isinstance(event, AliasEvent):
            target = self.anchors.get(event.anchor)
            if target is not None:     # an undefined alias is ruamel's to report
                self._alias(event, target)
            return super().compose_node(parent, index)
        if self.depth + 1 > MAX_DEPTH:
            raise DocumentTooBig(event.start_mark, f"the document nests deeper than {MAX_DEPTH} levels", DEPTH_HINT)
        self._count(1, event.start_mark)
        node = super().compose_node(parent, index)
        if isinstance(node, MappingNode):
            children = [c for pair in node.value for c in pair]
        elif isinstance(node, SequenceNode):
            children = node.value
        else:
            children = []
        sizes = [self.sizes[id(c)] for c in children]
        self.sizes[id(node)] = (node, 1 + sum(s[1] for s in sizes), 1 + max((s[2] for s in sizes), default=0))
        return node

    def _alias(self, event: Any, target: Any) -> None:
        known = self.sizes.get(id(target))
        if known is None or known[0] is not target:
            raise DocumentTooBig(event.start_mark, f"the alias *{event.anchor} stands for a value that contains "
                                 "the alias itself", "an alias may only repeat a value that is complete before it")
        _, size, depth = known
        if self.nodes + size > MAX_NODES:
            raise DocumentTooBig(event.start_mark, f"the alias *{event.anchor} would expand the document past "
                                 f"{MAX_NODES} values (it stands for {size})",
                                 "YAML aliases may repeat a few values, not multiply the file; write the values out")
        if self.depth + depth > MAX_DEPTH:
            raise DocumentTooBig(event.start_mark, f"the document nests deeper than {MAX_DEPTH} levels through "
                                 f"the alias *{event.anchor}", DEPTH_HINT)
        self.nodes += size

    def _count(self, n: int, mark: Any) -> None:
        self.nodes += n
        if self.nodes > MAX_NODES:
            raise DocumentTooBig(mark, f"the document has more than {MAX_NODES} values (keys, values and list items)",
                                 "a config file has a few hundred; is this the right file?")


DEPTH_HINT = "a config file needs fewer than ten; check the indentation and the brackets"


def read_yaml(path: Path, shown: str, max_bytes: int = MAX_BYTES,
              what: str = "a config file") -> tuple[Any, list[Problem]]:
    """Parse `path`; return (document, problems). `shown` is the path as errors print it; a file over
    `max_bytes` is refused unread, naming it as `what` ("a school file")."""
    try:
        raw = read_bounded(path, max_bytes)
    except NotRegularFile as e:
        return None, [Problem(shown, 1, 1, f"cannot read the file: {e}",
                              "a config file must be a plain file; replace it with one")]
    except FileTooLarge as e:
        size = f"{e.size} bytes, more" if e.size is not None else "more"
        return None, [Problem(shown, 1, 1, f"the file is too large: {size} than the {size_text(max_bytes)} {what} "
                              "may have", "a config file is a few hundred lines; is this the right file?")]
    except OSError as e:
        return None, [Problem(shown, 1, 1, f"cannot read the file: {e.strerror or e}",
                              "check that it exists and is readable")]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        col = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        return None, [Problem(shown, line, col, "the file is not valid UTF-8 text", "save it as UTF-8")]
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    yaml.Composer = BoundedComposer
    try:
        doc = yaml.load(text)
    except DocumentTooBig as e:
        line, col = (e.mark.line + 1, e.mark.column + 1) if e.mark else (1, 1)
        return None, [Problem(shown, line, col, e.message, e.hint)]
    except DuplicateKeyError as e:
        mark = e.problem_mark
        key = (e.problem or "").split('"')[1] if '"' in (e.problem or "") else "?"
        return None, [Problem(shown, mark.line + 1, mark.column + 1, f"duplicate key '{key}'",
                              "a key may appear only once in a mapping; remove or merge the repeats")]
    except MarkedYAMLError as e:
        at_end = "end of stream" in (e.problem or "") and e.context_mark is not None
        mark = e.context_mark if at_end else (e.problem_mark or e.context_mark)
        what = (f"{e.context}: {e.problem}" if at_end else (e.problem or e.context or "invalid YAML")).strip()
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        hint = ("YAML indents with spaces, never tabs" if "\\t" in what or "\t" in what
                else "check indentation, colons and quotes on this line and the one before")
        return None, [Problem(shown, line, col, f"YAML syntax error: {what}", hint)]
    except (YAMLError, ValueError, RecursionError) as e:
        return None, [Problem(shown, 1, 1, f"YAML error: {str(e).splitlines()[0] if str(e) else type(e).__name__}",
                              "check the file's syntax")]
    return doc, []


def locate(doc: Any, loc: tuple[Any, ...], on_key: bool = False) -> tuple[int, int]:
    """Line and column (from 1) of the node at `loc` in a document read by read_yaml: the value's
    position, or the key's with `on_key`. Falls back to the nearest enclosing node."""
    line, col = 1, 1
    node = doc
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(node, CommentedMap) and part in node:
            kl, kc = node.lc.key(part)
            if last and on_key:
                return kl + 1, kc + 1
            vl, vc = node.lc.value(part)
            line, col = (vl + 1, vc + 1) if not isinstance(node[part], (CommentedMap, CommentedSeq)) \
                else (kl + 1, kc + 1)
            node = node[part]
        elif isinstance(node, CommentedSeq) and isinstance(part, int) and 0 <= part < len(node):
            il, ic = node.lc.item(part)
            line, col = il + 1, ic + 1
            node = node[part]
        else:
            break
    return line, col


def plain(node: Any) -> Any:
    """The document as plain dicts, lists and scalars."""
    if isinstance(node, dict):
        return {plain(k): plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [plain(v) for v in node]
    if isinstance(node, str):
        return str(node)
    if isinstance(node, bool):
        return bool(node)
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    return node
