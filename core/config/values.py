"""The syntax of single values: every field with a syntax is checked here, before anything
connects. A refusal is a ValueError whose text the loader prints as `file:line:column: key: message
(how to fix it)`. Nothing a school or the city writes is trusted to be shell-, file- or
format-safe: what passes is plain. Free text may hold any printable character (it is escaped where
it is rendered)."""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import string
import unicodedata
import zoneinfo
from functools import cache
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    Field,
)
from pydantic_core import PydanticCustomError

from schoolctl.secrets import default_secrets_dir

# what an editor can check of a server address (the validator checks the rest: labels, IPs, ports)
ADDRESS = r"^(lab:)?[A-Za-z0-9][A-Za-z0-9.:-]*$"
SSH_KEY = r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh.com) [A-Za-z0-9+/=]+( .*)?$"



TEXT_MAX = 200          # free text: names, districts, the city
HOSTNAME_MAX = 253      # RFC 1123 / DNS
_LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_HOST_PORT = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[^:\[\]]+):([0-9]*)")
_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
_EMAIL_LOCAL = re.compile(r"[A-Za-z0-9_%+][A-Za-z0-9._%+-]*")
_DN_ATTRS = ("dc", "o", "ou", "c", "l", "st")
_DN_VALUE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9 ._-]*[A-Za-z0-9._-])?")
SUITE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]*")
COMPONENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
SECRET_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
# characters a URL here never needs: quotes, shell and template syntax, what RFC 3986 leaves out
_URL_REFUSED = "'\"`<>\\{}|^$;"
# characters no local folder of the city needs, and each a hazard wherever the path is written
_PATH_REFUSED = "'\"`$\\"
# sample values the templates of `artifacts` are checked with (any valid version gives the same shape)
_SAMPLE = {"version": "5.0.6", "branch": "500", "file": "moodle-5.0.6.tgz"}


def shown_value(value: str, limit: int = 60) -> str:
    """`value` quoted for a message, on one line (repr escapes line breaks) and cut to `limit`."""
    return repr(value) if len(value) <= limit else f"{value[:limit]!r}..."


def _bad_char(text: str) -> str | None:
    """What the first line break, tab, control or invisible formatting character of `text` is, or None."""
    for c in text:
        if c in _LINE_BREAKS:
            return "a line break"
        if c == "\t":
            return "a tab"
        if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
            return f"a control character (U+{ord(c):04X})"
    return None


