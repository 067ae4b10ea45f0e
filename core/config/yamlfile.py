"""Read a YAML file keeping where every key and value stands, so errors can name the line."""

from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path
from typing import Any

from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.cyaml import CParser as Parser  # libyaml: scanning and parsing in C (PyYAML's wheels carry it)
from yaml.error import MarkedYAMLError, YAMLError
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, ScalarNode, SequenceNode
from yaml.reader import ReaderError
from yaml.resolver import BaseResolver

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


class Refused(YAMLError):
    """A value the reader does not build: a YAML tag other than the core ones, a list as a key, a
    repeated key, a merge key (`<<`) that is not given mappings."""

    def __init__(self, mark: Any, message: str, hint: str) -> None:
        super().__init__(message)
        self.mark, self.message, self.hint = mark, message, hint


class _Core(BaseResolver):
    """YAML 1.2's core schema (what the files mean in any current YAML tool): `yes`, `on` and `no`
    are words, `0755` is 755; dates and merge keys (`<<`) as YAML 1.1 had them."""


for _tag, _regexp, _first in (
    ("bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("float", r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                  |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                  |[-+]?\.[0-9_]+(?:[eE][-+][0-9]+)?
                  |[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$""", "-+0123456789."),
    ("int", r"^(?:[-+]?0b[0-1_]+|[-+]?0o?[0-7_]+|[-+]?[0-9_]+|[-+]?0x[0-9a-fA-F_]+)$", "-+0123456789"),
    ("merge", r"^(?:<<)$", "<"),
    ("null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
    ("timestamp", r"""^(?:[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]
                      |[0-9][0-9][0-9][0-9]-[0-9][0-9]?-[0-9][0-9]?(?:[Tt]|[ \t]+)[0-9][0-9]?:[0-9][0-9]
                       :[0-9][0-9](?:\.[0-9]*)?(?:[ \t]*(?:Z|[-+][0-9][0-9]?(?::[0-9][0-9])?))?)$""", "0123456789"),
):
    _Core.add_implicit_resolver(f"tag:yaml.org,2002:{_tag}", re.compile(_regexp, re.X), list(_first))


class _Reader(Composer, Parser, _Core):
    """PyYAML's composer over libyaml's parser (C), counting as it goes: every node, every alias as
    all it stands for (an alias bomb of a few lines stands for a billion values), and the depth of
    nesting, aliases included. It stops at the first node past a limit, before the document is built."""

    def __init__(self, text: str) -> None:
        Parser.__init__(self, text)
        Composer.__init__(self)
        _Core.__init__(self)
        self.nodes = self.depth = 0
        self.sizes: dict[int, tuple[Any, int, int]] = {}   # id(node) -> (node, values it stands for, depth)

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, AliasEvent):
            target = self.anchors.get(event.anchor)
            if target is not None:     # an undefined alias is the composer's to report
                self._alias(event, target)
            return super().compose_node(parent, index)
        if self.depth + 1 > MAX_DEPTH:
            raise DocumentTooBig(event.start_mark, f"the document nests deeper than {MAX_DEPTH} levels", DEPTH_HINT)
        self._count(1, event.start_mark)
        self.anchors.pop(event.anchor, None)    # YAML lets an anchor be set again: later aliases mean the new one
        self.depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self.depth -= 1
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


# --- building the values, with where each stands ---------------------------------------------------

class Mapping(dict):
    """A mapping as read, with where each key and value starts (line, column; from 0)."""

    __slots__ = ("keys_at", "values_at")

    def __init__(self) -> None:
        super().__init__()
        self.keys_at: dict[Any, tuple[int, int]] = {}
        self.values_at: dict[Any, tuple[int, int]] = {}


class Sequence(list):
    """A list as read, with where each item starts (line, column; from 0)."""

    __slots__ = ("items_at",)

    def __init__(self) -> None:
        super().__init__()
        self.items_at: list[tuple[int, int]] = []


CORE = "tag:yaml.org,2002:"
TAG_HINT = "schoolctl's files use plain YAML values: remove the tag"


def _at(node: Any) -> tuple[int, int]:
    return node.start_mark.line, node.start_mark.column


def _scalar(node: ScalarNode) -> Any:
    tag, text = node.tag.removeprefix(CORE), node.value
    try:
        if tag == "str":
            return text
        if tag == "null" and text in ("", "~", "null", "Null", "NULL"):
            return None
        if tag == "bool" and text.lower() in ("true", "false"):
            return text.lower() == "true"
        if tag == "int":
            digits = text.replace("_", "")
            sign, digits = (-1, digits[1:]) if digits[:1] == "-" else (1, digits.removeprefix("+"))
            base = {"0b": 2, "0o": 8, "0x": 16}.get(digits[:2].lower(), 10)
            return sign * int(digits[2:] if base != 10 else digits, base)
        if tag == "float":
            special = {".inf": "inf", "+.inf": "inf", "-.inf": "-inf", ".nan": "nan"}
            return float(special.get(text.lower(), text.replace("_", "")))
        if tag == "timestamp":
            return SafeConstructor.construct_yaml_timestamp(_TIMESTAMPS, node)
        if tag == "merge":
            return text
    except (ValueError, TypeError, AttributeError):   # a date past its month's days, `!!int ten`...
        what = {"int": "number", "float": "number", "timestamp": "date (YYYY-MM-DD)"}.get(tag, f"!!{tag}")
        raise Refused(node.start_mark, f"'{text}' is not a valid {what}",
                      "quote the value to keep it as text" if tag != "timestamp" else
                      "write the date as YYYY-MM-DD, or quote the value to keep it as text") from None
    raise Refused(node.start_mark, f"the YAML tag {node.tag} is not used here", TAG_HINT)


_TIMESTAMPS = SafeConstructor()


def _build(node: Any, memo: dict[int, Any]) -> Any:
    """The value of `node`; an alias's value is built once (`memo`)."""
    if id(node) in memo:
        return memo[id(node)]
    if isinstance(node, ScalarNode):
        value = _scalar(node)
    elif isinstance(node, SequenceNode):
        if node.tag != CORE + "seq":
            raise Refused(node.start_mark, f"the YAML tag {node.tag} is not used here", TAG_HINT)
        value = Sequence()
        for item in node.value:
            value.append(_build(item, memo))
            value.items_at.append(_at(item))
    else:
        value = _mapping(node, memo)
    memo[id(node)] = value
    return value


def _mapping(node: MappingNode, memo: dict[int, Any]) -> Mapping:
    if node.tag != CORE + "map":
        raise Refused(node.start_mark, f"the YAML tag {node.tag} is not used here", TAG_HINT)
    value, merged = Mapping(), Mapping()
    for k, v in node.value:
        if k.tag == CORE + "merge":
            sources = v.value if isinstance(v, SequenceNode) else [v]
            if not all(isinstance(s, MappingNode) for s in sources):
                raise Refused(k.start_mark, "a merge key (<<) takes a mapping or a list of mappings",
                              "write `<<: *name` with an anchored mapping, or the keys themselves")
            for source in reversed(sources):      # the first mapping listed wins, as in YAML 1.1
                built = _build(source, memo)
                merged.update(built)
                merged.keys_at.update(built.keys_at)
                merged.values_at.update(built.values_at)
            continue
        key = _build(k, memo)
        if isinstance(key, (dict, list)):
            raise Refused(k.start_mark, "a key must be a single value, not a list or a mapping",
                          "write the key as a plain word")
        if key in value:
            raise Refused(k.start_mark, f"duplicate key '{key}'",
                          "a key may appear only once in a mapping; remove or merge the repeats")
        value[key] = _build(v, memo)
        value.keys_at[key], value.values_at[key] = _at(k), _at(v)
    for key in (k for k in merged if k not in value):   # in the merged mappings' order: messages stay stable
        value[key] = merged[key]
        value.keys_at[key], value.values_at[key] = merged.keys_at[key], merged.values_at[key]
    return value


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
    reader = None
    try:
        reader = _Reader(text)
        root = reader.get_single_node()
        doc = None if root is None else _build(root, {})
    except (DocumentTooBig, Refused) as e:
        line, col = (e.mark.line + 1, e.mark.column + 1) if e.mark else (1, 1)
        return None, [Problem(shown, line, col, e.message, e.hint)]
    except ReaderError as e:     # a control character: libyaml refuses the text before parsing it
        at = raw[: e.position].decode("utf-8", "ignore")   # libyaml counts bytes
        line, col = at.count("\n") + 1, len(at) - (at.rfind("\n") + 1) + 1
        return None, [Problem(shown, line, col, f"the file contains a character YAML does not allow "
                              f"(#x{e.character if isinstance(e.character, int) else ord(e.character):04x})",
                              "remove it; a config file is plain text")]
    except MarkedYAMLError as e:
        at_end = "end of stream" in (e.problem or "") and e.context_mark is not None
        mark = e.context_mark if at_end else (e.problem_mark or e.context_mark)
        what = (f"{e.context}: {e.problem}" if at_end else (e.problem or e.context or "invalid YAML")).strip()
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        hint = ("YAML indents with spaces, never tabs" if "tab" in what or "\\t" in what or "\t" in what
                else "check indentation, colons and quotes on this line and the one before")
        return None, [Problem(shown, line, col, f"YAML syntax error: {what}", hint)]
    except (YAMLError, ValueError, RecursionError) as e:
        return None, [Problem(shown, 1, 1, f"YAML error: {str(e).splitlines()[0] if str(e) else type(e).__name__}",
                              "check the file's syntax")]
    finally:
        if reader is not None:
            reader.dispose()
    return doc, []


def locate(doc: Any, loc: tuple[Any, ...], on_key: bool = False) -> tuple[int, int]:
    """Line and column (from 1) of the node at `loc` in a document read by read_yaml: the value's
    position, or the key's with `on_key`. Falls back to the nearest enclosing node."""
    line, col = 1, 1
    node = doc
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(node, Mapping) and part in node:
            kl, kc = node.keys_at[part]
            if last and on_key:
                return kl + 1, kc + 1
            vl, vc = node.values_at[part]
            line, col = (vl + 1, vc + 1) if not isinstance(node[part], (Mapping, Sequence)) else (kl + 1, kc + 1)
            node = node[part]
        elif isinstance(node, Sequence) and isinstance(part, int) and 0 <= part < len(node):
            il, ic = node.items_at[part]
            line, col = il + 1, ic + 1
            node = node[part]
        else:
            break
    return line, col


def plain(node: Any) -> Any:
    """The document as plain dicts and lists (an alias's value copied where it is used)."""
    if isinstance(node, dict):
        return {k: plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [plain(v) for v in node]
    return node
