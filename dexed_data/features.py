"""Features of a rendered preset: log-mel spectrogram, per-operator audibility, peak/RMS, silence.

Pure functions on arrays (no I/O, no hidden state besides a cache of mel filter banks). The hot
path (:func:`mel_db`) uses torch on one thread: call :func:`limit_threads` once in every worker
process (the render job's workers already run one per core).

Levels are in dB re full scale of the *plug-in-scaled* audio (:mod:`dexed_data.engines`):
amplitude 1.0 = 0 dBFS.

Example::

    >>> import numpy as np
    >>> from dexed_data.features import MelConfig, mel_db
    >>> t = np.arange(88200) / 22050
    >>> m = mel_db(np.sin(2 * np.pi * 440 * t)[None].astype(np.float32), MelConfig())
    >>> m.shape, m.dtype
    ((1, 257, 345), dtype('float32'))
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .engines import Render

if TYPE_CHECKING:  # torch is imported where it is used: the writer process never needs it
    import torch
from .schema import N_OPERATORS
from .schema import algorithm as schema_algorithm   # the argument of operator_levels_db is named algorithm

__all__ = [
    "MelConfig", "mel_db", "mel_filterbank", "slaney_filterbank", "n_frames", "operator_levels_db", "audible_operators",
    "peak_rms", "silent_notes", "Features", "compute_features", "limit_threads",
    "AUDIBLE_THRESHOLD_DB", "SILENT_THRESHOLD_DB", "MODULATION_GAIN_DB", "LEVEL_FLOOR_DB",
]

#: Floor of every dB level this module returns.
LEVEL_FLOOR_DB = -120.0
#: An operator is audible on a note when its estimated contribution is at least this many dB
#: relative to the note's output RMS (−60 dB = 0.1% of the note's RMS amplitude).
AUDIBLE_THRESHOLD_DB = -60.0
#: A note is near-silent when its peak is below this level, dBFS (plug-in scale).
SILENT_THRESHOLD_DB = -70.0
#: Gain from a modulator's RMS level (dBFS, plug-in scale) to the relative RMS change it causes in
#: its target's output: change_dB ≈ modulator_dB + 40 dB (measured on dexed-py, small-index regime:
#: ratio 1 → +37.9 dB, ratio 3 → +40.9 dB; 18.06 dB of it is the /8 plug-in scale of the channels).
MODULATION_GAIN_DB = 40.0


def limit_threads() -> None:
    """Make this process compute features on one thread (call in each joblib/loky worker)."""
    import torch

    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set, or parallel work has started in this process
        pass


@dataclass(frozen=True)
class MelConfig:
    """Log-mel spectrogram settings (the paper's).

    Attributes:
        sample_rate: Hz.
        n_fft: STFT size, samples (periodic Hann window of the same length).
        hop: STFT hop, samples. Frames are centred (zero padding n_fft/2 each side), so a note of
            T samples gives ``1 + T // hop`` frames: 345 for 88,200 samples. The paper's 347 came
            from DawDreamer rounding 4 s up to whole 512-sample blocks (88,576 samples); we keep
            the natural count for the exact 4 s.
        n_mels: mel bands (Slaney mel scale, 0 Hz to Nyquist).
        floor_db: lowest level, dB re full scale.
    """

    sample_rate: int = 22050
    n_fft: int = 1024
    hop: int = 256
    n_mels: int = 257
    floor_db: float = LEVEL_FLOOR_DB

    @classmethod
    def stored(cls, settings, sample_rate: int, **fallback) -> "MelConfig":
        """The settings a file or checkpoint stores (its ``mel_config``, a dict; other keys are
        ignored), at ``sample_rate`` and with ``fallback`` (then the defaults) for the fields it lacks."""
        from dataclasses import fields

        if settings is not None and not isinstance(settings, dict):
            raise TypeError(f"mel_config must be a JSON object, not {type(settings).__name__}")
        given = {f.name: settings[f.name] for f in fields(cls) if f.name in (settings or {})}
        return cls(**{"sample_rate": sample_rate, **fallback, **given})


def n_frames(n_samples: int, cfg: MelConfig = MelConfig()) -> int:
    """Frames :func:`mel_db` returns for a note of ``n_samples`` samples."""
    return 1 + n_samples // cfg.hop


#: Slaney's mel scale (librosa's default, ``htk=False``): linear below 1 kHz (200/3 Hz per mel),
#: logarithmic above (a factor 6.4 every 27 mels).
_MEL_HZ, _LOG_HZ, _LOG_STEP = 200.0 / 3, 1000.0, np.log(6.4) / 27.0


def _hz_to_mel(hz: float) -> float:
    return hz / _MEL_HZ if hz < _LOG_HZ else _LOG_HZ / _MEL_HZ + np.log(hz / _LOG_HZ) / _LOG_STEP


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    return np.where(mels >= _LOG_HZ / _MEL_HZ, _LOG_HZ * np.exp(_LOG_STEP * (mels - _LOG_HZ / _MEL_HZ)), _MEL_HZ * mels)


def slaney_filterbank(sample_rate: int, n_fft: int, n_mels: int, area_norm: bool = False) -> np.ndarray:
    """``(n_mels, n_fft // 2 + 1)`` float32 mel triangles from 0 Hz to Nyquist on Slaney's scale: the
    same numbers as ``librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, norm=None if not
    area_norm else "slaney", dtype=np.float32)`` (tested equal), in plain numpy: importing librosa and
    its first call cost a render worker ~1 s of start-up.
    """
    fft_hz = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    mel_hz = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2.0), n_mels + 2))
    fdiff = np.diff(mel_hz)
    ramps = np.subtract.outer(mel_hz, fft_hz)
    weights = np.zeros((n_mels, len(fft_hz)), dtype=np.float32)
    for i in range(n_mels):
        weights[i] = np.maximum(0, np.minimum(-ramps[i] / fdiff[i], ramps[i + 2] / fdiff[i + 1]))
    if area_norm:
        weights *= (2.0 / (mel_hz[2:n_mels + 2] - mel_hz[:n_mels]))[:, None]
    return weights


@functools.lru_cache(maxsize=8)
def mel_filterbank(cfg: MelConfig) -> "torch.Tensor":
    """``(n_mels, n_fft // 2 + 1)`` float32 triangles (Slaney scale, peak weight 1, no area norm), cached.

    Unnormalised triangles keep the "dB re full scale" meaning: the bands that cover a sine's
    frequency have weights summing to 1, so a full-scale sine reads about −3 to +1.5 dB in its top
    band (measured at 22,050 Hz, 257 mels; above 0 dB where a wide high band sums the window's
    leakage into the bins beside the sine's). With more bands than FFT bins can fill (high sample
    rates at n_fft 1024), some triangles hold no bin: :func:`empty_mel_bands`.
    """
    import torch

    return torch.from_numpy(slaney_filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels))


def empty_mel_bands(sample_rate: int, n_fft: int, n_mels: int) -> int:
    """How many of the ``n_mels`` triangles hold no FFT bin (bands that read the floor in every frame)."""
    return int((slaney_filterbank(sample_rate, n_fft, n_mels).max(axis=1) <= 0).sum())


@functools.lru_cache(maxsize=8)
def _sparse_filterbank(cfg: MelConfig) -> "torch.Tensor":
    return mel_filterbank(cfg).to_sparse().coalesce()


@functools.lru_cache(maxsize=8)
def _window(n_fft: int) -> "torch.Tensor":
    import torch

    return torch.hann_window(n_fft, periodic=True, dtype=torch.float32)


def mel_db(audio: np.ndarray, cfg: MelConfig = MelConfig()) -> np.ndarray:
    """Log-mel power spectrogram in dB re full scale.

    Power, not magnitude (the paper: dB of the mel power spectrogram): each STFT bin's power is
    scaled so that a sine of amplitude A reads ``A²`` at its bin (|X|² · (2/Σw)²); the mel bands
    sum these powers; ``10·log10``, floored at ``cfg.floor_db``.

    Args:
        audio: ``(notes, samples)`` float, plug-in scale (1.0 = full scale).
        cfg: STFT and mel settings.

    Returns:
        ``(notes, n_mels, frames)`` float32 dB, frames = ``1 + samples // hop`` (345 for 4 s).
    """
    import torch

    x = torch.as_tensor(np.ascontiguousarray(audio, dtype=np.float32))
    if x.ndim != 2:
        raise ValueError(f"audio must be (notes, samples), got shape {tuple(x.shape)}")
    win = _window(cfg.n_fft)
    # Centred frames with zero padding, windowed, real FFT: the same numbers as torch.stft(center=True,
    # pad_mode="constant") (tested), ~3× faster on one thread. The mel triangles are sparse (~2 non-zero
    # weights per bin), so a sparse product costs a fraction of the dense one.
    half = cfg.n_fft // 2
    framed = torch.nn.functional.pad(x, (half, half)).unfold(-1, cfg.n_fft, cfg.hop)       # (notes, frames, n_fft), a view
    notes, n_frames_ = framed.shape[:2]
    # A block of frames at a time: the windowed frames and their spectra take n_fft / hop times the
    # audio's memory (--hop 1 needed 4 GB for one preset); the paper's settings are one block
    step = max(1, MEL_BLOCK_BYTES // (4 * cfg.n_fft * notes))
    fbank, scale = _sparse_filterbank(cfg), (2.0 / float(win.sum())) ** 2
    mel = torch.empty((cfg.n_mels, notes, n_frames_), dtype=torch.float32)
    for a in range(0, n_frames_, step):
        spec = torch.fft.rfft(framed[:, a:a + step] * win, dim=-1).numpy()                 # (notes, frames, bins)
        bins = spec.shape[-1]
        # |X|² and the (bins, notes·frames) layout in numpy: ~2× and ~4× cheaper than torch's complex
        # views and transposed copy on one thread (tools/bench_render.py measures the whole command)
        power = torch.from_numpy(np.ascontiguousarray(np.square(np.abs(spec)).reshape(-1, bins).T))
        power.mul_(scale)
        mel[:, :, a:a + step] = torch.sparse.mm(fbank, power).reshape(cfg.n_mels, notes, -1)  # (n_mels, notes·frames)
    mel = mel.permute(1, 0, 2).contiguous()
    floor = 10.0 ** (cfg.floor_db / 10.0)
    return (10.0 * torch.log10(mel.clamp_min_(floor))).numpy()


#: Bytes of windowed frames :func:`mel_db` transforms at once (its spectra take about twice that).
MEL_BLOCK_BYTES = 64 << 20


def _db(x: np.ndarray, floor_db: float = LEVEL_FLOOR_DB) -> np.ndarray:
    return np.maximum(20.0 * np.log10(np.maximum(x, 1e-30)), floor_db)


def operator_levels_db(operators: np.ndarray, audio: np.ndarray, algorithm: int) -> np.ndarray:
    """Estimated contribution of each operator to each note, dB relative to the note's output RMS.

    * A carrier's contribution is its own signal: ``rms(carrier) / rms(audio)``.
    * A modulator changes the output of the operators it modulates (``dexed_data.schema.algorithm(alg)
      .mod_matrix``) by roughly ``modulator_dB + MODULATION_GAIN_DB`` relative to their own
      contribution while the modulation index is small, and by at most their whole contribution
      when it is large. So, from the carriers up the graph (transitively),
      ``level[m] = max over targets t of (level[t] + min(0, rms_dB[m] + MODULATION_GAIN_DB))``.
      Feedback loops are ignored (they shape an operator, they add no path to the output).

    Whole-note RMS levels (the audio is DC-blocked, the operators are not; the difference is
    negligible for audibility). Checked against "set the operator's output level to 0 and
    re-render" on ROM1A voices (tests/test_features.py).

    Args:
        operators: ``(notes, 6, samples)`` float, OP1 first, plug-in scale (:class:`~dexed_data.engines.Render`).
        audio: ``(notes, samples)`` the notes' output.
        algorithm: raw ALGORITHM value 0–31.

    Returns:
        ``(notes, 6)`` float32 dB, floored at −120; all −120 for a note whose RMS is below −120 dBFS.
    """
    ops = np.asarray(operators, dtype=np.float32)
    if ops.ndim != 3 or ops.shape[1] != N_OPERATORS:
        raise ValueError(f"operators must be (notes, 6, samples), got {ops.shape}")
    alg = schema_algorithm(int(algorithm))
    mods = alg.mod_matrix  # mods[i, j]: operator j modulates operator i
    # mean square by a float32 dot product per signal (~6× cheaper than a float64 copy; ~1e-4 dB)
    op_db = _db(np.sqrt(np.einsum("nos,nos->no", ops, ops).astype(np.float64) / ops.shape[-1]), -400.0)  # (notes, 6)
    out_db = _db(np.sqrt(np.mean(np.square(np.asarray(audio, np.float64)), axis=-1)), -400.0)  # (notes,)
    targets = [[t for t in range(N_OPERATORS) if t != m and mods[t, m]] for m in range(N_OPERATORS)]
    carriers = set(alg.carriers)

    def effect(change_db: np.ndarray, op: int, depth: int = 0) -> np.ndarray:
        # dB change of the output when operator ``op``'s signal changes by ``change_db`` (dBFS):
        # a carrier passes it on as is; a modulator turns it into a phase change of each target,
        # whose signal then changes by MODULATION_GAIN_DB more, at most by its own level + 3 dB.
        out = change_db.copy() if op in carriers else np.full_like(change_db, -np.inf)
        if depth < N_OPERATORS:
            for t in targets[op]:
                to_t = np.minimum(change_db + MODULATION_GAIN_DB, op_db[:, t] + 3.0)
                out = np.maximum(out, effect(to_t, t, depth + 1))
        return out

    level = np.stack([effect(op_db[:, m], m) for m in range(N_OPERATORS)], axis=1)
    rel = level - out_db[:, None]
    rel[out_db <= LEVEL_FLOOR_DB] = LEVEL_FLOOR_DB
    return np.clip(rel, LEVEL_FLOOR_DB, None).astype(np.float32)


def audible_operators(levels_db: np.ndarray, threshold_db: float = AUDIBLE_THRESHOLD_DB) -> np.ndarray:
    """``(notes, 6)`` bool: operators whose contribution (:func:`operator_levels_db`) reaches ``threshold_db``.

    Used to mask the parameter losses of operators that are inaudible on every rendered note.
    """
    return np.asarray(levels_db) >= threshold_db


def peak_rms(audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Peak ``max |x|`` and RMS of each note, linear full-scale units: ``(notes,)``, ``(notes,)`` float32."""
    x = np.asarray(audio, dtype=np.float32)
    peak = np.max(np.abs(x), axis=-1)
    rms = np.sqrt(np.mean(np.square(x, dtype=np.float64), axis=-1))
    return peak.astype(np.float32), rms.astype(np.float32)


def silent_notes(audio: np.ndarray, threshold_db: float = SILENT_THRESHOLD_DB) -> np.ndarray:
    """``(notes,)`` bool: notes whose peak is below ``threshold_db`` dBFS (plug-in scale).

    −70 dBFS is ~10 LSB of 16-bit audio and 52 dB below one full-level carrier (−18 dBFS at the
    plug-in's scale): a single carrier at output level 30 still peaks at −69.5 dBFS and counts
    as sound, while voices whose operators are all at level 0 (or envelopes at 0) fall far below.
    """
    peak, _ = peak_rms(audio)
    return _silent_from_peak(peak, threshold_db)


def _silent_from_peak(peak: np.ndarray, threshold_db: float = SILENT_THRESHOLD_DB) -> np.ndarray:
    return _db(np.asarray(peak, np.float64), -400.0) < threshold_db


@dataclass
class Features:
    """Everything the dataset stores per preset (K notes).

    Attributes:
        mel: ``(K, n_mels, frames)`` float32 dB (storage dtype is the writer's choice).
        operator_db: ``(K, 6)`` float32 contributions (:func:`operator_levels_db`), NaN if unknown.
        audible: ``(K, 6)`` bool; all True when the render carries no operators (nothing masked).
        peak, rms: ``(K,)`` float32, linear.
        silent: ``(K,)`` bool per note; the preset is near-silent when ``silent.all()``.
    """

    mel: np.ndarray
    operator_db: np.ndarray
    audible: np.ndarray
    peak: np.ndarray
    rms: np.ndarray
    silent: np.ndarray


def compute_features(render: Render, cfg: MelConfig = MelConfig()) -> Features:
    """All per-preset features of one :class:`~dexed_data.engines.Render`.

    Operator audibility needs ``render.operators`` and ``render.algorithm`` (the dexed engine with
    ``operators=True``); without them ``operator_db`` is NaN and every operator counts as audible.
    Silent notes have no audible operator.
    """
    audio = render.audio
    k = audio.shape[0]
    peak, rms = peak_rms(audio)
    silent = _silent_from_peak(peak)
    if render.operators is not None and render.algorithm is not None:
        op_db = operator_levels_db(render.operators, audio, render.algorithm)
        audible = audible_operators(op_db) & ~silent[:, None]
    else:
        op_db = np.full((k, N_OPERATORS), np.nan, np.float32)
        audible = np.ones((k, N_OPERATORS), bool)
    return Features(mel_db(audio, cfg), op_db, audible, peak, rms, silent)