def _chars(text: str, refused: str, spaces: bool = True) -> str | None:
    """'it holds '$' and '`'' for the refused characters in `text` (and spaces, named as such), or None."""
    found = sorted({c for c in text if c in refused and not c.isspace()})
    spaces = spaces and any(c.isspace() for c in text)
    if not found and not spaces:
        return None
    names = [repr(c) for c in found] + (["a space"] if spaces else [])
    return "it holds " + (", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else names[0])


def _one_line(text: str) -> str | None:
    bad = _bad_char(text)
    return f"it holds {bad}" if bad else None


def check_text(value: str) -> str:
    """Free text (a name, a district): any printable character, on one line, at most TEXT_MAX long.
    Quotes, `$`, `<`, `#`, `:` are fine here; they are escaped wherever the text is written."""
    bad = _bad_char(value)
    if bad:
        raise ValueError(f"{shown_value(value)} holds {bad} (write it as one line of printable text)")
    if not value.strip():
        raise ValueError(f"{shown_value(value)} is empty (write the text, e.g. the school's name as people know it)")
    if len(value) > TEXT_MAX:
        raise ValueError(f"{shown_value(value)} is {len(value)} characters long (at most {TEXT_MAX}: shorten it)")
    return value


def host_problem(value: str, ip_only: bool = False) -> str | None:
    """Why `value` is not a host name (RFC 1123) or an IP address, or None. A `host:port` is its
    own problem ('port'), so that the caller can say where the port goes."""
    if not value:
        return "it is empty"
    problem = _one_line(value)
    if problem:
        return problem
    if value.startswith("-"):
        return "it starts with '-'"
    if "%" in value:
        return "it holds '%' (an IPv6 zone index is not an address a server can be reached at)"
    try:
        ipaddress.ip_address(value)
        return None
    except ValueError:
        pass
    if value.startswith("[") and value.endswith("]"):
        return "an IPv6 address is written without brackets"
    odd = "".join(sorted({c for c in value if not (c.isascii() and (c.isalnum() or c in ".-:[]"))}))
    if odd:
        return _chars(value, odd)
    if _HOST_PORT.fullmatch(value):
        return "port"
    if "[" in value or "]" in value:
        return _chars(value, "[]")
    if ip_only:
        return ("it is a host name; give the IP address" if host_problem(value) is None
                else "it is not an IP address")
    if re.fullmatch(r"[0-9.]+", value):
        return "it is not a valid IPv4 address"
    if ":" in value:
        return "it is not a valid IPv6 address"
    if len(value) > HOSTNAME_MAX:
        return f"it is longer than {HOSTNAME_MAX} characters"
    if value.endswith("."):
        return "it ends with '.'"
    if any(not _LABEL.fullmatch(label) for label in value.split(".")):
        return ("a host name is labels of letters, digits and '-' (1 to 63, not starting or ending with '-') "
                "separated by '.'")
    return None


def host_port(value: str) -> tuple[str, str]:
    match = _HOST_PORT.fullmatch(value)
    assert match is not None
    return match[1].strip("[]"), match[2]


def _checked_host(value: str, ip_only: bool, expected: str) -> str:
    problem = host_problem(value, ip_only=ip_only)
    if problem == "port":
        raise ValueError(f"{shown_value(value)} is not valid: a port does not belong here (write the "
                         f"{'address' if ip_only else 'host'} alone: {host_port(value)[0]})")
    if problem:
        raise ValueError(f"{shown_value(value)} is not valid: {problem} (expected {expected})")
    return value


def check_host(value: str) -> str:
    """A host name or an IP address (an NTP server, a URL's host): nothing else, no port."""
    return _checked_host(value, False, "a host name or an IP address, e.g. ntp.example.org, 192.0.2.10 or "
                                       "2001:db8::10")


def check_ip(value: str) -> str:
    """An IPv4 or IPv6 address (a DNS resolver)."""
    return _checked_host(value, True, "an IP address such as 9.9.9.9 or 2620:fe::fe")


def domain_length(limit: int) -> Any:
    """A DOMAIN-pattern field's length bound: names are built under it (moodle.<domain>, <id>.<domain>)."""

    def check(value: str) -> str:
        if len(value) > limit:
            raise ValueError(f"{shown_value(value)} is {len(value)} characters long (at most {limit}, so that the "
                             "names built under it stay within 253)")
        return value

    return AfterValidator(check)


def _url_problem(value: str, schemes: tuple[str, ...]) -> str | None:
    """Why `value` is not a plain URL of one of `schemes` (no user or password, a real host), or None."""
    problem = _one_line(value) or _chars(value, _URL_REFUSED)
    if problem:
        return problem
    if not value.isascii():
        return "it holds a non-ASCII character (write the host in its xn-- form, percent-encode the path)"
    if re.search(r"%(?![0-9A-Fa-f]{2})", value):
        return "it holds a '%' that is not a percent-encoding such as %20"
    try:
        parts = urlsplit(value)
    except ValueError:  # e.g. an unclosed '[' of an IPv6 host
        return "its host is not a valid IPv6 address in brackets"
    if parts.scheme not in schemes or not value.lower().startswith(f"{parts.scheme}://"):
        return f"it must start with {' or '.join(f'{s}://' for s in schemes)}"
    if "@" in parts.netloc:
        return "it holds a user name or password ('...@' before the host); credentials do not belong in the config"
    if not parts.hostname:
        return "it names no host"
    try:
        port = parts.port
    except ValueError:
        return "its port is not a number from 1 to 65535"
    if port == 0 or parts.netloc.endswith(":"):
        return "its port is not a number from 1 to 65535"
    name = parts.netloc.rsplit(":", 1)[0] if port is not None else parts.netloc
    if name.startswith("["):
        try:
            ipaddress.IPv6Address(name.strip("[]"))
        except ValueError:
            return "its host is not a valid IPv6 address"
    else:
        problem = host_problem(name)
        if problem:
            return f"its host {name!r} is not valid: {problem}"
    if any(segment in (".", "..") for segment in parts.path.split("/")):
        return "its path holds '.' or '..'"
    if parts.fragment or value.endswith("#"):
        return "it holds a '#' fragment"
    return None


def url_check(*schemes: str, example: str) -> Any:
    """A validator of a plain URL with one of `schemes`."""

    def check(value: str) -> str:
        problem = _url_problem(value, schemes)
        if problem:
            raise ValueError(f"{shown_value(value)} is not a valid URL: {problem} (expected e.g. {example})")
        return value

    return AfterValidator(check)


def _template_problem(value: str, names: tuple[str, ...]) -> str | None:
    """Why `value` is not a template with only the placeholders `names` (str.format syntax), or None.
    Attribute and index lookups (`{version.__class__}`), conversions and format specs are refused."""
    try:
        parsed = list(string.Formatter().parse(value))
    except ValueError:
        return "its braces do not pair up"
    allowed = ", ".join(f"{{{n}}}" for n in names)
    for _, name, spec, conv in parsed:
        if name is None:
            continue
        if name not in names or spec or conv:
            return f"'{{{name}{'!' + conv if conv else ''}{':' + spec if spec else ''}}}' is not a placeholder " \
                   f"here (use {allowed})"
    return None


def check_url_template(value: str) -> str:
    """An artifact's URL: a plain http(s) URL once {version}, {file} and {branch} are filled in."""
    example = "https://download.example.org/{branch}/{file}"
    problem = _template_problem(value, ("version", "file", "branch"))
    if problem is None:
        problem = _url_problem(value.format(**_SAMPLE), ("https", "http"))
    if problem:
        raise ValueError(f"{shown_value(value)} is not a valid URL: {problem} (expected e.g. {example})")
    return value


def file_name_problem(name: str) -> str | None:
    if "/" in name or "\\" in name:
        return "it holds '/' (a file name, not a path)"
    if ".." in name:
        return "it holds '..'"
    if name.startswith("-"):
        return "it starts with '-'"
    if len(name) > 255:
        return "it is longer than 255 characters"
    if not _FILE_NAME.fullmatch(name):
        return (_one_line(name) or _chars(name, string.punctuation.translate(str.maketrans("", "", "._+-")))
                or "it must start with a letter or digit")
    return None


def check_file_template(value: str) -> str:
    """An artifact's file name: a plain file name once {version} is filled in."""
    problem = _template_problem(value, ("version",)) or file_name_problem(value.format(**_SAMPLE))
    if problem:
        raise ValueError(f"{shown_value(value)} is not a plain file name: {problem} "
                         f"(expected e.g. moodle-{{version}}.tgz: "
                         "letters, digits, '.', '_', '+' and '-')")
    return value


def check_email(value: str) -> str:
    """One e-mail address: no display name, no quotes, commas, angle brackets or line breaks."""
    problem = _one_line(value) or _chars(value, "'\"`,;<>()[]\\:$")
    if problem is None:
        local, _, domain_part = value.partition("@")
        if value.count("@") != 1:
            problem = "one address has exactly one '@'"
        elif not _EMAIL_LOCAL.fullmatch(local) or ".." in local or local.endswith("."):
            problem = f"{local!r} before '@' may hold only letters, digits and '.', '_', '%', '+', '-'"
        elif (p := host_problem(domain_part)) is not None or re.fullmatch(r"[0-9.:]+", domain_part):
            problem = f"{domain_part!r} after '@' is not a domain" + (f" ({p})" if p and p != "port" else "")
    if problem:
        raise ValueError(f"{shown_value(value)} is not valid: {problem} (expected one email address such as "
                         "dpd@example.org)")
    return value


def check_ssh_key(value: str) -> str:
    """An OpenSSH public key line (SSH_KEY): its comment, too, is one line without control characters."""
    bad = _bad_char(value)
    if bad:
        raise ValueError(f"the key line holds {bad} (expected one OpenSSH public key line, e.g. "
                         "'ssh-ed25519 AAAA... name@laptop')")
    return value


def _listed(name: str) -> bool:
    """Whether zoneinfo.available_timezones() lists `name` (a name, never a path), by opening its
    one file rather than every file of the database."""
    if name == "posixrules" or name.split("/")[0] in ("right", "posix"):
        return False
    for root in zoneinfo.TZPATH:
        try:
            with open(os.path.join(root, name), "rb") as f:
                if f.read(4) == b"TZif":
                    return True
        except (OSError, ValueError):
            continue
    return False


@cache
def _zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def check_timezone(value: str) -> str:
    """A time zone of the zoneinfo database (a name such as Europe/Madrid, never a path)."""
    problem = _one_line(value)
    if problem is None and (value.startswith("/") or "\\" in value
                            or any(part in ("", ".", "..") for part in value.split("/"))):
        problem = "a time zone is a name, not a path"
    if problem:
        raise ValueError(f"{shown_value(value)} is not valid: {problem} (use a name of the zoneinfo database such as "
                         "Europe/Madrid)")
    if _listed(value):
        return value
    zones = _zones()
    if zones:
        close = difflib.get_close_matches(value, sorted(zones), n=1) if len(value) <= 64 else []
        hint = f"did you mean {close[0]!r}?" if close else "use a name such as Europe/Madrid"
        raise ValueError(f"{shown_value(value)} is not a time zone of the zoneinfo database ({hint})")
    try:  # no list of zones on this machine: ask the database itself (the name is no path, see above)
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"{shown_value(value)} is not a time zone of the zoneinfo database (use a name such as "
                         "Europe/Madrid; if that fails too, install tzdata)") from None
    return value


