"""schoolctl: deploy and audit a city's free-software school platform from plain YAML.

This package root is the core, the ground floor every other part stands on: the data model
(`schoolctl.config`), secrets and the vault (`schoolctl.secrets`), the error hierarchy
(`schoolctl.errors`), connections to servers (`schoolctl.connect`) and package data
(`schoolctl.resources`). It imports none of `schoolctl.cli`, `.deploy`, `.audit`, `.inventories`.
"""


def __getattr__(name: str) -> str:
    """`schoolctl.__version__`, read on first use (importlib.metadata costs start-up time)."""
    if name != "__version__":
        raise AttributeError(f"module 'schoolctl' has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = version("schoolctl")
    except PackageNotFoundError:  # a bare checkout on sys.path without an install
        found = "0+unknown"
    globals()["__version__"] = found
    return found
