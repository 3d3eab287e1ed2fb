"""`preset-model match`: audio loading, the files → voices rule, .syx output, scores."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from dexed_data.engines import EngineSpec, make_engine
from dexed_data.schema import apply_fixed
from dexed_data.sysex import decode_file
from preset_model.cli import app
from preset_model.match import (AudioInputError, group_files, load_audio, match_files, shift_pitch, sound_name,
                                 voice_name)
from run_fixtures import HOLD, NOTES, RELEASE, build, counted

SR = 22050


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    return build(tmp_path_factory.getbasetemp() / "fitted")


@pytest.fixture(scope="module")
def recording(fitted, tmp_path_factory):
    """A bundled voice rendered on MIDI 60 at 44.1 kHz, stereo, longer than the model's notes."""
    voice = decode_file(fitted.bank).voices[3]
    audio = make_engine(EngineSpec(sample_rate=44100)).render(apply_fixed(voice.raw), [(60, 85)], 1.0, 0.5).audio[0]
    path = tmp_path_factory.mktemp("wav") / "my clav!.wav"
    sf.write(path, np.stack([audio, audio], axis=1), 44100)
    return path


def test_load_audio_resamples_mixes_and_fits_length(tmp_path):
    t = np.arange(4410) / 44100
    tone = np.sin(2 * np.pi * 441 * t).astype(np.float32)
    path = tmp_path / "x.wav"
    sf.write(path, np.stack([tone, 0 * tone], axis=1), 44100)   # stereo: one silent channel
    x = load_audio(path, SR, 5000)
    assert x.shape == (5000,) and x.dtype == np.float32
    assert np.abs(x[:2205]).max() == pytest.approx(0.5, abs=0.02)  # mono mix halves it
    assert np.all(x[2300:] == 0)                                   # zero-padded after 0.1 s
    assert load_audio(path, SR, 1000).shape == (1000,)             # trimmed
    with pytest.raises(AudioInputError):
        load_audio(tmp_path / "missing.wav", SR, 100)


def test_files_to_voices_rule():
    assert group_files(["a", "b"], ((60, 85),)) == [[(0, "a")], [(0, "b")]]
    six = [f"n{i}" for i in range(6)]
    assert group_files(six, NOTES) == [list(enumerate(six))]
    assert len(group_files(six * 2, NOTES)) == 2
    assert group_files(["solo"], NOTES) == [[(3, "solo")]]            # taken as 60:85
    assert group_files(["a", "b"], NOTES, each=True) == [[(3, "a")], [(3, "b")]]
    with pytest.raises(AudioInputError, match="6 files per sound"):
        group_files(["a", "b"], NOTES)


def test_files_named_by_note_group_by_sound_in_any_order():
    # export-wav's names: ID_NAME_PITCH-VELOCITY; shell globs sort 60-127 before 60-42
    files = [f"w/ab_{p}-{v}.wav" for p, v in sorted(NOTES, key=str)] + ["w/cd_70-85.wav", "w/cd_40-85.wav"]
    ab, cd = group_files(files, NOTES)
    assert ab == [(j, f"w/ab_{p}-{v}.wav") for j, (p, v) in enumerate(NOTES)]
    assert cd == [(0, "w/cd_40-85.wav"), (5, "w/cd_70-85.wav")]           # other notes missing, filled
    assert group_files(["bass_40-85.wav"], NOTES) == [[(0, "bass_40-85.wav")]]  # a lone note that is not 60:85
    assert group_files(["x_40-85.wav", "y.wav"], NOTES, each=True) == [[(0, "x_40-85.wav")], [(3, "y.wav")]]
    with pytest.raises(AudioInputError, match="both note 40:85"):
        group_files(["a_40-85.wav", "a_40-85.flac"], NOTES)
    with pytest.raises(AudioInputError, match="other files are not.*or pass --each"):
        group_files(["a_40-85.wav"] + [f"n{i}" for i in range(5)], NOTES)
    # a note that is not the model's: played there, standing for the nearest model note (shifted to it)
    assert group_files(["piano_62-85.wav"], NOTES) == [[(3, "piano_62-85.wav")]]
    assert group_files(["a_38-85.wav", "a_72-85.wav"], NOTES) == [[(0, "a_38-85.wav"), (5, "a_72-85.wav")]]
    with pytest.raises(AudioInputError, match="both note 60:85 of the same sound"):
        group_files(["a_61-85.wav", "a_62-85.wav"], NOTES)
    far = ((0, 1), (127, 127), (21, 1), (108, 127))                    # a model without 60:85
    assert group_files(["solo.wav"], far) == [[(2, "solo.wav")]]      # 60:85 stands for the nearest, 21:1


def test_sound_names_drop_note_suffix_and_export_id():
    assert sound_name(["wav/00d671d7c67dab1f_FRETLESS_40-85.wav", "wav/00d671d7c67dab1f_FRETLESS_70-85.wav"]) \
        == "FRETLESS  "
    assert sound_name(["piano low.wav", "piano high.wav"]) == "PIANO     "
    assert sound_name(["a.wav", "b.wav"]) == "A         "


