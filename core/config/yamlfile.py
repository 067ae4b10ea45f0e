"""Read a YAML file keeping where every key and value stands, so errors can name the line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from schoolctl.config.problems import Problem


def read_yaml(path: Path, shown: str) -> tuple[Any, list[Problem]]:
    """Parse `path`; return (document, problems). `shown` is the path as errors print it."""
    try:
        raw = path.read_bytes()
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
    try:
        doc = yaml.load(text)
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
