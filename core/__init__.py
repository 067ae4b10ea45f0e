"""schoolctl: deploy and audit a city's free-software school platform from plain YAML.

This package root is the core, the ground floor every other part stands on: the data model
(`schoolctl.config`), secrets and the vault (`schoolctl.secrets`), the error hierarchy
(`schoolctl.errors`), connections to servers (`schoolctl.connect`) and package data
(`schoolctl.resources`). It imports none of `schoolctl.cli`, `.deploy`, `.audit`, `.inventories`.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("schoolctl")
except PackageNotFoundError:  # a bare checkout on sys.path without an install
    __version__ = "0+unknown"
