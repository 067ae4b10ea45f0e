"""The roster (CSV) parser, uid generation, the directory diff and its LDIF: pure functions, no host."""

from __future__ import annotations

from datetime import date

import pytest

from schoolctl.cli.users.directory import Account, Directory, diff, parse_ldif, read_directory, to_ldif
from schoolctl.cli.users.roster import Person, base_uid, make_uid, parse_roster, person_key
from schoolctl.errors import RosterError

BASE = "dc=s,dc=schools"
TODAY = date(2026, 9, 1)
HEADER = "given_name,family_name,role,group,email\n"


def problems(text: str | bytes) -> list[str]:
    data = text.encode() if isinstance(text, str) else text
    with pytest.raises(RosterError) as e:
        parse_roster(data, "roster.csv")
    return e.value.problems


def people(text: str) -> list[Person]:
    return parse_roster((HEADER + text).encode(), "roster.csv")[0]


# --- parsing -----------------------------------------------------------------------------------

def test_a_good_roster() -> None:
    found = people("Marta,Puig,teacher,,marta@escola.example\nPau,Soler i Vidal,Student,1a,\n")
    assert [(p.given_name, p.family_name, p.role, p.group, p.email, p.line) for p in found] == [
        ("Marta", "Puig", "teacher", "", "marta@escola.example", 2),
        ("Pau", "Soler i Vidal", "student", "1A", "", 3)]


def test_every_bad_row_is_reported_with_its_line() -> None:
    text = HEADER + ("Marta,Puig,teacher,,\n"
                     ",Soler,student,1A,\n"              # 3: missing given name
                     "Pau,,student,1A,\n"                # 4: missing family name
                     "Anna,Roca,director,,\n"            # 5: unknown role
                     "Joan,Vidal,student,1A,joan@\n"     # 6: bad email
                     "marta,PUIG,student,2B,\n"          # 7: same person as line 2
                     "Laia,Font,student,,\n"             # 8: a student without a class
                     "Ona,Sala,student,1/A,\n"           # 9: bad group
                     "Oriol,Serra,student\n")            # 10: wrong number of fields
    assert problems(text) == [
        "roster.csv:3: missing given name (given_name)",
        "roster.csv:4: missing family name (family_name)",
        "roster.csv:5: unknown role 'director' (one of: teacher, student)",
        "roster.csv:6: bad email 'joan@'",
        "roster.csv:7: duplicate person: marta PUIG is already on line 2",
        "roster.csv:8: missing group: a student needs a class (e.g. 1A)",
        "roster.csv:9: bad group '1/A' (a class name like 1A: letters, digits, space . _ -, up to 20)",
        "roster.csv:10: 3 field(s), expected 5 (given_name,family_name,role,group,email)",
    ]


def test_header_problems() -> None:
    assert problems("name,role\nMarta,teacher\n") == [
        "roster.csv:1: unknown column(s) name; missing column(s) given_name, family_name; "
        "expected given_name,family_name,role,group,email (group and email may be empty)"]
    assert problems("") == ["roster.csv:1: the roster is empty; expected the header "
                            "given_name,family_name,role,group,email"]
    assert problems(HEADER) == ["roster.csv:1: the roster has no people (an empty roster would suspend everybody)"]


def test_bom_semicolons_crlf_and_optional_columns() -> None:
    data = "\ufeffgiven_name;family_name;role;group\r\nNúria;Domènech;student;3B\r\n".encode()
    (p,), notes = parse_roster(data)
    assert (p.given_name, p.family_name, p.group, p.email, notes) == ("Núria", "Domènech", "3B", "", [])


def test_windows_1252_is_read_with_a_note_and_utf16_is_read() -> None:
    data = (HEADER + "Àlex,Ibáñez,teacher,,\n").encode("cp1252")
    (p,), notes = parse_roster(data, "r.csv")
    assert (p.given_name, p.family_name) == ("Àlex", "Ibáñez")
    assert notes == ["r.csv:2: not UTF-8; read as Windows-1252 (save as CSV UTF-8 to be sure)"]
    (q,), notes = parse_roster((HEADER + "Àlex,Ibáñez,teacher,,\n").encode("utf-16"))
    assert q.family_name == "Ibáñez" and notes == []


def test_undecodable_bytes_name_their_line() -> None:
    assert problems(HEADER.encode() + b"Marta,Puig,teacher,,\nPau,So\x81ler,student,1A,\n") == [
        "roster.csv:3: not UTF-8 text (and not Windows-1252 either); save the roster as CSV UTF-8"]


def test_unclosed_quote_is_an_error() -> None:
    assert problems(HEADER + 'Marta,"Puig,teacher,,\n')[0].startswith("roster.csv:")