def check_base_dn(value: str) -> str:
    """An LDAP DN of plain `attr=value` parts: attr one of _DN_ATTRS, values of letters, digits,
    spaces (inside), '.', '_' and '-'. No escapes, '+' (multi-valued RDNs), quotes or line breaks."""
    problem = _one_line(value) or _chars(value, "\\\"'`+;<>#$", spaces=False)
    if problem is None and len(value) > TEXT_MAX:
        problem = f"it is longer than {TEXT_MAX} characters"
    for part in [] if problem else value.split(","):
        attr, eq, val = part.partition("=")
        if not eq:
            problem = f"{part!r} is not attr=value"
        elif attr != attr.strip() or val != val.strip():
            problem = "no spaces around ',' and '='"
        elif attr not in _DN_ATTRS:
            problem = f"{attr!r} is not one of the attributes {', '.join(_DN_ATTRS)}" if attr else \
                f"{part!r} has no attribute before '='"
        elif not _DN_VALUE.fullmatch(val):
            problem = (f"the value {val!r} may hold only letters, digits, spaces, '.', '_' and '-', starting with "
                       "a letter or digit (no escapes, '+', quotes or '=')")
        if problem:
            break
    if problem:
        raise ValueError(f"{shown_value(value)} is not a valid directory base: {problem} (expected e.g. "
                         "dc=escoles,dc=bcn,dc=example: attr=value parts separated by ',')")
    return value


