"""Shared fixtures: paths to the real CC0 corpus (../shared/corpus/dx7-cc0) and its ROM1A bank,
the golden plug-in renders, and the real Dexed plug-in (../shared/plugins/Dexed.vst3).

Tests that need them skip with a clear reason when they are absent (a fresh clone has none);
under CI (``CI`` set) a missing one is an error instead, so nothing skips silently there.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_DEFAULT_CORPUS = REPO.parent / "shared" / "corpus" / "dx7-cc0"
_DEFAULT_GOLDEN = REPO.parent / "shared" / "reference" / "golden"


_DEFAULT_PLUGIN = REPO.parent / "shared" / "plugins" / "Dexed.vst3"


def _need(path: Path, what: str, env: str) -> Path:
    if path.is_dir() or (path.is_file() and path.suffix == ".so"):
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


@pytest.fixture(scope="session")
def dexed_plugin(tmp_path_factory):
    """The real Dexed plug-in (a VST3 bundle, or a VST2 .so given by DEXED_PLUGIN), loaded with
    ``HOME`` in a temporary folder for the rest of the session: Dexed writes its settings under
    ``~/.local/share/DigitalSuburban`` when it loads."""
    path = _need(Path(os.environ.get("DEXED_PLUGIN", _DEFAULT_PLUGIN)), "the real Dexed plug-in", "DEXED_PLUGIN")
    old = os.environ.get("HOME")
    os.environ["HOME"] = str(tmp_path_factory.mktemp("home"))
    yield str(path)
    if old is not None:
        os.environ["HOME"] = old