# --- uids --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("given", "family", "uid"), [
    ("Marta", "Puig", "marta.puig"),
    ("Núria Maria", "Domènech i Roca", "nuria.domenech"),
    ("Àlex", "de la Fuente García", "alex.fuente"),
    ("Joan-Carles", "Col·lell", "joan.collell"),
    ("Iñaki", "O'Brien", "inaki.obrien"),
    ("Łukasz", "Øster", "lukasz.oster"),
])
def test_uid_from_names(given: str, family: str, uid: str) -> None:
    assert base_uid(given, family) == uid


def test_uid_collisions_get_a_number() -> None:
    assert make_uid("Marta", "Puig", set()) == "marta.puig"
    assert make_uid("Marta", "Puig Soler", {"marta.puig"}) == "marta.puig2"
    assert make_uid("MARTA", "Puig", {"marta.puig", "marta.puig2"}) == "marta.puig3"


def test_person_key_ignores_case_accents_and_spacing() -> None:
    assert person_key("Núria", "Domènech  Roca") == person_key("nuria", "DOMENECH roca")
    assert person_key("Núria", "Domènech Roca") != person_key("Núria", "Domènech")


# --- the diff ----------------------------------------------------------------------------------

def account(uid: str, p: Person, suspended: date | None = None, group: str | None = None) -> Account:
    ou = "suspended" if suspended else "people"
    return Account(f"uid={uid},ou={ou},{BASE}", uid, p.key, p.given_name, p.family_name, p.role,
                   p.group if group is None else group, p.email, suspended)


def directory(*accounts: Account, groups: dict[str, set[str]] | None = None) -> Directory:
    d = Directory(BASE, list(accounts), ous={f"ou={o},{BASE}" for o in ("people", "groups", "suspended")})
    d.taken_uids = {a.uid for a in accounts}
    for cn, members in (groups or {}).items():
        d.groups[cn] = {f"uid={m},ou=people,{BASE}" for m in members}
        d.group_dns[cn] = f"cn={cn},ou=groups,{BASE}"
    return d


MARTA = Person("Marta", "Puig", "teacher", "", "marta@e.example")
PAU = Person("Pau", "Soler", "student", "1A")
ONA = Person("Ona", "Sala", "student", "1A")


def test_first_import_adds_everyone_and_their_groups() -> None:
    plan = diff([MARTA, PAU], directory(), TODAY, 30)
    assert [uid for uid, _ in plan.add] == ["marta.puig", "pau.soler"]
    assert sorted(plan.new_groups) == ["class-1a", "students", "teachers"]
    assert plan.new_groups["class-1a"] == ("Class 1A", {f"uid=pau.soler,ou=people,{BASE}"})


def test_identical_import_is_unchanged() -> None:
    d = directory(account("marta.puig", MARTA), account("pau.soler", PAU),
                  groups={"teachers": {"marta.puig"}, "students": {"pau.soler"}, "class-1a": {"pau.soler"}})
    plan = diff([MARTA, PAU], d, TODAY, 30)
    assert plan.empty and sorted(plan.unchanged) == ["marta.puig", "pau.soler"]
    assert to_ldif(plan, {}) == ""


def test_changes_of_group_role_and_email_keep_the_uid() -> None:
    d = directory(account("pau.soler", PAU), groups={"students": {"pau.soler"}, "class-1a": {"pau.soler"}})
    moved = Person("Pau", "Soler", "student", "2B", "pau@e.example")
    plan = diff([moved], d, TODAY, 30)
    (c,) = plan.change
    assert c.uid == "pau.soler" and c.fields == {"group": ("1A", "2B"), "email": ("", "pau@e.example")}
    assert plan.drop_groups == [f"cn=class-1a,ou=groups,{BASE}"] and "class-2b" in plan.new_groups
    ldif = to_ldif(plan, {})
    assert "replace: departmentNumber\ndepartmentNumber: 2B" in ldif and "replace: mail\nmail: pau@e.example" in ldif


