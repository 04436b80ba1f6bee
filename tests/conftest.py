"""Test fixtures. Tests (never the product) may read ../shared beside the repository."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
GOLDEN = SHARED / "specs" / "golden"
EIMN_WEIGHTS = SHARED / "weights" / "EIMN"
DATA = SHARED / "data"

torch.set_num_threads(min(2, torch.get_num_threads()))


def need_shared(path: Path) -> Path:
    """Shared material is part of the CI contract: a missing file is a failure, not a skip."""
    assert path.exists(), f"test material missing: {path} (tests expect ../shared beside the repo)"
    return path


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    return need_shared(GOLDEN)


@pytest.fixture(scope="session")
def eimn_weights() -> Path:
    return need_shared(EIMN_WEIGHTS)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return need_shared(DATA)
