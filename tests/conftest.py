"""Shared fixtures: real recordings in ../shared/data, seeded RNGs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """Folder of the real recordings; the test is skipped (with the reason) when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(
            f"real recordings not found at {SHARED_DATA} (the shared/ folder beside the repo)"
        )
    return SHARED_DATA


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)