def check_mirror(value: str) -> str:
    """A mirror: an http(s) URL, or a local folder as an absolute path."""
    if "://" in value:
        problem = _url_problem(value, ("https", "http"))
    elif value.startswith("/"):
        problem = _one_line(value) or _chars(value.replace(" ", ""), _PATH_REFUSED)
        if problem is None and any(part in (".", "..") for part in value.split("/")):
            problem = "it holds '.' or '..'"
    else:
        problem = "it is neither an absolute path nor an http(s):// URL"
    if problem:
        raise ValueError(f"{shown_value(value)} is not valid: {problem} "
                         "(expected a folder such as /srv/mirror or a URL "
                         "such as https://mirror.example.org/schoolctl/)")
    return value


def check_proxy(value: str) -> str:
    """The city's HTTP proxy: a plain http(s) URL of a host and port, no path."""
    problem = _url_problem(value, ("http", "https"))
    if problem is None and urlsplit(value).path not in ("", "/"):
        problem = "a proxy URL has no path"
    if problem is None and (urlsplit(value).query or "?" in value):
        problem = "a proxy URL has no query"
    if problem:
        raise ValueError(f"{shown_value(value)} is not a valid URL: {problem} (expected e.g. http://proxy.example.org:3128)")
    return value


def check_path(value: str) -> str:
    """A file path on the controller: one line, no control characters."""
    problem = _one_line(value) or ("it is empty" if not value.strip() else None)
    if problem:
        raise ValueError(f"{shown_value(value)} is not a valid path: {problem}")
    return value


