"""Audit reports: JSON (stable schema), JUnit XML, a static single-file HTML page, a terminal table."""

from __future__ import annotations

FORMATS = ("table", "json", "junit", "html")
