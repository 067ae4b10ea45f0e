"""Bad input that shows only when a deploy renders, or a broken mirror, is bad input (issue #18): exit 2
before anything connects, a message naming the value, file or setting and a hint; never exit 1 with
a Python class name. The TLS settings the rendering used to refuse are refused by `validate`, at
their line."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from schoolctl.deploy import firewall, obtain, render
from schoolctl.deploy.school import school_layers
from schoolctl.deploy.site import Site
from schoolctl.deploy.state import DesiredStateError, File, Layer, checked_path, merge
from schoolctl.errors import INPUT, ArtifactError, RenderError, SchoolctlError
from schoolctl.secrets import Secret

from .conftest import Run, edit, line_of, run_cli

ACME = "acme-v02.api.letsencrypt.org"


def _loopback(schools: Path) -> None:
    """escola-pins served at a closed port of 127.0.0.1 (a connection would fail at once)."""
    edit(schools / "escola-pins.yaml", "server: 10.20.42.10", "server: {address: 127.0.0.1, ssh_port: 1}")


@pytest.fixture
def connects(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every connection tried (refused), and name lookups answered as on a machine whose DNS knows
    no name (what a name that does not resolve looks like); address literals resolve."""
    tried: list[str] = []
    lookup = socket.getaddrinfo

    def connect(self: socket.socket, address: object) -> None:
        tried.append(str(address))
        raise OSError("this test refuses connections")

    def resolve(host: object, *args: object, **kwargs: object) -> object:
        try:
            socket.inet_pton(socket.AF_INET6 if ":" in str(host) else socket.AF_INET, str(host))
        except OSError:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None
        return lookup(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    return tried


# --- the error ------------------------------------------------------------------------------------

def test_a_render_error_is_bad_input_with_a_hint_and_still_a_value_error() -> None:
    e = RenderError("proxy: 'x' is not a plain proxy URL")
    assert isinstance(e, SchoolctlError) and isinstance(e, ValueError) and e.exit_code == INPUT
    assert e.lines()[0] == "error: proxy: 'x' is not a plain proxy URL" and e.lines()[1].startswith("hint: correct ")
    assert RenderError("m", "do this").lines() == ["error: m", "hint: do this"]
    assert issubclass(firewall.FirewallError, RenderError) and issubclass(DesiredStateError, RenderError)


@pytest.mark.parametrize("refuse", [
    lambda: render.one_line("a\nb", "ntp server"), lambda: render.bare("a b", "suite"),
    lambda: render.dquoted('a"b', "comment"), lambda: render.plain_name("../x", "a file"),
    lambda: render.hostname("a b", "host"), lambda: render.proxy_url("http://p:1/$(id)", "proxy"),
    lambda: render.integer("7", "days"), lambda: render.yaml_str(["x"]), lambda: checked_path("/etc/../x"),
], ids=["one_line", "bare", "dquoted", "plain_name", "hostname", "proxy_url", "integer", "text", "path"])
def test_every_refusal_of_the_rendering_is_a_render_error(refuse: Callable[[], object]) -> None:
    with pytest.raises(RenderError) as err:
        refuse()
    assert err.value.message and err.value.hint


def test_two_layers_wanting_one_path_is_a_render_error() -> None:
    with pytest.raises(DesiredStateError, match="/etc/x is wanted by both a and b") as err:
        merge([Layer("a", files=[File("/etc/x", "1")]), Layer("b", files=[File("/etc/x", "2")])])
    assert err.value.exit_code == INPUT and err.value.hint


# --- through the CLI: exit 2, nothing connected ----------------------------------------------------------

def _plan(schools: Path) -> Run:
    return run_cli("--schools-dir", "schools", "plan", "escola-pins")


def test_a_refusal_while_rendering_ends_plan_and_deploy_with_exit_2(schools: Path, connects: list[str],
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    _loopback(schools)
    monkeypatch.setattr(firewall, "layer", lambda site, rules=None: render.one_line("two\nlines", "probe value"))
    for args in (("plan", "escola-pins"), ("deploy", "--yes", "escola-pins")):
        run = run_cli("--schools-dir", "schools", *args)
        assert run.code == 2, run.stdout + run.stderr
        assert "probe value: 'two\\nlines' holds a control character" in run.stdout + run.stderr
        assert not connects


def test_an_allow_list_name_that_does_not_resolve_is_bad_set_up(schools: Path, connects: list[str]) -> None:
    _loopback(schools)
    run = _plan(schools)
    assert run.code == 2, run.stdout + run.stderr
    assert (f"cannot resolve {ACME} (schools/fleet.yaml: `tls.acme_directory`): Name or service not known"
            in run.stdout)
    assert "hint: correct the name there, or make it resolve on this machine" in run.stdout
    assert "[Errno" not in run.stdout + run.stderr and not connects


def test_the_allow_list_says_where_a_name_comes_from(schools: Path, connects: list[str]) -> None:
    from schoolctl.config.loader import load

    school = load(schools).select(["escola-pins"])[0]
    fleet = school.fleet.model_copy(update={"ntp": ["ntp.city.example"], "proxy": "http://proxy.city.example:3128"})
    site = Site(school=school.model_copy(update={"fleet": fleet}), secret=lambda n, length=32: Secret("x" * 8))
    assert firewall.origin(site, "ntp.city.example") == "schools/fleet.yaml: `ntp`"
    assert firewall.origin(site, "proxy.city.example") == "schools/fleet.yaml: `proxy`"
    assert firewall.origin(site, "elsewhere.example") == ""
    with pytest.raises(firewall.FirewallError) as err:
        firewall.addresses("elsewhere.example")
    assert err.value.message == ("cannot resolve elsewhere.example (an entry of the outbound allow-list): "
                                 "Name or service not known")
    assert firewall.addresses("192.0.2.7") == ["192.0.2.7"]


# --- TLS: refused by validate, at its line --------------------------------------------------------------

def test_internal_tls_without_both_ca_files_is_refused_by_validate_at_its_line(schools: Path) -> None:
    fleet = schools / "fleet.yaml"
    edit(fleet, "  mode: acme ", "  mode: internal ")
    line = line_of(fleet, r"^  mode: internal")
    run = run_cli("--schools-dir", "schools", "validate")
    assert run.code == 2
    assert run.lines[0].startswith(f"schools/fleet.yaml:{line}:9: tls.mode: 'internal' issues the schools' "
                                   "certificates from the city's CA, but ca_file and ca_key_file are not set")
    assert "ValueError" not in run.stderr
    edit(fleet, "  mode: internal ", "  mode: internal\n  ca_key_file: city-ca/ca.key\n ")
    run = run_cli("--schools-dir", "schools", "validate")
    assert run.code == 2 and "but ca_file is not set (add `ca_file: /path/ca.pem` (its PEM certificate)" in run.stderr
    edit(fleet, "  ca_key_file:", "  ca_file: city-ca/ca.pem\n  ca_key_file:")
    run = run_cli("--schools-dir", "schools", "validate")  # set, but no such files: each at its own line
    assert run.code == 2 and run.lines[:2] == [
        f"schools/fleet.yaml:{line + 1}:12: tls.ca_file: 'city-ca/ca.pem' is not a file on this machine (the city "
        "CA's certificate, PEM, read when a deploy renders; a relative path is taken from the folder schoolctl "
        "runs in)",
        f"schools/fleet.yaml:{line + 2}:16: tls.ca_key_file: 'city-ca/ca.key' is not a file on this machine (the "
        "city CA's key, PEM, read when a deploy renders; a relative path is taken from the folder schoolctl runs in)"]
    (schools.parent / "city-ca").mkdir()
    (schools.parent / "city-ca" / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    (schools.parent / "city-ca" / "ca.key").write_text("-----BEGIN PRIVATE KEY-----\n")
    run = run_cli("--schools-dir", "schools", "validate")
    assert run.code == 0, run.stderr


# --- a broken mirror stops the school before anything; an absent release is still left out ----------

@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "mirror"
    folder.mkdir()
    yield folder
    from schoolctl.deploy import artifacts

    artifacts.mirror_sums.cache_clear()


def _site(mirror: Path) -> Site:
    from schoolctl.config.loader import load

    school = load(Path(__file__).resolve().parents[2] / "schools").select(["escola-pins"])[0]
    return Site(school=school, secret=lambda n, length=32: Secret("x" * 8), mirror=str(mirror))


def _broken(mirror: Path, how: str) -> None:
    if how == "climbing entry":
        (mirror / "SHA256SUMS").write_text(f"{'a' * 64}  moodle-5.3.tgz\n{'b' * 64}  ../../etc/passwd\n")
    elif how == "symlinked SHA256SUMS":
        (mirror.parent / "elsewhere").write_text(f"{'a' * 64}  moodle-5.3.tgz\n")
        (mirror / "SHA256SUMS").symlink_to(mirror.parent / "elsewhere")
    # "no SHA256SUMS": the folder alone


@pytest.mark.parametrize("how", ["climbing entry", "symlinked SHA256SUMS", "no SHA256SUMS"])
def test_a_broken_mirror_is_an_error_not_an_app_left_out(mirror: Path, how: str) -> None:
    _broken(mirror, how)
    with pytest.raises(ArtifactError) as err:
        obtain.unobtainable(_site(mirror), "moodle")
    assert err.value.exit_code == INPUT and err.value.hint
    site = _site(mirror)
    with pytest.raises(ArtifactError):
        school_layers(site)
    assert site.skipped == []


def test_a_release_absent_from_a_good_mirror_is_still_left_out(mirror: Path) -> None:
    site = _site(mirror)
    (mirror / "SHA256SUMS").write_text(f"{site.school.fleet.artifacts.moodle.sha256['5.3']}  moodle-5.3.tgz\n")
    assert obtain.unobtainable(site, "moodle") is None
    why = obtain.unobtainable(site, "etherpad")  # 3.3.7: not in the mirror, and fleet.yaml pins no sha256
    assert why is not None and why.startswith(f"etherpad: etherpad-3.3.7.tar.gz is not in the mirror {mirror}")
    names = [layer.name for layer in school_layers(site)]
    assert "moodle" in names and "etherpad" not in names and [s.split(":")[0] for s in site.skipped] == ["etherpad"]


@pytest.mark.parametrize("verb", [("plan",), ("deploy", "--yes")])
def test_a_broken_mirror_stops_plan_and_deploy_with_exit_2_before_connecting(schools: Path, mirror: Path,
                                                                             connects: list[str],
                                                                             verb: tuple[str, ...]) -> None:
    _loopback(schools)
    _broken(mirror, "climbing entry")
    edit(schools / "fleet.yaml", "mirror: null", f"mirror: {mirror}")
    run = run_cli("--schools-dir", "schools", *verb, "escola-pins")
    assert run.code == 2, run.stdout + run.stderr
    assert "SHA256SUMS line 2: the entry '../../etc/passwd' is not a plain file name" in run.stdout + run.stderr
    assert "skipped" not in run.stdout + run.stderr and not connects


def test_a_schools_refusal_shows_its_message_and_hint_not_a_class_name(schools: Path, mirror: Path,
                                                                       connects: list[str]) -> None:
    _loopback(schools)
    _broken(mirror, "symlinked SHA256SUMS")
    edit(schools / "fleet.yaml", "mirror: null", f"mirror: {mirror}")
    run = _plan(schools)
    assert run.code == 2
    assert f"escola-pins: cannot plan: {mirror}/SHA256SUMS is a symlink" in run.stdout
    assert "hint: put the file itself there" in run.stdout and "ArtifactError" not in run.stdout