def pattern_check(regex: re.Pattern[str], what: str, example: str) -> Any:
    """A validator of a word that must match `regex` as a whole (and holds no '..')."""

    def check(value: str) -> str:
        if not regex.fullmatch(value) or ".." in value:
            problem = (_one_line(value) or _chars(value, "") or ("it holds '..'" if ".." in value else None)
                       or f"expected {what}")
            raise ValueError(f"{shown_value(value)} is not valid: {problem} (e.g. {example})")
        return value

    return AfterValidator(check)


def value_error(message: str) -> PydanticCustomError:
    """A 'value_error' with this exact text (braces in it are not a template)."""
    return PydanticCustomError("value_error", "{message}", {"message": message})


def tls_folder(school_id: str) -> Path:
    """The school's own TLS folder, `<secrets dir>/tls/<school id>`, symlinks resolved."""
    return (default_secrets_dir() / "tls" / school_id).resolve()


def shown_folder(folder: Path) -> str:
    try:
        return f"{folder.relative_to(Path.cwd().resolve())}/"
    except ValueError:
        return f"{folder}/"


def in_tls_folder(value: str, folder: Path) -> tuple[str | None, Path | None]:
    """(None, resolved path) when `value` names a file inside `folder` (a relative name is taken in
    `folder`; symlinks are followed) by plain names, else (why not, None)."""
    try:
        target = (folder / value).resolve()
    except (OSError, RuntimeError):
        return "cannot be resolved (a symlink loop?)", None
    if target == folder:
        return "names the school's TLS folder itself, not a file in it", None
    if not target.is_relative_to(folder):
        inside = (folder / value).is_relative_to(folder) and ".." not in Path(value).parts
        return f"{'is a link that leads' if inside else 'is'} outside the school's TLS folder", None
    odd = next((part for part in target.relative_to(folder).parts if file_name_problem(part)), None)
    if odd is not None:
        return f"is not a plain file name ({file_name_problem(odd)} in {odd!r})", None
    try:
        if target.exists() and not target.is_file():
            return "is not a regular file", None
    except OSError:
        return "cannot be read", None
    return None, target


_HOST_FORMATS = {"anyOf": [{"format": "hostname"}, {"format": "ipv4"}, {"format": "ipv6"}]}
_IP_FORMATS = {"anyOf": [{"format": "ipv4"}, {"format": "ipv6"}]}

Text = Annotated[str, AfterValidator(check_text), Field(json_schema_extra={"minLength": 1, "maxLength": TEXT_MAX})]
Host = Annotated[str, AfterValidator(check_host), Field(json_schema_extra=_HOST_FORMATS)]
Ip = Annotated[str, AfterValidator(check_ip), Field(json_schema_extra=_IP_FORMATS)]
SshKey = Annotated[str, Field(pattern=SSH_KEY), AfterValidator(check_ssh_key)]
PathText = Annotated[str, AfterValidator(check_path)]


