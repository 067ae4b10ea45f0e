"""SCHOOLCTL_LAYERS: a supported way to deploy only some layers (development and tests)."""

from __future__ import annotations

import pytest

from schoolctl.deploy import school


def test_all_layers_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SCHOOLCTL_LAYERS", raising=False)
    assert school.selected_layers() == school.LAYERS


def test_a_selection_keeps_the_layer_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCHOOLCTL_LAYERS", "web, base,moodle")
    assert school.selected_layers() == ("base", "web", "moodle")


def test_an_unknown_layer_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCHOOLCTL_LAYERS", "base,mooodle")
    with pytest.raises(ValueError, match=r"SCHOOLCTL_LAYERS names unknown layer.*mooodle.*the layers are base"):
        school.selected_layers()