def test_shift_pitch_moves_an_octave():
    t = np.arange(SR) / SR
    x = np.sin(2 * np.pi * 220 * t).astype(np.float32)
    y = shift_pitch(x, 12)[: SR // 2]
    peak = np.argmax(np.abs(np.fft.rfft(y))) * SR / len(y)
    assert peak == pytest.approx(440, abs=3)


def test_voice_name_is_dx7_safe():
    assert voice_name("/x/my clav!é.wav") == "MY CLAV!_ "
    assert len(voice_name("a_very_long_file_name.wav")) == 10
    assert all(32 <= ord(c) < 127 for c in voice_name("naïve.wav"))


def test_match_six_note_model_from_one_file(fitted, recording):
    result = match_files(fitted.flow6, [recording])
    (voice,) = result.voices
    assert voice.raw.shape == (145,) and voice.raw.dtype == np.uint8
    assert voice.render.shape == (6, int((HOLD + RELEASE) * SR))
    (score,) = voice.scores
    assert score.note == (60, 85) and 0.0 <= score.similarity <= 1.0
    assert np.isnan(score.pitch_offset_cents) == score.rerender_silent   # no pitch of a silent re-render


def test_match_named_notes_fill_the_others(fitted, recording, tmp_path):
    named = tmp_path / "clav_60-85.wav"
    named.write_bytes(recording.read_bytes())
    result = match_files(fitted.flow6, [named])
    (voice,) = result.voices
    assert voice.name == "CLAV      " and [s.note for s in voice.scores] == [(60, 85)]


def test_a_file_named_by_a_note_that_is_not_the_models_is_played_there_and_shifted(fitted, recording, tmp_path):
    named = tmp_path / "clav_62-85.wav"           # the 60:85 recording, named two semitones up
    named.write_bytes(recording.read_bytes())
    result = match_files(fitted.flow6, [named])
    (score,) = result.voices[0].scores
    assert score.note == (62, 85) and score.model_note == (60, 85) and score.shift_semitones == -2
    for cmd in (["match", str(fitted.flow6)], ["match", "--data", str(fitted.data), "--refine", "12"]):
        res = CliRunner().invoke(app, [*cmd, str(named), "-o", str(tmp_path / "m.syx"), "--force"])
        assert res.exit_code == 0, res.output
        assert "note 62:85 from its name, pitch-shifted -2 semitones to the" in res.output, res.output
        assert "clav_62-85.wav  note 62:85" in res.output        # scored on the note it was played on


def test_cli_match_writes_valid_syx_and_wavs(fitted, recording, tmp_path):
    out, wavs = tmp_path / "one.syx", tmp_path / "wavs"
    res = CliRunner().invoke(app, ["match", str(fitted.flow6), str(recording), "-o", str(out), "--wav", str(wavs)])
    assert res.exit_code == 0, res.output
    assert "similarity" in res.output and "pitch offset" in res.output
    decoded = decode_file(out)
    assert len(decoded.voices) == 1 and not [p for p in decoded.problems if not p.repaired]
    assert decoded.voices[0].name.strip() == "MY CLAV!"
    assert len(out.read_bytes()) == 163
    assert (wavs / "my clav!.rerender.wav").exists()
    # a 1-note model: one voice per file → a bank
    bank = tmp_path / "bank.syx"
    res = CliRunner().invoke(app, ["match", str(fitted.mlp1), str(recording), str(recording), "-o", str(bank)])
    assert res.exit_code == 0, res.output
    voices = decode_file(bank).voices
    assert len(bank.read_bytes()) == 4104 and len(voices) == 32
    assert [v.name.strip() for v in voices[:2]] == ["MY CLAV!", "MY CLAV!"]


def test_odd_audio_inputs_found_by_fuzzing(fitted, tmp_path):
    import os

    from preset_model.match import rerender_names

    t = np.arange(SR) / SR
    tone = (0.2 * np.sin(2 * np.pi * 261.6 * t)).astype(np.float32)
    # a file named only by its note is a sound of its own (a traceback: Invalid name '')
    sf.write(tmp_path / "_60-85.wav", tone, SR)
    result = match_files(fitted.mlp1, [tmp_path / "_60-85.wav"])
    assert len(result.voices) == 1
    # a sample rate with no common factor with the model's is resampled through a close ratio (a
    # 20 × rate-tap filter before: 1.25 GB at 1,000,003 Hz); absurd rates are refused
    sf.write(tmp_path / "odd.wav", np.sin(np.arange(1_000_003 // 4) * 0.1).astype(np.float32), 1_000_003)
    assert load_audio(tmp_path / "odd.wav", SR, SR // 8).shape == (SR // 8,)
    with open(tmp_path / "absurd.wav", "wb") as fh:
        sf.write(fh, tone[:4000], 2_147_483_647, format="WAV")
    with pytest.raises(AudioInputError, match="sample rate of 2,147,483,647 Hz"):
        load_audio(tmp_path / "absurd.wav", SR, SR)
    # samples far past full scale (1e20: every distance NaN, a silent voice) are refused
    sf.write(tmp_path / "loud.wav", tone * np.float32(5e19), SR, subtype="FLOAT")
    with pytest.raises(AudioInputError, match="dB over full scale"):
        match_files(fitted.mlp1, [tmp_path / "loud.wav"])
    # played far above the model's notes after a silent lead-in: moved down, the note length takes
    # only the lead-in (a silent target, then a silent voice); said, with what to do
    lead = np.concatenate([np.zeros(SR // 2, np.float32), tone, tone])
    sf.write(tmp_path / "flute_100-85.wav", lead, SR)
    with pytest.raises(AudioInputError, match="cut the silence before the note"):
        match_files(fitted.mlp1, [tmp_path / "flute_100-85.wav"])
    # a pipe is not "no such file"; more sounds than a bank holds are refused before any matching
    os.mkfifo(tmp_path / "pipe.wav")
    with pytest.raises(AudioInputError, match="not a regular file"):
        load_audio(tmp_path / "pipe.wav", SR, SR)
    many = [tmp_path / f"s{i}.wav" for i in range(33)]
    with pytest.raises(Exception, match="more than one DX7 bank holds"):
        match_files(fitted.mlp1, many, each=True)            # not even read: they do not exist
    # a re-render never takes another input's own name
    assert rerender_names(["d1/a.wav", "d2/a.wav", "d1/a-2.wav"]) == ["a.rerender.wav", "a-3.rerender.wav",
                                                                        "a-2.rerender.wav"]


def test_a_lead_in_longer_than_the_note_is_said_not_matched_as_silence(fitted, tmp_path):
    # the note uses the file's first HOLD + RELEASE seconds; a recording that starts later was
    # matched against silence: similarity 1.000 and a note calling the input "silent (all zeros)"
    t = np.arange(SR) / SR
    tone = (0.3 * np.sin(2 * np.pi * 262 * t)).astype(np.float32)
    late = np.concatenate([np.zeros(int(1.5 * SR), np.float32), tone])
    sf.write(tmp_path / "late.wav", late, SR)
    with pytest.raises(AudioInputError, match=r"late.wav: silent for the whole 0.75 s .* starts at 1.50 s; cut the "
                                              "silence before the note"):
        match_files(fitted.mlp1, [tmp_path / "late.wav"])
    res = CliRunner().invoke(app, ["match", str(fitted.mlp1), str(tmp_path / "late.wav"), "-o", str(tmp_path / "l.syx")])
    assert res.exit_code == 2 and "starts at 1.50 s" in res.output and not (tmp_path / "l.syx").exists()
    # a quiet recording made audible by --gain-db is judged after the gain; a silent file still matches
    sf.write(tmp_path / "quiet.wav", late * np.float32(1e-3), SR)          # −70 dB: below the silence level
    with pytest.raises(AudioInputError, match="starts at 1.50 s"):
        match_files(fitted.mlp1, [tmp_path / "quiet.wav"], gain_db=40.0)
    sf.write(tmp_path / "zeros.wav", np.zeros(3 * SR, np.float32), SR)
    assert len(match_files(fitted.mlp1, [tmp_path / "zeros.wav"]).voices) == 1


def test_noise_before_the_sound_and_near_silent_inputs_are_said(fitted, tmp_path):
    # audit Z17: hiss before the note passed the lead-in check (matched to the hiss alone, unsaid);
    # dither or stereo channels that cancel were matched as sound, and --gain-db auto raised them 82 dB
    from preset_model.match import auto_gain_db

    t = np.arange(SR) / SR
    tone = (0.2 * np.sin(2 * np.pi * 262 * t) * np.exp(-2 * t)).astype(np.float32)
    hiss = np.random.default_rng(0).normal(0, 3e-4, SR).astype(np.float32)          # peaks near −60 dBFS
    sf.write(tmp_path / "lead.wav", np.concatenate([hiss, tone]), SR, subtype="PCM_16")
    with pytest.raises(AudioInputError, match=r"lead.wav: the 0.75 s that a note lasts peak more than 40 dB below "
                                              r"the rest of the file, whose sound starts at 1.00 s"):
        match_files(fitted.mlp1, [tmp_path / "lead.wav"])
    sf.write(tmp_path / "early.wav", np.concatenate([tone, hiss]), SR, subtype="PCM_16")   # hiss after: fine
    assert len(match_files(fitted.mlp1, [tmp_path / "early.wav"]).voices) == 1
    sf.write(tmp_path / "cancel.wav", np.stack([tone, -tone], 1), SR, subtype="PCM_16")   # opposite polarity
    assert auto_gain_db([np.full(8, 1e-4, np.float32)]) == 0.0 and auto_gain_db([tone * 0.01]) > 30
    for gain in ("0", "auto"):
        res = CliRunner().invoke(app, ["match", "--data", str(fitted.data), str(tmp_path / "cancel.wav"), "-o",
                                       str(tmp_path / f"c{gain}.syx"), "--gain-db", gain])
        assert res.exit_code == 0, res.output
        assert "cancel.wav is near-silent on this note (its peak is below -70 dBFS)" in res.output, res.output
        assert gain == "0" or "gain +0.0 dB (auto: near-silent input, left at its level)" in res.output
    # a cut-off file of a known format: said so, not "use WAV, FLAC, OGG or AIFF"
    sf.write(tmp_path / "whole.flac", np.tile(tone, 3), SR)
    data = (tmp_path / "whole.flac").read_bytes()
    (tmp_path / "cut.flac").write_bytes(data[:len(data) // 10])                 # cut within the note
    with pytest.raises(AudioInputError) as err:
        match_files(fitted.mlp1, [tmp_path / "cut.flac"])
    assert "FLAC" in str(err.value) and "WAV, FLAC" not in str(err.value), str(err.value)


def test_what_follows_the_note_and_a_header_that_says_more_are_judged_right(fitted, tmp_path):
    # audit Y3: one infinite or huge sample after the note (where nothing is matched) made the note a
    # "lead-in" whose advice cut the note away; a WAV or AIFF cut inside the note was matched on its
    # start and silence (its reader reports the frames there); a cut-off OGG "holds no samples"; a
    # file a second over the 600 s limit was "600 s … at most 600 s"; a dataset was called a model
    t = np.arange(SR) / SR
    tone = (0.2 * np.sin(2 * np.pi * 262 * t) * np.exp(-2 * t)).astype(np.float32)
    for bad in (np.inf, 1e6):
        after = np.concatenate([tone, np.zeros(SR, np.float32)])
        after[int(1.5 * SR)] = bad
        sf.write(tmp_path / "after.wav", after, SR, subtype="FLOAT")
        assert len(match_files(fitted.mlp1, [tmp_path / "after.wav"]).voices) == 1
    # (A5: compressed WAV, whose frames its fact chunk counts, and RF64, with its 64-bit lengths, too)
    for name, subtype, kind in (("w.wav", "PCM_16", "WAV"), ("w.aiff", "PCM_24", "AIFF"), ("x.wav", "FLOAT", "WAV"),
                                ("ima.wav", "IMA_ADPCM", "WAV"), ("ms.wav", "MS_ADPCM", "WAV"),
                                ("gsm.wav", "GSM610", "WAV"), ("r.wav", "PCM_16", "RF64")):
        sf.write(tmp_path / name, np.tile(tone, 2), SR, subtype=subtype, format=kind)   # 2 s: the note is the first 0.75 s
        data = (tmp_path / name).read_bytes()
        (tmp_path / f"cut-{name}").write_bytes(data[:len(data) // 5])       # cut at 0.4 s, inside the note
        (tmp_path / f"long-{name}").write_bytes(data[:len(data) * 3 // 4])   # cut after the note: used
        with pytest.raises(AudioInputError, match=rf"cut-{name}: cut off: its header says 2.0\d s of audio, the file "
                                                  r"holds 0.\d\d s; export it again"):
            load_audio(tmp_path / f"cut-{name}", SR, int(0.75 * SR))
        assert np.abs(load_audio(tmp_path / f"long-{name}", SR, int(0.75 * SR))).max() > 0.1
    sf.write(tmp_path / "a.ogg", np.tile(tone, 4), SR)
    (tmp_path / "cut.ogg").write_bytes((tmp_path / "a.ogg").read_bytes()[:5000])
    with pytest.raises(AudioInputError, match="holds no samples that can be read, in 5,000 bytes: it is damaged or cut "
                                              "off"):
        load_audio(tmp_path / "cut.ogg", SR, int(0.75 * SR))
    # regression review R1: compressed WAV data (blocks of many frames) is not judged by its header;
    # an empty WAV with a long LIST chunk is empty, not damaged; 600 s and a sample is "more than 600 s"
    sf.write(tmp_path / "adpcm.wav", np.tile(tone, 2), SR, subtype="IMA_ADPCM")
    assert np.abs(load_audio(tmp_path / "adpcm.wav", SR, int(0.75 * SR))).max() > 0.1
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), SR, subtype="PCM_16")
    data = (tmp_path / "empty.wav").read_bytes()
    listed = data[:12] + b"LIST" + (5000).to_bytes(4, "little") + bytes(5000) + data[12:]
    (tmp_path / "listed.wav").write_bytes(listed[:4] + (len(listed) - 8).to_bytes(4, "little") + listed[8:])
    with pytest.raises(AudioInputError, match=r"listed.wav: the file holds no samples$"):
        load_audio(tmp_path / "listed.wav", SR, int(0.75 * SR))
    after = data + b"LIST" + (5000).to_bytes(4, "little") + bytes(5000)     # R3: metadata after the empty data
    (tmp_path / "after.wav").write_bytes(after[:4] + (len(after) - 8).to_bytes(4, "little") + after[8:])
    with pytest.raises(AudioInputError, match=r"after.wav: the file holds no samples$"):
        load_audio(tmp_path / "after.wav", SR, int(0.75 * SR))
    # R2: a writer that stopped before its lengths (RIFF and data sizes 0, audio after them) is not "empty"
    sf.write(tmp_path / "w0.wav", np.tile(tone, 2), SR, subtype="PCM_16")
    data = bytearray((tmp_path / "w0.wav").read_bytes())
    data[4:8] = bytes(4)
    data[data.index(b"data") + 4:data.index(b"data") + 8] = bytes(4)
    (tmp_path / "unfinished.wav").write_bytes(bytes(data))
    data[data.index(b"data") + 8:data.index(b"data") + 12] = b"ABCD"   # R4: audio that reads like a chunk id
    (tmp_path / "printable.wav").write_bytes(bytes(data))
    for name in ("unfinished.wav", "printable.wav"):
        try:
            x = load_audio(tmp_path / name, SR, int(0.75 * SR))
            assert np.abs(x).max() > 0.1                  # a reader that takes the audio as it is: fine
        except AudioInputError as err:
            assert "damaged or cut off" in str(err), str(err)
    sf.write(tmp_path / "long.wav", np.zeros(600 * 8000 + 1, np.int16), 8000, subtype="PCM_16")
    with pytest.raises(AudioInputError, match="4,800,001 samples at 8,000 Hz, more than the 600 s accepted"):
        load_audio(tmp_path / "long.wav", SR, int(0.75 * SR))
    with pytest.raises(AudioInputError, match="7 files for a 6-note dataset"):
        group_files([f"f{i}.wav" for i in range(7)], NOTES, what="dataset")


def test_a_pitch_offset_at_the_edge_of_its_range_is_printed_as_beyond_it(fitted, recording, tmp_path, monkeypatch):
    from preset_model import match as match_module
    from preset_model.metrics import pitch_offset_cents

    t = np.arange(SR) / SR
    tone = np.sin(2 * np.pi * 220 * t)
    assert pitch_offset_cents(tone, np.sin(2 * np.pi * 220 * 2 ** 0.75 * t), SR) == 600.0   # 900 cents: the edge
    assert pitch_offset_cents(tone, np.sin(2 * np.pi * 220 * 2 ** (-800 / 1200) * t), SR) == -600.0
    assert pitch_offset_cents(tone, np.sin(2 * np.pi * 220 * 2 ** (-580 / 1200) * t), SR) == pytest.approx(-580, abs=3)
    assert abs(pitch_offset_cents(tone, np.roll(tone, 7), SR)) < 5
    monkeypatch.setattr(match_module, "pitch_offset_cents", lambda *a, **k: -600.0)
    res = CliRunner().invoke(app, ["match", "--data", str(fitted.data), str(recording), "-o", str(tmp_path / "p.syx")])
    assert res.exit_code == 0, res.output
    assert "pitch offset below -600 cents" in res.output and "-600.0 cents" not in res.output


def test_match_never_replaces_the_dataset_its_run_found_and_names_the_notes_it_filled(fitted, recording, tmp_path):
    # audit W: `match RUN x.wav --refine N -o RUN's-dataset.h5 --force` replaced the dataset it had read
    kept = fitted.data.read_bytes()
    try:
        res = CliRunner().invoke(app, ["match", str(fitted.flow6), str(recording), "--refine", "2", "-o",
                                       str(fitted.data), "--force"])
        assert res.exit_code == 2 and "is also an input" in res.output, res.output
    finally:
        if fitted.data.read_bytes() != kept:     # never leave the shared fixture broken
            fitted.data.write_bytes(kept)
            pytest.fail("the run's dataset was replaced")
    # a file played on 62:85 gives the model's 60:85, which is not "filled by pitch-shifting"
    named = tmp_path / "clav_62-85.wav"
    named.write_bytes(recording.read_bytes())
    res = CliRunner().invoke(app, ["match", str(fitted.flow6), str(named), "-o", str(tmp_path / "c.syx")])
    assert res.exit_code == 0 and "(notes 40:85, 50:85, 60:42, 60:127, 70:85 filled by pitch-shifting)" in res.output


def test_sound_names_and_note_clashes_say_what_they_are():
    assert sound_name(["/x/_40-85.wav"]).strip() == "_40-85"     # named by its note alone: not a blank name
    with pytest.raises(AudioInputError) as err:
        group_files(["a_40-85.wav", "a_40-85.flac"], NOTES)
    assert "both note 40:85 of the same sound; give each note once" in str(err.value)   # 40:85 is the model's
    with pytest.raises(AudioInputError, match="a note that is not one of the model's"):
        group_files(["a_40-85.wav", "a_41-85.wav"], NOTES)


def test_an_interrupted_match_refine_resumes_from_its_journal(fitted, recording, tmp_path, monkeypatch):
    # a bank of sounds at --refine 300 runs for minutes: interrupted, it started again from the first sound
    from preset_model import match as match_mod

    other = tmp_path / "other.wav"
    sf.write(other, sf.read(recording)[0][::-1].copy(), 44100)       # a second sound (reversed)
    files = [recording, other]
    whole = match_files(None, files, each=True, data=fitted.data, refine=8)
    journal = tmp_path / "b.syx.refine-partial.jsonl"
    real = match_mod.search
    monkeypatch.setattr(match_mod, "search", counted(real, interrupt_at=2)[0])
    with pytest.raises(KeyboardInterrupt):
        match_files(None, files, each=True, data=fitted.data, refine=8, journal=journal)
    assert len(journal.read_text().splitlines()) == 1
    search, calls = counted(real)
    monkeypatch.setattr(match_mod, "search", search)
    again = match_files(None, files, each=True, data=fitted.data, refine=8, journal=journal)
    assert len(calls) == 1                                           # the first sound was not searched again
    for a, b in zip(whole.voices, again.voices):
        assert np.array_equal(a.raw, b.raw) and a.search.distance == b.search.distance
        assert a.search.candidates == b.search.candidates and a.search.renders == b.search.renders
    # a journal kept before the key held the played velocities (the notes alone) is still resumed
    import json

    from preset_model.refine import RefineJournal

    lines = [json.loads(x) for x in journal.read_text().splitlines()]
    for e in lines:                                                  # one file per sound (--each): one note
        idx = [k for k in range(len(NOTES)) if RefineJournal.digest(np.asarray([k, NOTES[k][1]], np.uint8)) == e["pred"]]
        assert len(idx) == 1
        e["pred"] = RefineJournal.digest(np.asarray(idx, np.uint8))
    journal.write_text("".join(json.dumps(e) + "\n" for e in lines))
    calls.clear()
    old = match_files(None, files, each=True, data=fitted.data, refine=8, journal=journal)
    assert len(calls) == 0 and all(np.array_equal(a.raw, b.raw) for a, b in zip(whole.voices, old.voices))
    match_files(None, files, each=True, data=fitted.data, refine=8, seed=1, journal=journal)
    assert len(calls) == 2                                           # another seed reuses nothing
    res = CliRunner().invoke(app, ["match", "--data", str(fitted.data), str(recording), str(other), "--each",
                                   "--refine", "8", "-o", str(tmp_path / "b.syx"), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "b.syx").exists() and not journal.exists()   # done: the journal is gone
    assert not list(tmp_path.glob(".b.syx.lock"))


def test_a_damaged_mp3s_decoder_lines_are_one_note(tmp_path, capfd):
    """libmpg123 wrote its own lines ("Note: Illegal Audio-MPEG-Header …", "Trying to resync…") on stderr
    before the command's; they are kept and said as one note, and the file is read as far as it decodes."""
    if "MP3" not in sf.available_formats():
        pytest.skip(f"this libsndfile ({sf.__libsndfile_version__}) has no MP3 support")
    tone = (0.1 * np.sin(2 * np.pi * 261.6 * np.arange(22050) / 22050)).astype(np.float32)
    sf.write(tmp_path / "t.mp3", tone, 22050, format="MP3")
    data = (tmp_path / "t.mp3").read_bytes()
    (tmp_path / "cut.mp3").write_bytes(data[:len(data) // 2] + bytes(100) + data[len(data) // 2 + 50:])
    assert load_audio(tmp_path / "t.mp3", 22050, 22050).shape == (22050,)
    assert capfd.readouterr().err == ""
    x = load_audio(tmp_path / "cut.mp3", 22050, 22050)
    err = capfd.readouterr().err
    assert x.shape == (22050,) and np.abs(x).max() > 0.05
    assert err.count("\n") == 1 and err.startswith(f"note: {tmp_path / 'cut.mp3'}: the audio decoder reported"), err


def test_decoder_messages_read_on_without_stderr_or_a_temporary_folder(tmp_path, monkeypatch):
    """R11: with sys.stderr None (a library call) or no writable temporary folder, load_audio refused a
    readable file ("cannot read audio"): the decoder's lines are then simply not kept."""
    import sys
    import tempfile

    sf.write(tmp_path / "u8.wav", (0.1 * np.sin(np.arange(4410) / 5.0)).astype(np.float32), 22050, subtype="PCM_U8")
    monkeypatch.setattr(sys, "stderr", None)
    assert load_audio(tmp_path / "u8.wav", 22050, 1000).shape == (1000,)
    monkeypatch.undo()

    def no_folder(*_a, **_k):
        raise FileNotFoundError("No usable temporary directory found")

    monkeypatch.setattr(tempfile, "TemporaryFile", no_folder)
    assert load_audio(tmp_path / "u8.wav", 22050, 1000).shape == (1000,)


def test_audio_is_read_in_a_process_whose_fd_2_is_closed(tmp_path):
    """R12: with fd 2 closed, the audio file opened first took its place, and the redirection of the
    decoder's lines put an empty file there: every file was refused as "Format not recognised"."""
    import os
    import subprocess
    import sys

    sf.write(tmp_path / "a.wav", (0.1 * np.sin(np.arange(22050) / 5.0)).astype(np.float32), 22050)
    code = ("import sys\nfrom preset_model.match import file_peak, load_audio\n"
            f"x = load_audio({str(tmp_path / 'a.wav')!r}, 22050, 22050)\n"
            f"print(x.shape, round(float(abs(x).max()), 3), round(file_peak({str(tmp_path / 'a.wav')!r}), 3))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=False, stdout=subprocess.PIPE, text=True,
                         preexec_fn=lambda: os.close(2), timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "(22050,) 0.1 0.1", res.stdout


def test_samples_after_the_note_are_not_read_at_the_datasets_rate(tmp_path):
    # A10: NaN just after the note got the file refused (64 samples more were read as a resampling
    # margin, though a file at the dataset's rate is not resampled); at another rate they are used
    import soundfile as sf

    from preset_model.match import AudioInputError, load_audio

    note = (0.1 * np.sin(2 * np.pi * 220 * np.arange(1000) / 22050)).astype(np.float32)
    after = np.concatenate([note, np.full(100, np.nan, np.float32)])
    sf.write(tmp_path / "same.wav", after, 22050, subtype="FLOAT")
    assert np.array_equal(load_audio(tmp_path / "same.wav", 22050, 1000), note)
    sf.write(tmp_path / "other.wav", after, 44100, subtype="FLOAT")
    with pytest.raises(AudioInputError, match="holds NaN or infinite samples"):
        load_audio(tmp_path / "other.wav", 22050, 1000)   # 2,000 samples + the filter's margin: they reach the NaN


def test_audit_a12_headers_dc_offsets_clicks_cancelling_channels_and_locked_folders(fitted, tmp_path, monkeypatch):
    from pathlib import Path

    from preset_model.match import DC_OFFSET_MIN

    t = np.arange(2 * SR) / SR
    tone = (0.2 * np.sin(2 * np.pi * 262 * t) * np.exp(-2 * t)).astype(np.float32)
    n = int(0.75 * SR)
    # a WAV whose data length was left at 500 frames with 2 s of audio after it: refused, not matched on 23 ms
    sf.write(tmp_path / "w.wav", tone, SR, subtype="PCM_16")
    data = bytearray((tmp_path / "w.wav").read_bytes())
    at = data.index(b"data") + 4
    data[at:at + 4] = (1000).to_bytes(4, "little")
    (tmp_path / "stale.wav").write_bytes(bytes(data))
    with pytest.raises(AudioInputError, match=r"stale.wav: its header says 0.023 s of audio, and 87,200 bytes follow "
                                              r"it that are not part of any chunk: the header's length was not "
                                              r"updated"):
        load_audio(tmp_path / "stale.wav", SR, n)
    # ... but a short sound with a tagger's 128-byte ID3v1 tag after it is read as before
    sf.write(tmp_path / "short.wav", tone[:SR // 10], SR, subtype="PCM_16")
    (tmp_path / "tagged.wav").write_bytes((tmp_path / "short.wav").read_bytes() + b"TAG" + bytes(125))
    assert np.array_equal(load_audio(tmp_path / "tagged.wav", SR, n), load_audio(tmp_path / "short.wav", SR, n))
    # a DC offset is removed (no render holds one), and a render without one is read as it is, bit for bit
    sf.write(tmp_path / "tone.wav", tone, SR, subtype="FLOAT")
    sf.write(tmp_path / "dc.wav", tone + np.float32(0.02), SR, subtype="FLOAT")
    clean = load_audio(tmp_path / "tone.wav", SR, n)
    assert np.array_equal(clean, tone[:n])
    assert np.abs(load_audio(tmp_path / "dc.wav", SR, n) - clean).max() < 2e-3
    sf.write(tmp_path / "small.wav", tone + np.float32(DC_OFFSET_MIN / 2), SR, subtype="FLOAT")
    assert np.array_equal(load_audio(tmp_path / "small.wav", SR, n), tone[:n] + np.float32(DC_OFFSET_MIN / 2))
    render = make_engine(EngineSpec()).render(apply_fixed(decode_file(fitted.bank).voices[0].raw), [(40, 85)], HOLD,
                                              RELEASE).audio[0]
    sf.write(tmp_path / "render.wav", render, SR, subtype="FLOAT")
    assert np.array_equal(load_audio(tmp_path / "render.wav", SR, len(render)), render)
    res = CliRunner().invoke(app, ["match", "--data", str(fitted.data), str(tmp_path / "dc.wav"), "-o",
                                   str(tmp_path / "dc.syx")])
    assert res.exit_code == 0 and "dc.wav: removed a DC offset of +0.020" in res.output, res.output
    # a click has no pitch (it is not "near-silent": one at the first sample, which the measure's window
    # does not see); channels that cancel exactly are said to
    click = np.zeros(SR, np.float32)
    click[0] = 0.9
    sf.write(tmp_path / "click.wav", click, SR, subtype="FLOAT")
    sf.write(tmp_path / "cancel.wav", np.stack([tone, -tone], 1), SR, subtype="FLOAT")
    for name, said in (("click", "pitch offset n/a (no pitch to measure)"),
                       ("cancel", "cancel.wav is silent (all zeros) on this note once its channels are mixed to "
                                  "mono: they are of opposite polarity and cancel; give one channel of it")):
        res = CliRunner().invoke(app, ["match", "--data", str(fitted.data), str(tmp_path / f"{name}.wav"), "-o",
                                       str(tmp_path / f"{name}.syx")])
        assert res.exit_code == 0 and said in res.output, res.output
    # soundfile's "Error opening <_io.BufferedReader …>:" is not part of the message
    (tmp_path / "text.wav").write_text("not audio\n" * 100)
    with pytest.raises(AudioInputError) as err:
        load_audio(tmp_path / "text.wav", SR, n)
    assert "<_io" not in str(err.value) and "text.wav: cannot read audio (" in str(err.value), str(err.value)
    # a run or a file in a folder that cannot be entered: one line, not a PermissionError traceback
    locked = tmp_path / "locked"
    real_is_dir = Path.is_dir

    def is_dir(self):
        if locked in (self, *self.parents):
            raise PermissionError(13, "Permission denied", str(self))
        return real_is_dir(self)

    monkeypatch.setattr(Path, "is_dir", is_dir)
    for args in ([str(locked / "run"), str(tmp_path / "tone.wav")], ["--data", str(fitted.data), str(locked / "a.wav")]):
        res = CliRunner().invoke(app, ["match", *args, "-o", str(tmp_path / "l.syx")])
        assert res.exit_code == 2 and isinstance(res.exception, SystemExit), (res.output, res.exception)
        assert f"error: {locked}" in res.output and "cannot be read: Permission denied; check the permissions" in res.output, res.output


def test_a_permission_error_met_anywhere_is_one_line(tmp_path):
    # the commands' entry point: a PermissionError that no check named is one line, not a traceback (A12)
    import subprocess
    import sys

    code = ("import pathlib, sys\n"
            "def denied(self): raise PermissionError(13, 'Permission denied', str(self))\n"
            "pathlib.Path.is_dir = denied\n"
            "from preset_model.cli import main\n"
            f"sys.argv = ['preset-model', 'evaluate', {str(tmp_path / 'locked' / 'run')!r}]\n"
            "main()\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().splitlines() == [f"error: {tmp_path / 'locked' / 'run'}: Permission denied; check the "
                                               "permissions of it and of the folders above it"], res.stderr


def test_r15_valid_tails_short_clips_and_8_bit_files_read_as_before(fitted, tmp_path, capsys):
    # regression review R15 of the A12 fixes: valid WAVs refused as "header not updated", false DC notes,
    # a DC-offset file refused as a lead-in, channels_cancel on a file gone, a name too long a traceback
    import subprocess
    import sys

    from preset_model.match import channels_cancel

    t = np.arange(SR) / SR
    tone = (0.3 * np.sin(2 * np.pi * 262 * t)).astype(np.float32)
    n = int(0.75 * SR)
    sf.write(tmp_path / "plain.wav", tone[:SR // 2], SR, subtype="PCM_U8")   # 11,025 bytes of data: a pad byte
    plain = (tmp_path / "plain.wav").read_bytes()
    want = load_audio(tmp_path / "plain.wav", SR, n)
    listed = b"LIST" + (5400).to_bytes(4, "little") + b"INFO" + b"x" * 5396
    tails = {"nopad": plain[:-1] + listed, "stray": plain + listed + b"\1\2", "zeros": plain + bytes(8192),
             "id3": plain + b"ID3\4\0\0" + bytes(6000)}
    for name, data in tails.items():
        (tmp_path / f"{name}.wav").write_bytes(data)
        assert np.array_equal(load_audio(tmp_path / f"{name}.wav", SR, n), want), name
    assert "DC offset" not in capsys.readouterr().err   # an 8-bit writer's half-step bias is not one
    sf.write(tmp_path / "clip.wav", tone[:SR // 20] + np.float32(0.01), SR, subtype="FLOAT")   # 50 ms
    load_audio(tmp_path / "clip.wav", SR, n)
    assert "DC offset" not in capsys.readouterr().err   # too short to tell an offset from the sound's own mean
    # a quiet sound on an offset: matched as near-silent, not refused as "silent … starts at 0.00 s"
    sf.write(tmp_path / "quiet.wav", tone * np.float32(1e-3) + np.float32(0.02), SR, subtype="FLOAT")
    res = CliRunner().invoke(app, ["match", "--data", str(fitted.data), str(tmp_path / "quiet.wav"), "-o",
                                   str(tmp_path / "q.syx")])
    assert res.exit_code == 0 and "quiet.wav is near-silent on this note" in res.output, res.output
    assert channels_cancel(tmp_path / "gone.wav") is False
    code = ("import sys\nfrom preset_model.cli import main\n"
            f"sys.argv = ['preset-model', 'evaluate', {str(tmp_path / ('a' * 300) / 'run')!r}]\nmain()\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and res.stderr.strip().splitlines() == [
        f"error: {tmp_path / ('a' * 300) / 'run'}: the name is too long for the file system (255 bytes per name at "
        "most); give a shorter name"], res.stderr


def test_r16_offsets_before_a_late_sound_unfinished_headers_over_silence_and_many_chunks(fitted, tmp_path):
    # regression review R16 of the R15 fixes
    import subprocess
    import sys

    t = np.arange(SR) / SR
    tone = (0.3 * np.sin(2 * np.pi * 262 * t)).astype(np.float32)
    # a lead-in of silence on a large DC offset: still refused, and where the sound starts is right
    lead = np.concatenate([np.zeros(SR, np.float32), tone]) + np.float32(0.06)
    sf.write(tmp_path / "lead.wav", lead, SR, subtype="FLOAT")
    res = CliRunner().invoke(app, ["match", "--data", str(fitted.data), str(tmp_path / "lead.wav"), "-o",
                                   str(tmp_path / "l.syx")])
    assert res.exit_code == 2 and "lead.wav: silent for the whole 0.75 s that a note lasts, and its sound starts " \
        "at 1.00 s" in res.output, res.output
    # an unfinished header whose audio starts with more than a MiB of digital silence: still refused
    audio = np.concatenate([np.zeros((int(1.5 * 96000), 2), np.float32), np.stack([tone, tone], 1)[:SR // 2]])
    sf.write(tmp_path / "w.wav", audio, 96000, subtype="FLOAT")
    data = bytearray((tmp_path / "w.wav").read_bytes())
    at = data.index(b"data") + 4
    data[at:at + 4] = (8000).to_bytes(4, "little")
    (tmp_path / "unfinished.wav").write_bytes(bytes(data))
    with pytest.raises(AudioInputError, match="the header's length was not updated"):
        load_audio(tmp_path / "unfinished.wav", SR, 2 * SR)
    # a short sound with 70 cue chunks and a LIST after its data: read as it is
    sf.write(tmp_path / "s.wav", tone[:SR // 2], SR, subtype="PCM_16")
    cues = b"".join(b"cue " + (24).to_bytes(4, "little") + bytes(24) for _ in range(70))
    (tmp_path / "cues.wav").write_bytes((tmp_path / "s.wav").read_bytes() + cues + b"LIST" +
                                        (6000).to_bytes(4, "little") + b"INFO" + b"x" * 5996)
    assert np.array_equal(load_audio(tmp_path / "cues.wav", SR, SR), load_audio(tmp_path / "s.wav", SR, SR))
    # a PermissionError that names no file is one line at the entry point, as before
    code = ("import sys, typer\nfrom dexed_data.console import run\napp = typer.Typer()\n"
            "@app.command()\ndef go(x: int = 0):\n    raise PermissionError(13, 'Permission denied')\n"
            "@app.command()\ndef other():\n    pass\n"
            "sys.argv = ['t', 'go']\nrun(app, ())\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and res.stderr.strip().splitlines() == [
        "error: Permission denied; check the permissions of the files and folders involved"], res.stderr


def test_r17_a_lead_in_at_another_rate_is_refused_with_its_true_start(fitted, tmp_path, monkeypatch):
    # regression review R17: a lead-in whose one sample over −70 dBFS at 48 kHz falls under it once
    # resampled was matched (the sound was "found" inside the note), and said to start at 0.01 s before
    from preset_model import match as match_module

    sr = 48000
    lead = np.zeros(int(1.5 * sr), np.float32)
    lead[480] = 10 ** (-68.5 / 20)
    t = np.arange(sr) / sr
    sound = (0.01 * np.sin(2 * np.pi * 262 * t)).astype(np.float32)
    sf.write(tmp_path / "lead.wav", np.concatenate([lead, sound]), sr, subtype="FLOAT")
    res = CliRunner().invoke(app, ["match", "--data", str(fitted.data), str(tmp_path / "lead.wav"), "-o",
                                   str(tmp_path / "l.syx")])
    assert res.exit_code == 2 and "lead.wav: silent for the whole 0.75 s that a note lasts, and its sound starts " \
        "at 1.50 s" in res.output, res.output
    # what follows a data chunk is looked at only when the header's length ends inside the note
    sf.write(tmp_path / "long.wav", np.tile(sound, 2), sr, subtype="PCM_16")
    monkeypatch.setattr(match_module, "_unexplained_tail", lambda *a: pytest.fail("read the tail of a whole note"))
    assert np.abs(load_audio(tmp_path / "long.wav", SR, SR)).max() > 0.009


def test_r18_the_rest_of_the_file_is_what_follows_the_note(fitted, tmp_path):
    # regression review R18: a tone above the dataset's band in the note (gone once resampled) hid a quiet
    # sound after it; a louder event later was given as the sound's start, whose advice cut the sound away
    def refused(name, audio, sr, said):
        sf.write(tmp_path / name, audio.astype(np.float32), sr, subtype="FLOAT")
        res = CliRunner().invoke(app, ["match", "--data", str(fitted.data), str(tmp_path / name), "-o",
                                       str(tmp_path / "o.syx")])
        assert res.exit_code == 2 and f"{name}: silent for the whole 0.75 s that a note lasts, and its sound " \
            f"starts at {said}; cut the silence" in res.output, res.output

    sr = 96000
    t = np.arange(2 * sr) / sr
    fade = np.clip(np.minimum(t, 0.7 - t) / 0.1, 0.0, 1.0)   # faded in and out: a cut would splatter into the band
    audio = fade * 0.05 * np.sin(2 * np.pi * 40000 * t) + \
        np.where(t >= 1.0, 1e-3 * np.sin(2 * np.pi * 440 * t), 0.0)
    refused("ultrasonic.wav", audio, sr, "1.00 s")
    t = np.arange(3 * SR) / SR
    audio = np.where((t >= 1.0) & (t < 1.5), 1e-3 * np.sin(2 * np.pi * 440 * t), 0.0) + \
        np.where((t >= 2.0) & (t < 2.05), 0.1 * np.sin(2 * np.pi * 440 * t), 0.0)
    refused("burst.wav", audio, SR, "1.00 s (loud from 2.00 s)")
