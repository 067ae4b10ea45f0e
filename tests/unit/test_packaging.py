"""The house rules, checked on the source: one `schoolctl` namespace, the core on the ground floor,
the library never standing on its CLI, and every package of the tree in the wheel."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FOLDERS = {"core": "schoolctl", "cli": "schoolctl.cli", "deploy": "schoolctl.deploy", "audit": "schoolctl.audit",
           "inventories": "schoolctl.inventories", "templates": "schoolctl.templates"}
LIBRARY = ("schoolctl.cli", "schoolctl.deploy", "schoolctl.audit", "schoolctl.inventories")


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in a file (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # only the tests' own helpers (`from .support import ...`)
                assert path.is_relative_to(REPO / "tests"), f"{path}:{node.lineno}: use `from schoolctl... import`"
                continue
            found += [(node.lineno, node.module or "")]
            found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return found


def _files(folder: str) -> list[Path]:
    return sorted(p for p in (REPO / folder).rglob("*.py") if "__pycache__" not in p.parts)


def _under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


@pytest.mark.parametrize("folder", ["core", "deploy", "audit", "inventories"])
def test_the_library_never_imports_the_cli(folder: str) -> None:
    bad = [f"{p.relative_to(REPO)}:{line}: {m}" for p in _files(folder) for line, m in _imports(p)
           if _under(m, "schoolctl.cli")]
    assert not bad, "the library imports the CLI:\n" + "\n".join(bad)


def test_the_core_imports_none_of_the_others() -> None:
    bad = [f"{p.relative_to(REPO)}:{line}: {m}" for p in _files("core") for line, m in _imports(p)
           if any(_under(m, pkg) for pkg in LIBRARY)]
    assert not bad, "the core imports a package above it:\n" + "\n".join(bad)


def test_only_the_schoolctl_namespace_is_imported() -> None:
    """No file imports the checkout's folders by their bare names (`import deploy`), which would
    load a second copy of a module beside schoolctl's, or clash with PyPI's `deploy`."""
    folders = ("cli", "deploy", "audit", "inventories", "core", "templates")
    bad = [f"{p.relative_to(REPO)}:{line}: {m}" for top in (*folders, "tests", "bench") for p in _files(top)
           for line, m in _imports(p) if m.split(".")[0] in folders]
    assert not bad, "\n".join(bad)


def test_no_import_error_is_swallowed() -> None:
    bad = [f"{p.relative_to(REPO)}:{n.lineno}" for top in FOLDERS for p in _files(top)
           for n in ast.walk(ast.parse(p.read_text(encoding="utf-8")))
           if isinstance(n, ast.ExceptHandler) and "ImportError" in ast.unparse(n.type or ast.Name("x"))]
    assert not bad, "ImportError caught in " + ", ".join(bad)


def test_every_package_of_the_tree_is_in_the_wheel() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert config["package-dir"] == {pkg: folder for folder, pkg in FOLDERS.items()}
    tree = {".".join([FOLDERS[init.relative_to(REPO).parts[0]], *init.relative_to(REPO).parts[1:-1]])
            for folder in FOLDERS for init in (REPO / folder).rglob("__init__.py")}
    assert tree == set(config["packages"])
    assert config["license-files"] == ["LICENSE"]
    assert "GNU AFFERO GENERAL PUBLIC LICENSE" in (REPO / "LICENSE").read_text()[:200]
