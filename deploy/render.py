"""Render templates/ with Jinja2, strictly: an undefined variable is an error, not an empty string.

Every value reaches its file escaped for that file's format, whatever validation let through
(defence in depth: the config model validates, the rendering does not rely on it):

- `js` (also `json`): a JSON literal, safe inside JavaScript, JSON, HOCON and an HTML <script>
  (`<`, `>`, `&`, U+2028/U+2029 escaped); `yaml`: a double-quoted YAML scalar; `properties`: a
  java.util.Properties value; `lua`: a Lua string literal; `sh`: one shell word (shlex.quote);
  `ldif(attr)`: an LDIF attribute line (deploy.identity.ldif_line); `html`: HTML text (line breaks
  as character references); HTML and XML templates (*.html.j2, *.xml.j2) autoescape besides.
- Formats with no escaping take a value only when it cannot change their structure, else a
  RenderError (schoolctl.errors: exit 2, nothing deployed; also a ValueError) names the value:
  `one_line` (no control character: no newline can add a line), `bare` (one token: no whitespace,
  quotes, `;`, `{`, `}`, `\\`, `$`, `#`, `%`), `dquoted` (the inside of a double-quoted string that
  has no escapes, returned with its quotes).
"""

from __future__ import annotations

import json
import re
import shlex
from functools import cache
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup, escape

from schoolctl.config.values import file_name_problem, host_problem
from schoolctl.errors import RenderError
from schoolctl.resources import templates

TEMPLATES = templates()

# C0 and C1 controls, DEL, and the Unicode line and paragraph separators (line ends in JavaScript)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NOT_BARE = re.compile(r"""[\s"'`\\;{}$#%]""")
_NOT_QUOTABLE = re.compile(r'["\\$`]')
# a proxy as APT, npm and curl take it: http(s)://[user[:password]@]host[:port][/]
_PROXY = re.compile(r"^https?://(?:[A-Za-z0-9._~%!*+,=-]+(?::[A-Za-z0-9._~%!*+,=-]*)?@)?"
                    r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)(?::[0-9]{1,5})?/?$")


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise RenderError(f"{what}: expected a text, got {type(value).__name__} {value!r}")
    return str(value)


def one_line(value: Any, what: str) -> str:
    """`value` as text when it holds no control character (newline, carriage return, tab, NUL,
    U+2028...): in a line-based format it can then never add a line. RenderError otherwise."""
    text = _text(value, what)
    if _CONTROL.search(text):
        raise RenderError(f"{what}: {text!r} holds a control character (a newline, tab, ...); it must be one line")
    return text


def bare(value: Any, what: str) -> str:
    """`value` when it is one token of a format without escaping (systemd units, nginx, deb822, ...):
    not empty, no control character, whitespace, quote, `;`, `{`, `}`, `\\`, `$`, `#` or `%`."""
    text = one_line(value, what)
    if not text or _NOT_BARE.search(text):
        raise RenderError(f"{what}: {text!r} cannot be written here: it must be one word without spaces, quotes "
                         "or any of ; { } \\ $ # %")
    return text


def dquoted(value: Any, what: str) -> str:
    """`"value"` for a double-quoted string of a format whose strings have no (reliable) escapes
    (nginx directives, nftables comments): refused when `value` holds a control character, `"`, `\\`,
    `$` or a backtick."""
    text = one_line(value, what)
    if _NOT_QUOTABLE.search(text):
        raise RenderError(f'{what}: {text!r} cannot be written here: no ", \\, $ or ` allowed')
    return f'"{text}"'


def plain_name(value: Any, what: str) -> str:
    """`value` when it is a plain file name (letters, digits, `._+-`, not starting with a dot or a
    dash, no `..`): safe as one path component and as one shell word. RenderError otherwise."""
    text = _text(value, what)
    problem = file_name_problem(text)  # the model's own check, again: the rendering does not rely on it
    if problem:
        raise RenderError(f"{what}: {text!r} is not a plain file name: {problem}")
    return text


def hostname(value: Any, what: str) -> str:
    """`value` when it is a host name (RFC 1123 labels) or an IP address: the model's own check."""
    text = _text(value, what)
    problem = host_problem(text)
    if problem:
        raise RenderError(f"{what}: {text!r} is not a host name: {'it holds a port' if problem == 'port' else problem}")
    return text


