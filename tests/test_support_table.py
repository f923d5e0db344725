"""The support tables in the export README and validate POLICY are generated from the
tests (``tests/support_table.py``) and must not drift from them."""

from __future__ import annotations

import importlib

import pytest

from tests.support_table import PRODUCERS, TARGETS, render, replaced


@pytest.mark.parametrize("target", TARGETS, ids=lambda p: p.name)
def test_table_is_current(target) -> None:  # type: ignore[no-untyped-def]
    """Regenerate with ``.venv/bin/python -m tests.support_table``."""
    text = target.read_text(encoding="utf-8")
    assert replaced(text, render()) == text


@pytest.mark.parametrize("producer", sorted(PRODUCERS))
def test_each_producer_row_names_a_real_test(producer: str) -> None:
    path, function = PRODUCERS[producer][2].split("::")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    assert callable(getattr(module, function))