def test_leavers_are_suspended_then_deleted_after_the_grace_period() -> None:
    d = directory(account("marta.puig", MARTA), account("pau.soler", PAU),
                  groups={"teachers": {"marta.puig"}, "students": {"pau.soler"}, "class-1a": {"pau.soler"}})
    plan = diff([MARTA], d, TODAY, 30)
    assert [a.uid for a in plan.suspend] == ["pau.soler"] and not plan.delete
    assert sorted(plan.drop_groups) == [f"cn=class-1a,ou=groups,{BASE}", f"cn=students,ou=groups,{BASE}"]
    ldif = to_ldif(plan, {})
    assert "description: suspended 2026-09-01" in ldif and f"newsuperior: ou=suspended,{BASE}" in ldif
    # the groups go before the person moves (groupOfNames never points at a moved entry)
    assert ldif.index("changetype: delete") < ldif.index("changetype: modrdn")

    later = directory(account("marta.puig", MARTA), account("pau.soler", PAU, suspended=date(2026, 8, 1)),
                      groups={"teachers": {"marta.puig"}})
    assert [(a.uid, str(when)) for a, when in diff([MARTA], later, TODAY, 60).waiting] == [("pau.soler", "2026-09-30")]
    plan = diff([MARTA], later, TODAY, 31)
    assert [a.uid for a in plan.delete] == ["pau.soler"]
    assert f"dn: uid=pau.soler,ou=suspended,{BASE}\nchangetype: delete" in to_ldif(plan, {})
    # grace 0: deleted on the next import, even the same day
    assert [a.uid for a in diff([MARTA], later, date(2026, 8, 1), 0).delete] == ["pau.soler"]


def test_a_returning_person_is_restored_with_the_same_uid() -> None:
    d = directory(account("pau.soler", PAU, suspended=date(2026, 8, 1), group="1A"))
    plan = diff([Person("Pau", "Soler", "student", "1B")], d, TODAY, 30)
    (r,) = plan.restore
    assert r.uid == "pau.soler" and r.fields == {"group": ("1A", "1B")} and not plan.add
    ldif = to_ldif(plan, {})
    assert ldif.index("changetype: modrdn") < ldif.index("cn: class-1b")


def test_uids_of_suspended_and_unmanaged_people_are_not_reused() -> None:
    other = Person("Marta", "Puig Soler", "student", "1A")
    d = directory(account("marta.puig", MARTA, suspended=date(2026, 8, 20)))
    d.taken_uids.add("pau.soler")       # a hand-made entry without a schoolctl key
    plan = diff([other, PAU], d, TODAY, 30)
    assert [uid for uid, _ in plan.add] == ["marta.puig2", "pau.soler2"]


def test_new_people_get_hashed_passwords_only() -> None:
    plan = diff([ONA], directory(), TODAY, 30)
    ldif = to_ldif(plan, {"ona.sala": "s3cret-Passw0rd"})
    assert "s3cret-Passw0rd" not in ldif and "userPassword: {SSHA512}" in ldif


def test_directory_is_read_from_ldapsearch_output() -> None:
    text = (f"dn: ou=people,{BASE}\nobjectClass: organizationalUnit\nou: people\n\n"
            f"dn: uid=nuria.domenech,ou=suspended,{BASE}\nobjectClass: inetOrgPerson\nuid: nuria.domenech\n"
            f"employeeNumber: {person_key('Núria', 'Domènech')}\ngivenName:: TsO6cmlh\nsn:: RG9tw6huZWNo\n"
            "employeeType: student\ndepartmentNumber: 3B\ndescription: suspended 2026-06-30\n\n"
            f"dn: uid=admin.tic,ou=people,{BASE}\nobjectClass: inetOrgPerson\nuid: admin.tic\n\n"
            f"dn: cn=class-3b,ou=groups,{BASE}\nobjectClass: groupOfNames\ncn: class-3b\n"
            f"member: uid=x,ou=people,{BASE}\n")
    d = read_directory(parse_ldif(text), BASE, TODAY)
    (a,) = d.accounts
    assert (a.uid, a.given_name, a.family_name, a.group, a.suspended) == (
        "nuria.domenech", "Núria", "Domènech", "3B", date(2026, 6, 30))
    assert d.unmanaged == 1 and d.taken_uids == {"nuria.domenech", "admin.tic"}
    assert d.groups == {"class-3b": {f"uid=x,ou=people,{BASE}"}}
    assert diff([Person("Núria", "Domènech", "student", "3B")], d, TODAY, 30).restore


# --- leavers in the apps -------------------------------------------------------------------------

class LocalShell:
    """Stands in for the SSH connection: runs the hook script with the local sh."""

    def run(self, command: str, stdin: str | None = None, timeout: int = 600) -> tuple[bool, str, str]:
        import subprocess

        p = subprocess.run(["sh", "-c", command], input=stdin, capture_output=True, text=True, timeout=timeout)
        return p.returncode == 0, p.stdout, p.stderr


