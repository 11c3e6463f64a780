"""Fixtures of the localisation tests (the phantom itself lives in `phantom_spine.py`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.localize.phantom_spine import write_phantom_root


@pytest.fixture(scope="session")
def phantom_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four phantom studies (session-wide, read-only for the tests)."""
    return write_phantom_root(tmp_path_factory.mktemp("phantom"), n=4)
