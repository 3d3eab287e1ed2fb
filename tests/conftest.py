"""Shared fixtures: paths to the real CC0 corpus (../shared/corpus/dx7-cc0) and its ROM1A bank.

Tests that need the corpus skip with a clear reason when it is absent (a fresh clone has none);
under CI (``CI`` set) a missing corpus is an error instead, so nothing skips silently there.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_DEFAULT_CORPUS = REPO.parent / "shared" / "corpus" / "dx7-cc0"
_DEFAULT_GOLDEN = REPO.parent / "shared" / "reference" / "golden"


def _need(path: Path, what: str, env: str) -> Path:
    if path.is_dir():
        return path
    reason = f"{what} not found at {path} (set {env} to its folder)"
    if os.environ.get("CI"):
        pytest.fail(f"CI must have {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    """The CC0 DX7 corpus folder (4,000 real files)."""
    return _need(Path(os.environ.get("DEXED_CORPUS", _DEFAULT_CORPUS)), "the CC0 DX7 corpus", "DEXED_CORPUS")


@pytest.fixture(scope="session")
def rom1a_path(corpus_dir: Path) -> Path:
    """Yamaha's ROM1A bank (32 voices, valid), a known real file."""
    return corpus_dir / "Original Yamaha" / "DX7 ROM1" / "ROM1A.syx"


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    """Plug-in golden renders (../shared/reference/golden)."""
    return _need(Path(os.environ.get("DEXED_GOLDEN", _DEFAULT_GOLDEN)), "the golden plug-in renders", "DEXED_GOLDEN")


@pytest.fixture(scope="session")
def presets_dir() -> Path:
    """The bundled, project-authored presets folder."""
    return REPO / "presets"
