"""Credential letters: one page per new person (school, name, username, initial password, where to
log in, what to do first), grouped by class with a list of each class's names (no passwords) before
its letters, so a tutor can hand them out. Made from a roster import's encrypted passwords file
(cli/users/importer.py: write_passwords), written 0600, never shown on the terminal.

The PDF is drawn with reportlab: a pure-Python library (wheels, no system libraries such as the
pango/cairo that weasyprint needs) that embeds a TrueType font, so a name in any script the font
covers comes out right and pdftotext reads it back. The font is DejaVu Sans (Debian's
fonts-dejavu-core) or SCHOOLCTL_LETTERS_FONT; without one, the PDF's built-in Helvetica, which has
only Western European letters. A name with letters the font lacks (DejaVu has no Chinese) is still
printed, and the command names that person so the secretary can write the name by hand or choose a
font that has them."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from schoolctl.errors import SchoolctlError

FONT_PATHS = ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",)
BOLD_PATHS = ("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",)
COLUMNS = ("uid", "given_name", "family_name", "role", "group", "initial_password")
NO_CLASS = {"ca": "Sense grup", "es": "Sin grupo", "en": "No class"}

TEXTS = {
    "ca": {
        "title": "El teu compte de l'escola", "name": "Nom", "class": "Grup", "username": "Nom d'usuari",
        "password": "Contrasenya inicial", "where": "On entrar",
        "steps": ["Obre l'adreça de dalt al navegador: hi trobaràs el Moodle, el núvol (Nextcloud) i les altres "
                  "eines de l'escola.",
                  "Entra primer al Moodle amb el nom d'usuari i la contrasenya d'aquesta carta: et demanarà "
                  "que en triïs una de nova, la teva a totes les eines. La d'aquesta carta deixarà de funcionar "
                  "(el núvol no l'accepta).",
                  "Fins llavors, guarda aquesta carta en un lloc segur i no la deixis a ningú. Si la perds, "
                  "demana'n una de nova a la secretaria de l'escola."],
        "first": "El primer dia", "list": "Llista del grup (sense contrasenyes)", "letters": "cartes",
        "teacher": "docent", "student": "alumne/a",
    },
    "es": {
        "title": "Tu cuenta de la escuela", "name": "Nombre", "class": "Grupo", "username": "Nombre de usuario",
        "password": "Contraseña inicial", "where": "Dónde entrar",
        "steps": ["Abre la dirección de arriba en el navegador: allí están el Moodle, la nube (Nextcloud) y las "
                  "demás herramientas de la escuela.",
                  "Entra primero en el Moodle con el nombre de usuario y la contraseña de esta carta: te pedirá "
                  "que elijas una nueva, la tuya en todas las herramientas. La de esta carta dejará de funcionar "
                  "(la nube no la acepta).",
                  "Hasta entonces, guarda esta carta en un lugar seguro y no se la dejes a nadie. Si la pierdes, "
                  "pide una nueva en la secretaría de la escuela."],
        "first": "El primer día", "list": "Lista del grupo (sin contraseñas)", "letters": "cartas",
        "teacher": "docente", "student": "alumno/a",
    },
    "en": {
        "title": "Your school account", "name": "Name", "class": "Class", "username": "Username",
        "password": "Initial password", "where": "Where to log in",
        "steps": ["Open the address above in a browser: Moodle, the cloud (Nextcloud) and the school's other "
                  "tools are there.",
                  "Log in to Moodle first, with the username and password in this letter: it asks you to choose "
                  "a new password, yours in every tool. This letter's stops working (the cloud does not take "
                  "it).",
                  "Until then, keep this letter somewhere safe and lend it to nobody. If you lose it, ask the "
                  "school's office for a new one."],
        "first": "On the first day", "list": "Class list (no passwords)", "letters": "letters",
        "teacher": "teacher", "student": "student",
    },
}


class LettersError(SchoolctlError):
    """Letters cannot be made (the passwords file, the output, a font); nothing was written."""

    exit_code = 2


@dataclass(frozen=True)
class Account:
    """One person of a passwords file."""

    uid: str
    given_name: str
    family_name: str
    role: str
    group: str
    password: str

    @property
    def name(self) -> str:
        return f"{self.given_name} {self.family_name}"


def _plain(cell: str) -> str:
    """A cell as the roster had it: passwords_csv puts a quote before one that would run as a formula."""
    return cell[1:] if cell[:2] in ("'=", "'+", "'-", "'@") or cell[:2] in ("'\t", "'\r") else cell


def parse_passwords(text: str, source: str) -> list[Account]:
    """The accounts of a decrypted passwords file (directory.passwords_csv's CSV)."""
    rows = csv.DictReader(io.StringIO(text))
    missing = [c for c in COLUMNS if c not in (rows.fieldnames or [])]
    if missing:
        raise LettersError(f"{source}: not an initial-passwords file of `schoolctl users import` (no "
                           f"{', '.join(missing)} column)")
    return [Account(row["uid"], _plain(row["given_name"]), _plain(row["family_name"]), row["role"],
                    _plain(row["group"]), row["initial_password"]) for row in rows]


def read_passwords(store, path: Path) -> list[Account]:
    """Decrypt `path` with the vault key of `store` (a SecretStore)."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise LettersError(f"cannot read {path}: {e.strerror}",
                           "name the passwords file `users import` wrote (--passwords FILE)") from None
    try:
        plain = store._lib().decrypt(data)
    except SchoolctlError:
        raise
    except Exception as e:  # ansible's AnsibleError: wrong key, not a vault
        raise LettersError(f"{path}: cannot decrypt it with the vault key {store.key_file} "
                           f"({type(e).__name__}); is it an initial-passwords file of this fleet?") from None
    return parse_passwords(plain.decode("utf-8", errors="replace"), str(path))


def newest_passwords_file(directory: Path, school_id: str) -> Path:
    found = sorted(directory.glob(f"{school_id}-initial-passwords-*.vault"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise LettersError(f"no initial-passwords file of {school_id} in {directory}",
                           "import a roster first (`schoolctl users import`), or name the file with --passwords")
    return found[-1]


def by_class(accounts: Iterable[Account], groups: Iterable[str] = ()) -> dict[str, list[Account]]:
    """Class -> its people (family name, given name order), classes sorted, the classless last;
    only `groups` when given (an unknown one is refused)."""
    wanted = list(groups)
    classes: dict[str, list[Account]] = {}
    for a in accounts:
        classes.setdefault(a.group, []).append(a)
    unknown = [g for g in wanted if g not in classes]
    if unknown:
        raise LettersError(f"no one of class {', '.join(unknown)} in this passwords file "
                           f"(its classes: {', '.join(sorted(g for g in classes if g)) or 'none'})")
    keep = wanted or list(classes)
    from schoolctl.cli.users.roster import fold

    return {g: sorted(classes[g], key=lambda a: (fold(a.family_name), fold(a.given_name), a.uid))
            for g in sorted(keep, key=lambda g: (g == "", g))}


def _fonts() -> tuple[str, str]:
    """(regular, bold) font names registered with reportlab."""
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    chosen = os.environ.get("SCHOOLCTL_LETTERS_FONT")
    regular = chosen or next((p for p in FONT_PATHS if Path(p).is_file()), None)
    bold = None if chosen else next((p for p in BOLD_PATHS if Path(p).is_file()), None)
    if not regular:
        return "Helvetica", "Helvetica-Bold"
    try:
        pdfmetrics.registerFont(TTFont("SchoolSans", regular))
        pdfmetrics.registerFont(TTFont("SchoolSans-Bold", bold or regular))
    except Exception as e:
        raise LettersError(f"cannot use the font {regular}: {e}",
                           "set SCHOOLCTL_LETTERS_FONT to a TrueType font file, or install fonts-dejavu-core") \
            from None
    return "SchoolSans", "SchoolSans-Bold"


def missing_letters(accounts: Iterable[Account]) -> dict[str, str]:
    """uid -> the characters of that person's name or class the letters' font cannot draw (a letter
    still gets made, with the username and password, which are plain ASCII)."""
    from reportlab.pdfbase import pdfmetrics

    font = pdfmetrics.getFont(_fonts()[0])
    face = getattr(font, "face", None)
    found: dict[str, str] = {}
    for a in accounts:
        chars = set(a.name + a.group) - {" "}
        if face is not None:  # a TrueType font: its own character map
            lacking = sorted(c for c in chars if ord(c) not in face.charToGlyph)
        else:                 # the PDF's built-in Helvetica: Western European letters only
            lacking = sorted(c for c in chars if not c.encode("cp1252", errors="ignore"))
        if lacking:
            found[a.uid] = "".join(lacking)
    return found


LAYOUTS = ("page", "slips")
SLIPS_PER_PAGE = 4


def render(accounts: dict[str, list[Account]], school_name: str, address: str, lang: str,
           layout: str = "page") -> bytes:
    """The letters as PDF bytes: per class, a list of its names, then one letter per person: a page
    each (`page`) or four cut-out slips per page, cut lines dashed (`slips`)."""
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.units import mm
    from reportlab.lib.utils import simpleSplit
    from reportlab.pdfgen.canvas import Canvas

    t = TEXTS[lang]
    regular, bold = _fonts()
    buf = io.BytesIO()
    pdf = Canvas(buf, pagesize=A4, invariant=1, pageCompression=0)
    pdf.setTitle(f"{school_name}: {t['title']}")
    pdf.setAuthor("schoolctl")
    width, height = A4
    left, right = 22 * mm, width - 22 * mm

    def header(group: str) -> float:
        pdf.setFont(bold, 11)
        pdf.drawString(left, height - 18 * mm, school_name)
        pdf.setFont(regular, 11)
        pdf.drawRightString(right, height - 18 * mm, f"{t['class']}: {group or NO_CLASS[lang]}")
        pdf.line(left, height - 21 * mm, right, height - 21 * mm)
        return height - 34 * mm

    for group, people in accounts.items():
        y = header(group)
        pdf.setFont(bold, 16)
        pdf.drawString(left, y, f"{t['list']}: {group or NO_CLASS[lang]} ({len(people)} {t['letters']})")
        y -= 12 * mm
        pdf.setFont(regular, 11)
        for n, a in enumerate(people, 1):
            if y < 25 * mm:
                pdf.showPage()
                y = header(group) - 4 * mm
                pdf.setFont(regular, 11)
            pdf.drawString(left, y, f"{n:>3}. {a.family_name}, {a.given_name}")
            pdf.drawString(left + 100 * mm, y, f"{a.uid}  ({t.get(a.role, a.role)})")
            y -= 7 * mm
        pdf.showPage()
        if layout == "slips":
            for start in range(0, len(people), SLIPS_PER_PAGE):
                for i, a in enumerate(people[start:start + SLIPS_PER_PAGE]):
                    _slip(pdf, a, t, (regular, bold), school_name, group or NO_CLASS[lang], address,
                          (left, right), height - i * height / SLIPS_PER_PAGE, height / SLIPS_PER_PAGE)
                pdf.showPage()
            continue
        for a in people:
            y = header(group)
            pdf.setFont(bold, 20)
            pdf.drawString(left, y, t["title"])
            y -= 16 * mm
            for label, value, size in ((t["name"], a.name, 14), (t["username"], a.uid, 16),
                                       (t["password"], a.password, 16), (t["where"], address, 14)):
                pdf.setFont(regular, 10)
                pdf.drawString(left, y, label)
                pdf.setFont(bold, size)
                pdf.drawString(left + 48 * mm, y, value)
                y -= 12 * mm
            y -= 4 * mm
            pdf.setFont(bold, 12)
            pdf.drawString(left, y, t["first"])
            y -= 8 * mm
            pdf.setFont(regular, 11)
            for n, step in enumerate(t["steps"], 1):
                for i, line in enumerate(simpleSplit(step, regular, 11, right - left - 8 * mm)):
                    pdf.drawString(left, y, f"{n}." if i == 0 else "")
                    pdf.drawString(left + 8 * mm, y, line)
                    y -= 6 * mm
                y -= 2 * mm
            pdf.showPage()
    pdf.save()
    return buf.getvalue()


def _slip(pdf, a: Account, t: dict, fonts: tuple[str, str], school: str, group: str, address: str,
          margins: tuple[float, float], top: float, size: float) -> None:
    """One cut-out slip of `size` points from `top` down: the same fields and steps as a letter, smaller."""
    from reportlab.lib.units import mm
    from reportlab.lib.utils import simpleSplit

    regular, bold = fonts
    left, right = margins
    if top < pdf._pagesize[1]:          # the cut line above every slip but the page's first
        pdf.saveState()
        pdf.setDash(3, 3)
        pdf.line(8 * mm, top, pdf._pagesize[0] - 8 * mm, top)
        pdf.restoreState()
    y = top - 9 * mm
    pdf.setFont(bold, 10)
    pdf.drawString(left, y, f"{school}: {t['title']}")
    pdf.setFont(regular, 10)
    pdf.drawRightString(right, y, f"{t['class']}: {group}")
    y -= 8 * mm
    for label, value, font_size in ((t["name"], a.name, 11), (t["username"], a.uid, 12),
                                    (t["password"], a.password, 12), (t["where"], address, 10)):
        pdf.setFont(regular, 8)
        pdf.drawString(left, y, label)
        pdf.setFont(bold, font_size)
        pdf.drawString(left + 38 * mm, y, value)
        y -= 6.5 * mm
    pdf.setFont(regular, 7.5)
    for n, step in enumerate(t["steps"], 1):
        for i, line in enumerate(simpleSplit(step, regular, 7.5, right - left - 6 * mm)):
            pdf.drawString(left, y, f"{n}." if i == 0 else "")
            pdf.drawString(left + 6 * mm, y, line)
            y -= 3.4 * mm


def write_letters(path: Path, data: bytes, force: bool) -> None:
    """Write the PDF 0600 (created so, never readable by others even for a moment); an existing file
    only with `force`."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | (os.O_TRUNC if force else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise LettersError(f"{path} exists already; not overwritten",
                           "choose another --output, or add --force to replace it") from None
    except OSError as e:
        raise LettersError(f"cannot write {path}: {e.strerror}") from None
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(data)
