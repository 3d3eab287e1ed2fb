"""The bundled, project-authored banks in ``presets/``: valid, regenerable, and musically sane.

Each bank must decode cleanly (32 voices, good checksum, nothing repaired), its voices must be
distinct by name and by sound, audible at (60, 85), near their intended pitch and shaped like
their category (plucks decay, organs hold flat, pads fade in). ``tools/make_presets.py`` must
rebuild the files byte for byte.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from dexed_data import sysex

REPO = Path(__file__).resolve().parents[1]


def _load_make_presets():
    spec = importlib.util.spec_from_file_location("make_presets", REPO / "tools" / "make_presets.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_presets"] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


mp = _load_make_presets()
BANK_FILES = sorted(mp.BANKS)


@pytest.fixture(scope="module")
def decoded(presets_dir: Path) -> dict[str, sysex.FileResult]:
    return {name: sysex.decode_file(presets_dir / name) for name in BANK_FILES}


@pytest.fixture(scope="module")
def renders(decoded) -> dict[tuple[str, int], np.ndarray]:
    """Every bundled voice rendered at (60, 85) from the decoded file (not from the recipe)."""
    return {(f, i): mp.render(v.raw, v.name) for f, res in decoded.items() for i, v in enumerate(res.voices)}


def test_there_is_at_least_one_bank(presets_dir: Path):
    assert BANK_FILES and all((presets_dir / f).is_file() for f in BANK_FILES)
    assert (presets_dir / "README.md").is_file()


@pytest.mark.parametrize("filename", BANK_FILES)
def test_bank_is_a_clean_32_voice_dump(presets_dir: Path, decoded, filename: str):
    data = (presets_dir / filename).read_bytes()
    assert len(data) == 4104 and data[:6] == bytes([0xF0, 0x43, 0x00, 0x09, 0x20, 0x00]) and data[-1] == 0xF7
    assert sysex.checksum(data[6:4102]) == data[4102]
    result = decoded[filename]
    assert result.messages == 1 and result.problems == []
    assert len(result.voices) == 32
    assert all(v.problems == () for v in result.voices), "no voice may need a repair"


@pytest.mark.parametrize("filename", BANK_FILES)
def test_file_holds_exactly_the_recipes(decoded, filename: str):
    for voice, recipe in zip(decoded[filename].voices, mp.BANKS[filename], strict=True):
        assert voice.name.rstrip() == recipe.name
        np.testing.assert_array_equal(voice.raw, mp.voice_to_raw(recipe), err_msg=recipe.name)


def test_names_and_sounds_are_distinct(decoded, renders):
    names = [v.name.rstrip() for res in decoded.values() for v in res.voices]
    assert len(set(names)) == len(names), "voice names repeat"
    assert all(0 < len(n) <= 10 and n.isascii() for n in names)
    raws = {bytes(v.raw) for res in decoded.values() for v in res.voices}
    assert len(raws) == len(names), "two voices have the same parameters"
    keys = list(renders)
    for a in range(len(keys)):
        for b in range(a + 1, len(keys)):
            diff = np.abs(renders[keys[a]] - renders[keys[b]]).max() / 8
            assert diff > 1e-3, f"{keys[a]} and {keys[b]} sound the same"


def test_every_voice_is_audible_at_60_85(renders):
    quiet = {k: float(np.abs(a).max() / 8) for k, a in renders.items() if np.abs(a).max() / 8 < 0.02}
    assert not quiet, f"voices below -34 dBFS peak (plug-in scale): {quiet}"


# Categories whose sound must die away while the key is still held, and how far (dB re peak).
DECAYING = {"pluck": -5.0, "mallet": -5.0, "e-piano": -5.0, "percussion": -5.0, "bell": -2.0}


@pytest.mark.parametrize("filename", BANK_FILES)
def test_pitch_and_envelope_fit_the_category(filename: str):
    problems = []
    for v in mp.BANKS[filename]:
        m = mp.measure(v)
        if m.expected_f0 is not None and v.category not in ("fx", "percussion"):
            if abs(m.f0 / m.expected_f0 - 1) > 0.02:
                problems.append(f"{v.name}: f0 {m.f0:.1f} Hz, want {m.expected_f0:.1f}")
        if v.category in DECAYING and m.held_db > DECAYING[v.category]:
            problems.append(f"{v.name}: {v.category} still at {m.held_db:.1f} dB after 1.2 s")
        if v.category == "organ" and (m.attack_s > 0.05 or m.held_db < -3.5):
            problems.append(f"{v.name}: organ attack {m.attack_s:.2f} s, held {m.held_db:.1f} dB")
        if v.category in ("pad", "strings", "lead", "wind", "brass") and m.held_db < -8:
            problems.append(f"{v.name}: {v.category} falls to {m.held_db:.1f} dB while held")
        if v.category == "pad" and m.attack_s < 0.2:
            problems.append(f"{v.name}: pad reaches full level in {m.attack_s:.2f} s")
        if v.category not in ("fx", "bell") and m.release_db > -6:  # bells may ring on
            problems.append(f"{v.name}: still at {m.release_db:.1f} dB 0.4 s after key-off")
    assert not problems, "\n".join(problems)


def test_make_presets_regenerates_identical_files(tmp_path: Path, presets_dir: Path):
    written = mp.main(tmp_path)
    assert sorted(p.name for p in written) == BANK_FILES
    for p in written:
        assert p.read_bytes() == (presets_dir / p.name).read_bytes(), f"{p.name} differs from the recipes"
    assert mp.main(tmp_path) == written                    # its own files again: the same bytes, no --force
    written[0].write_bytes(b"a user's own bank")           # audit A3: replaced without a word
    with pytest.raises(FileExistsError, match="pass --force"):
        mp.main(tmp_path)
    assert written[0].read_bytes() == b"a user's own bank"
    mp.main(tmp_path, force=True)
    assert written[0].read_bytes() == (presets_dir / written[0].name).read_bytes()
    with pytest.raises(FileNotFoundError, match="empty --out"):   # it wrote into the current folder
        mp.main("")
