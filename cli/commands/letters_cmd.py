"""`schoolctl users letters`: the credential letters of a roster import, as a PDF for the school's
secretary (cli/users/letters.py); the passwords go into the file only, never to the terminal."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from schoolctl.cli.context import get
from schoolctl.cli.output import say, warn


def letters(ctx: typer.Context,
            school_id: Annotated[str, typer.Argument(metavar="ID", help="School id.")],
            output: Annotated[Path, typer.Option("--output", "-o", metavar="FILE.pdf",
                                                 help="The PDF to write (0600).")],
            groups: Annotated[list[str] | None, typer.Option("--group", metavar="G",
                                                             help="Only this class (repeatable).")] = None,
            lang: Annotated[Literal["ca", "es", "en"] | None, typer.Option(
                "--lang", help="The letters' language (default: the school's first language).")] = None,
            passwords: Annotated[Path | None, typer.Option(
                "--passwords", metavar="FILE.vault",
                help="The import's encrypted passwords file (default: the school's newest).")] = None,
            force: Annotated[bool, typer.Option("--force", help="Replace FILE.pdf when it exists.")] = False,
            layout: Annotated[Literal["page", "slips"], typer.Option(
                "--layout", help="A page per person, or four cut-out slips per page.")] = "page") -> None:
    """One letter per new person of a roster import (school, name, username, initial password, where
    to log in, what to do first), grouped by class, each class with its list of names first. Made
    from the import's encrypted passwords file; the PDF is written 0600 and holds the passwords:
    hand it to the school's secretary only, and delete it once the letters are printed."""
    from schoolctl.cli.users.letters import (
        by_class,
        missing_letters,
        newest_passwords_file,
        read_passwords,
        render,
        write_letters,
    )
    from schoolctl.secrets import Secret, SecretStore

    school = get(ctx).config([school_id]).select([school_id])[0]
    store = SecretStore()
    source = passwords or newest_passwords_file(store.directory, school.id)
    accounts = read_passwords(store, source)
    for a in accounts:
        Secret(a.password)  # registered with the redactor: masked wherever it might be printed
    classes = by_class(accounts, groups or ())
    language = lang or school.languages[0]
    data = render(classes, school.name, f"https://{school.domain}/", language, layout)
    write_letters(output, data, force)
    for uid, chars in missing_letters(a for people in classes.values() for a in people).items():
        warn(f"note: the letter of {uid} lacks {chars!r} of the name (the font has no such letters): write it by "
             "hand, or set SCHOOLCTL_LETTERS_FONT to a TrueType font that has them and make the letters again")
    n = sum(len(p) for p in classes.values())
    say(f"{school.id}: {n} letter(s) for {len(classes)} class(es) "
        f"({', '.join(g or '-' for g in classes)}) from {source.name} written to {output} (0600, language "
        f"{language}, {layout} layout); it holds initial passwords: give it to the school's secretary only")
