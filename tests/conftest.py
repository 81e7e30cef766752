"""Shared fixtures: tiny suites and models that make exactness tests fast."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Test tensors are tiny: one thread avoids inter-op overhead that dominates them on a busy machine.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def shared_data() -> Path | None:
    """The repository's shared data folder when present (tests using it skip otherwise)."""
    env = os.environ.get("METAOPT_DATA")
    path = Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"
    return path if path.is_dir() else None
