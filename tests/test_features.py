"""Features: log-mel spectrogram, operator audibility, peak/RMS, silence."""

from __future__ import annotations

import librosa
import numpy as np
import pytest

from dexed_data.engines import EngineSpec, Render, make_engine
from dexed_data.features import (
    MelConfig, audible_operators, compute_features, mel_db, n_frames, operator_levels_db, peak_rms,
    silent_notes,
)
from dexed_data.schema import operator_offsets

from test_engines import simple_voice

SR = 22050
CFG = MelConfig()


@pytest.fixture(scope="module")
def engine():
    return make_engine(EngineSpec())


def sine(freq: float, amp: float = 1.0, seconds: float = 4.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_mel_shape_dtype_and_floor():
    m = mel_db(np.zeros((6, 88200), np.float32), CFG)
    assert m.shape == (6, 257, 345) == (6, CFG.n_mels, n_frames(88200, CFG))
    assert m.dtype == np.float32 and np.all(m == np.float32(-120.0))


def test_mel_equals_torch_stft_with_a_dense_filterbank():
    # mel_db frames and multiplies its own way for speed; it must give the textbook numbers.
    import torch

    from dexed_data.features import mel_filterbank

    audio = np.random.default_rng(0).standard_normal((3, 20000)).astype(np.float32) * 0.1
    for cfg in (CFG, MelConfig(n_mels=64, hop=1024)):
        win = torch.hann_window(cfg.n_fft, periodic=True)
        spec = torch.stft(torch.from_numpy(audio), cfg.n_fft, hop_length=cfg.hop, window=win, center=True,
                          pad_mode="constant", return_complex=True)
        power = spec.abs().square() * (2.0 / float(win.sum())) ** 2
        ref = 10 * torch.log10(torch.matmul(mel_filterbank(cfg), power).clamp_min(10 ** (cfg.floor_db / 10)))
        np.testing.assert_allclose(mel_db(audio, cfg), ref.numpy(), atol=1e-3)


def test_filterbank_equals_librosa():
    # The workers build the mel triangles in numpy (no librosa import); they must be librosa's numbers.
    from dexed_data.features import slaney_filterbank

    for sr, n_fft, n_mels in ((22050, 1024, 257), (22050, 2048, 64), (22050, 2048, 128), (44100, 512, 40)):
        for area_norm in (False, True):
            ref = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, norm="slaney" if area_norm else None,
                                      dtype=np.float32)
            np.testing.assert_array_equal(slaney_filterbank(sr, n_fft, n_mels, area_norm), ref)


def test_mel_known_values_of_a_sine():
    m = mel_db(np.stack([sine(1000.0), sine(1000.0, 0.1)]), CFG)
    centres = librosa.mel_frequencies(CFG.n_mels + 2, fmax=SR / 2)[1:-1]
    mid = m[:, :, 100]
    band = int(mid[0].argmax())
    assert abs(centres[band] - 1000.0) < 0.05 * 1000.0
    assert -4.0 <= mid[0, band] <= 0.5  # full-scale sine ≈ 0 dB re full scale (power)
    assert mid[1, band] == pytest.approx(mid[0, band] - 20.0, abs=0.1)


def test_peak_rms_and_silence():
    x = np.stack([sine(440.0), sine(440.0, 10 ** (-75 / 20)), np.zeros(88200, np.float32)])
    peak, rms = peak_rms(x)
    assert peak[0] == pytest.approx(1.0, abs=1e-3) and rms[0] == pytest.approx(2**-0.5, rel=1e-3)
    assert silent_notes(x).tolist() == [False, True, True]
    assert silent_notes(x, threshold_db=-80).tolist() == [False, False, True]


def _audible(engine, raw, notes=((60, 85),)):
    r = engine.render(raw, list(notes), 0.5, 0.2, operators=True)
    return audible_operators(operator_levels_db(r.operators, r.audio, r.algorithm))


def test_audibility_of_carriers_and_modulators(engine):
    # algorithm 32: six carriers; OP1 at 99, OP2 at 0, others at 50
    aud = _audible(engine, simple_voice(31, (99, 0, 50, 50, 50, 50)))
    assert aud[0].tolist() == [True, False, True, True, True, True]
    # algorithm 1: OP2 modulates OP1 (carrier); OP3 carrier fed by OP4←OP5←OP6, all at 0
    assert _audible(engine, simple_voice(0, (99, 0, 0, 0, 0, 0)))[0].tolist() == [True] + [False] * 5
    assert _audible(engine, simple_voice(0, (99, 80, 0, 0, 0, 0)))[0, :2].tolist() == [True, True]
    # a modulator feeding only a silent carrier is inaudible however loud it is
    assert not _audible(engine, simple_voice(0, (0, 99, 99, 0, 0, 0)))[0, 1]


def test_audibility_estimate_is_conservative(engine, golden_dir):
    """Estimated contributions never fall > 3 dB below the truth (set output level 0, re-render)."""
    voices = np.load(golden_dir / "rom1a_plugin.npz")["voices_unpacked"]
    notes = [(40, 85), (60, 42)]
    for voice in voices[[0, 3]]:  # E.PIANO 1 (algorithm 5), KOTO (algorithm 2, 4-op chain)
        raw = voice[:145]
        r = engine.render(raw, notes, 1.0, 0.3, operators=True)
        est = operator_levels_db(r.operators, r.audio, r.algorithm)
        out = np.sqrt(np.mean(r.audio.astype(np.float64) ** 2, axis=1))
        for op in range(1, 7):
            muted = raw.copy()
            muted[operator_offsets(op)["OUTPUT LEVEL"]] = 0
            change = r.audio - engine.render(muted, notes, 1.0, 0.3).audio
            truth = 20 * np.log10(np.sqrt(np.mean(change.astype(np.float64) ** 2, axis=1)) / out + 1e-12)
            assert np.all(est[:, op - 1] >= np.maximum(truth, -120) - 3.0), (op, est[:, op - 1], truth)


def test_compute_features(engine):
    raw = simple_voice(0, (99, 80, 0, 0, 0, 0))
    r = engine.render(raw, [(60, 85), (40, 85)], 3.0, 1.0, operators=True)
    f = compute_features(r, CFG)
    assert f.mel.shape == (2, 257, 345) and f.operator_db.shape == (2, 6) and f.audible.dtype == bool
    assert f.peak.shape == f.rms.shape == f.silent.shape == (2,) and not f.silent.any()
    assert f.audible[:, :2].all() and not f.audible[:, 2:].any()
    blind = compute_features(Render(r.audio), CFG)  # no operators: nothing can be masked
    assert blind.audible.all() and np.isnan(blind.operator_db).all()
    silent = compute_features(engine.render(simple_voice(31, (0,) * 6), [(60, 85)], 0.5, 0.1, operators=True))
    assert silent.silent.all() and not silent.audible.any() and (silent.mel == -120).all()


def test_mel_db_in_blocks_of_frames_is_the_same_and_bounded(monkeypatch):
    # the windowed frames of a whole preset at once took n_fft / hop times its audio: 4 GB at --hop 1
    from dexed_data import features

    x = (np.random.default_rng(3).standard_normal((3, 22050)) * 0.1).astype(np.float32)
    cfg = features.MelConfig(n_mels=40, hop=7)
    whole = features.mel_db(x, cfg)
    monkeypatch.setattr(features, "MEL_BLOCK_BYTES", 1 << 16)          # a few frames per block
    assert np.array_equal(features.mel_db(x, cfg), whole) and whole.shape == (3, 40, 1 + 22050 // 7)