def test_app_delete_hooks_are_found_and_run(schools, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys
    import types

    from schoolctl.cli.users.leavers import delete_hooks, run_hooks
    from schoolctl.config.loader import load

    school = load(schools).schools["demo"]          # moodle, nextcloud, etherpad, jitsi
    moodle = types.ModuleType("schoolctl.deploy.moodle")
    moodle.delete_user_command = lambda site, uid: f"echo deleting {uid}"   # type: ignore[attr-defined]
    nextcloud = types.ModuleType("schoolctl.deploy.nextcloud")
    nextcloud.delete_user_command = (                                      # type: ignore[attr-defined]
        lambda site, uid: "echo 'no such user' >&2; exit 3" if uid == "b.b" else "true")
    etherpad = types.ModuleType("schoolctl.deploy.etherpad")                          # no hook: skipped
    monkeypatch.setitem(sys.modules, "schoolctl.deploy.moodle", moodle)
    monkeypatch.setitem(sys.modules, "schoolctl.deploy.nextcloud", nextcloud)
    monkeypatch.setitem(sys.modules, "schoolctl.deploy.etherpad", etherpad)
    monkeypatch.setitem(sys.modules, "schoolctl.deploy.jitsi", None)                  # module missing: skipped
    with pytest.raises(ImportError):
        import schoolctl.deploy.jitsi  # noqa: F401
    hooks = delete_hooks(school)
    assert [app for app, _ in hooks] == ["moodle", "nextcloud"]
    results = run_hooks(LocalShell(), None, hooks, ["a.a", "b.b"])  # type: ignore[arg-type]
    assert results == {"a.a": {"moodle": "ok", "nextcloud": "ok"},
                       "b.b": {"moodle": "ok", "nextcloud": "failed (exit 3): no such user"}}


# --- classes in the apps and the first login ----------------------------------------------------------

def test_new_people_must_change_the_letters_password() -> None:
    """pwdReset on every new person; an account still carrying it stays on the list, one without does not."""
    plan = diff([ONA], directory(), TODAY, 30)
    ldif = to_ldif(plan, {"ona.sala": "s3cret-Passw0rd"})
    assert "\npwdReset: TRUE\n" in ldif and plan.must_change == {"ona.sala"}
    changed, waiting = account("pau.soler", PAU), account("marta.puig", MARTA)
    waiting.must_change = True
    plan = diff([MARTA, PAU], directory(changed, waiting), TODAY, 30)
    assert plan.must_change == {"marta.puig"}
    text = (f"dn: uid=marta.puig,ou=people,{BASE}\nobjectClass: inetOrgPerson\nuid: marta.puig\n"
            f"employeeNumber: {MARTA.key}\npwdReset: TRUE\n\n"
            f"dn: uid=pau.soler,ou=people,{BASE}\nobjectClass: inetOrgPerson\nuid: pau.soler\n"
            f"employeeNumber: {PAU.key}\n")
    assert [(a.uid, a.must_change) for a in read_directory(parse_ldif(text), BASE, TODAY).accounts] == [
        ("marta.puig", True), ("pau.soler", False)]


def test_the_school_year_move_and_the_classes_payload() -> None:
    from schoolctl.cli.users.classes import payload

    d = directory(account("pau.soler", PAU), account("ona.sala", ONA),
                  groups={"students": {"pau.soler", "ona.sala"}, "class-1a": {"pau.soler", "ona.sala"}})
    plan = diff([Person("Pau", "Soler", "student", "2A"), ONA], d, TODAY, 30)
    assert plan.moves == [("pau.soler", "1A", "2A")] and not plan.suspend and not plan.add
    assert plan.groups == {"class-1a": (set(), {f"uid=pau.soler,ou=people,{BASE}"})}
    assert plan.new_groups["class-2a"] == ("Class 2A", {f"uid=pau.soler,ou=people,{BASE}"})
    assert payload(plan) == {"classes": {"1A": {"group": "class-1a", "members": ["ona.sala"]},
                                         "2A": {"group": "class-2a", "members": ["pau.soler"]}},
                             "must_change": []}


def test_the_apps_class_answers_are_read_per_app() -> None:
    from schoolctl.cli.users.classes import changed, parse, script, summary

    out = ('@@moodle {"changes": ["cohort 3A created"], "notes": []}\n'
           "@@nextcloud-failed 1\n@@nextcloud-out nextcloud classes: GET /cloud/groups: HTTP 401\n")
    found = parse(out, ["moodle", "nextcloud", "etherpad"])
    assert found["moodle"] == {"changes": ["cohort 3A created"], "notes": []} and changed(found["moodle"])
    assert found["nextcloud"] == {"error": "failed (exit 1): nextcloud classes: GET /cloud/groups: HTTP 401"}
    assert found["etherpad"] == {"error": "no answer"}
    assert summary("moodle", {"changes": [], "notes": []}) == "moodle: classes unchanged"
    assert summary("moodle", found["moodle"]) == "moodle: classes cohort 3A created"
    text = script([("moodle", lambda: "cat")], {"classes": {}, "must_change": []})
    ok, stdout, _ = LocalShell().run("sh -s", stdin=text)
    assert ok and parse(stdout, ["moodle"]) == {"moodle": {"classes": {}, "must_change": []}}
