"""`preset-model interpolate`: voice references, latent round trip, the morph bank."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from dexed_data.schema import VOICE_MAX, apply_fixed
from dexed_data.sysex import decode_file
from preset_model.cli import app
from preset_model.errors import PresetModelError
from preset_model.inference import load_run
from preset_model.interpolate import interpolate, read_voice
from run_fixtures import build


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    return build(tmp_path_factory.getbasetemp() / "fitted")


def test_read_voice_counts_from_one(fitted, tmp_path):
    voices = decode_file(fitted.bank).voices
    v = read_voice(f"{fitted.bank}:2")
    assert v.name == voices[1].name and np.array_equal(v.raw, apply_fixed(voices[1].raw))
    for bad in (f"{fitted.bank}:0", f"{fitted.bank}:33", str(fitted.bank), str(tmp_path / "none.syx:1")):
        with pytest.raises(PresetModelError):
            read_voice(bad)


def test_a_voice_number_counts_across_a_files_messages_and_names_its_message(fitted, tmp_path):
    # audit W: `dexed-data list` shows voice 4 of a second bank as "two.syx:4 (message 2)", and
    # two.syx:4 took the first bank's voice 4 with nothing to tell them apart
    bank = fitted.bank.read_bytes()
    two = tmp_path / "two.syx"
    two.write_bytes(bank + bank)
    v = read_voice(f"{two}:36")
    assert v.source == f"{two}:36 (message 2, voice 4)" and v.name == decode_file(fitted.bank).voices[3].name
    assert read_voice(f"{two}:4").source == f"{two}:4 (message 1, voice 4)"
    assert read_voice(f"{fitted.bank}:4").source == f"{fitted.bank}:4"       # one message: as given


def test_preset_latent_round_trip(fitted):
    run = load_run(fitted.flow6)
    raw = np.stack([read_voice(f"{fitted.bank}:{i}").raw for i in (1, 2, 3)])
    z = run.preset_to_latent(raw)
    assert z.shape == (3, run.model.cfg.latent_dim)
    assert np.array_equal(run.latent_to_preset(z), raw)


def test_interpolate_path_ends_at_both_presets(fitted):
    a, b = read_voice(f"{fitted.bank}:1"), read_voice(f"{fitted.bank}:5")
    m = interpolate(fitted.flow6, a, b, steps=5)
    assert m.raw.shape == (5, 145) and (m.raw <= VOICE_MAX).all()
    assert m.endpoint_errors == (0, 0)
    assert np.array_equal(m.raw[0], a.raw) and np.array_equal(m.raw[-1], b.raw)
    with pytest.raises(PresetModelError, match="between 2 and 32"):
        interpolate(fitted.flow6, a, b, steps=40)


def test_mlp_head_is_refused_clearly(fitted):
    a = read_voice(f"{fitted.bank}:1")
    with pytest.raises(PresetModelError, match="MLP regression head"):
        interpolate(fitted.mlp1, a, a)


def test_cli_interpolate_writes_a_bank(fitted, tmp_path):
    out = tmp_path / "morph.syx"
    res = CliRunner().invoke(app, ["interpolate", str(fitted.flow6), f"{fitted.bank}:1", f"{fitted.bank}:7",
                                   "--steps", "8", "-o", str(out)])
    assert res.exit_code == 0, res.output
    voices = decode_file(out).voices
    assert len(out.read_bytes()) == 4104 and len(voices) == 32
    assert [v.name.strip() for v in voices[:8]] == [f"MORPH {i:02d}" for i in range(1, 9)]
    assert np.array_equal(apply_fixed(voices[0].raw), read_voice(f"{fitted.bank}:1").raw)
    # audit A4: a name's control bytes (a newline, ESC) went to the terminal as they are
    from dexed_data.sysex import encode_single

    odd = tmp_path / "odd.syx"
    odd.write_bytes(encode_single(voices[0].raw, "A\nB\x1bC"))
    res = CliRunner().invoke(app, ["interpolate", str(fitted.flow6), f"{odd}:1", f"{fitted.bank}:7", "-o",
                                   str(tmp_path / "m2.syx")])
    assert res.exit_code == 0, res.output
    assert "(A·B·C) →" in res.stdout and "\x1b" not in res.stdout


def test_a_truncated_banks_note_is_said_once_and_a_wav_name_is_refused(fitted, tmp_path):
    cut = tmp_path / "cut.syx"
    cut.write_bytes(fitted.bank.read_bytes()[:2000])          # 15 of its 32 voices
    res = CliRunner().invoke(app, ["interpolate", str(fitted.flow6), f"{cut}:1", f"{cut}:2", "-o", str(tmp_path / "i.syx")])
    assert res.exit_code == 0, res.output
    notes = [line for line in res.stderr.splitlines() if line.strip().startswith("note:")]
    assert notes and len(notes) == len(set(notes)), res.stderr      # each once, not once per voice
    assert "repaired" not in res.stdout
    res = CliRunner().invoke(app, ["interpolate", str(fitted.flow6), f"{cut}:1", f"{cut}:2", "-o", str(tmp_path / "i.wav")])
    assert res.exit_code == 2 and "give it a .syx name" in res.output and not (tmp_path / "i.wav").exists()