def proxy_url(value: Any, what: str) -> str:
    """`value` when it is a plain http(s) proxy URL (scheme, optional user:password, host, optional
    port): nothing that could end a quoted string or a line, or add a directive, in APT's, npm's
    or curl's settings. RenderError otherwise."""
    text = one_line(value, what)
    if not _PROXY.fullmatch(text):
        raise RenderError(f"{what}: {text!r} is not a plain proxy URL (http://host:port); refusing it")
    return text


def integer(value: Any, what: str) -> int:
    """`value` when it is an int (not a bool, not a text that looks like one)."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise RenderError(f"{what}: expected a whole number, got {value!r}")
    return value


# --- encoders (Jinja filters) ------------------------------------------------------------------

def js(value: Any) -> str:
    """A JSON literal that is also safe in JavaScript and inside an HTML <script>: ASCII only,
    `<`, `>`, `&` and U+2028/U+2029 as \\u escapes (`</script>` cannot close the script)."""
    text = json.dumps(value, ensure_ascii=True)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def yaml_str(value: Any) -> str:
    """A double-quoted YAML scalar (YAML 1.1 and 1.2): printable ASCII as is, `"` and `\\` escaped,
    everything else as \\uXXXX / \\UXXXXXXXX."""
    out = ['"']
    for c in _text(value, "YAML value"):
        if c in '"\\':
            out.append("\\" + c)
        elif " " <= c <= "~":
            out.append(c)
        elif ord(c) <= 0xFFFF:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(f"\\U{ord(c):08x}")
    out.append('"')
    return "".join(out)


_PROPERTIES_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\f": "\\f",
                       "=": "\\=", ":": "\\:", "#": "\\#", "!": "\\!"}


def properties(value: Any) -> str:
    """A java.util.Properties value (Properties.store's rules): `\\` and the line terminators
    escaped (a value never continues on, or adds, another line), leading whitespace kept by `\\ `,
    `=`, `:`, `#`, `!` escaped, anything outside printable ASCII as \\uXXXX (UTF-16)."""
    out = []
    for i, c in enumerate(_text(value, "properties value")):
        if c in _PROPERTIES_ESCAPES:
            out.append(_PROPERTIES_ESCAPES[c])
        elif c == " " and i == 0:
            out.append("\\ ")
        elif " " <= c <= "~":
            out.append(c)
        else:
            units = c.encode("utf-16-be")
            out += [f"\\u{int.from_bytes(units[j:j + 2], 'big'):04x}" for j in range(0, len(units), 2)]
    return "".join(out)


def lua(value: Any) -> str:
    """A Lua string literal (any Lua 5.x): printable ASCII as is, `"` and `\\` escaped, every other
    byte of the UTF-8 text as \\ddd."""
    out = ['"']
    for b in _text(value, "Lua value").encode():
        c = chr(b)
        if c in '"\\':
            out.append("\\" + c)
        elif 0x20 <= b <= 0x7E:
            out.append(c)
        else:
            out.append(f"\\{b:03d}")
    out.append('"')
    return "".join(out)


def html(value: Any) -> Markup:
    """HTML text or attribute value: `&`, `<`, `>`, `"`, `'` escaped (markupsafe), and line breaks as
    character references, so a value never adds a line to the page either."""
    return Markup(str(escape(value)).replace("\r", "&#13;").replace("\n", "&#10;"))


def sh(value: Any) -> str:
    """One shell word."""
    return shlex.quote(_text(value, "shell word"))


def _ldif(value: Any, attr: str) -> str:
    from schoolctl.deploy.identity import ldif_line  # identity imports this module

    return ldif_line(attr, _text(value, f"LDIF {attr}"))


@cache
def _env() -> Environment:
    env = Environment(loader=FileSystemLoader(TEMPLATES), undefined=StrictUndefined, keep_trailing_newline=True,
                      trim_blocks=True, lstrip_blocks=True,
                      autoescape=select_autoescape(enabled_extensions=("html.j2", "htm.j2", "xml.j2"),
                                                   default_for_string=False, default=False))
    env.filters["reveal"] = lambda s: s.reveal()
    env.filters.update(js=js, json=js, yaml=yaml_str, properties=properties, lua=lua, sh=sh, ldif=_ldif, html=html,
                       one_line=one_line, bare=bare, dquoted=dquoted)
    return env


def render(name: str, **context: Any) -> str:
    """Render templates/<name> with `context`."""
    return _env().get_template(name).render(**context)
