"""Logging: secrets are masked in every record, whatever logger writes it."""

from __future__ import annotations

import logging
import os

from schoolctl.secrets import RedactingFilter


def setup() -> None:
    level = os.environ.get("SCHOOLCTL_LOG", "WARNING").upper()
    logging.basicConfig(level=getattr(logging, level, logging.WARNING), format="%(levelname)s %(name)s: %(message)s")
    flt = RedactingFilter()
    for handler in logging.getLogger().handlers:
        handler.addFilter(flt)
