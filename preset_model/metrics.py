"""The paper's evaluation metrics, as pure functions on arrays.

Parameter metrics compare raw DX7 values (integers, so numerical values are already quantized
to their parameter's steps); audio metrics compare two renders of the same notes.

* ``log_spectral_mae``: mean |difference| of the STFT magnitude in dB (n_fft 1024, hop 256, Hann,
  floor −120 dB re full scale), averaged over notes, bins and frames.
* ``spectral_convergence``: ‖|X_ref| − |X_est|‖_F / ‖|X_ref|‖_F over all notes together (one
  Frobenius norm over notes, bins and frames), so a near-silent reference note cannot blow it up
  (computed per note, one −100 dBFS note gave 1,499). It is 0 for identical audio and 1 for a
  silent estimate; it has no upper bound (an estimate louder than the reference). NaN when the
  reference is silent on every note (peak below ``SILENT_DB``, −100 dBFS): such a reference has no
  spectrum to converge to; reports leave those presets out of its mean and count them.
* ``mfcc13_mae``, ``mfcc40_mae``: mean |difference| of the first 13 / 40 MFCCs (orthonormal DCT-II of
  a 128-band log-mel power spectrogram in dB, same STFT), averaged over notes, coefficients, frames.

Identical audio gives exactly 0 for every metric.

Example::

    >>> import numpy as np
    >>> from preset_model.metrics import audio_metrics
    >>> x = np.random.default_rng(0).normal(size=(2, 22050)).astype(np.float32)
    >>> audio_metrics(x, x, 22050)["spectral_convergence"]
    0.0
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from dexed_data.schema import LEARNABLE_PARAMS

AUDIO_METRICS: tuple[str, ...] = ("log_spectral_mae", "spectral_convergence", "mfcc13_mae", "mfcc40_mae")
N_FFT, HOP, MFCC_MELS, FLOOR_DB = 1024, 256, 128, -120.0
#: A reference whose every sample is below this level (dBFS) is silent: its spectral convergence is NaN.
SILENT_DB = -100.0

#: (name, voice offset, max) of the 144 learnable parameters, split by kind.
NUMERICAL = tuple((p.name, p.voice_offset, p.max) for p in LEARNABLE_PARAMS if p.kind != "categorical")
CATEGORICAL = tuple((p.name, p.voice_offset, p.max) for p in LEARNABLE_PARAMS if p.kind == "categorical")


def parameter_errors(true_raw: np.ndarray, pred_raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-preset, per-parameter errors of predicted raw presets.

    Args:
        true_raw, pred_raw: ``(N, 145)`` raw values (voice order).

    Returns:
        ``abs_err (N, 122)`` float64: |Δ| of each numerical parameter in units of its full range
        (``|Δraw| / max``, so 1/99 is one step of a 0–99 parameter), and ``correct (N, 22)`` bool
        for each categorical parameter; columns in :data:`NUMERICAL` / :data:`CATEGORICAL` order.
    """
    t = np.asarray(true_raw, np.int64).reshape(-1, 145)
    p = np.asarray(pred_raw, np.int64).reshape(-1, 145)
    num_off = np.array([o for _, o, _ in NUMERICAL])
    num_max = np.array([m for _, _, m in NUMERICAL], np.float64)
    cat_off = np.array([o for _, o, _ in CATEGORICAL])
    return np.abs(t[:, num_off] - p[:, num_off]) / num_max, t[:, cat_off] == p[:, cat_off]


def parameter_metrics(true_raw: np.ndarray, pred_raw: np.ndarray) -> dict:
    """Overall and per-parameter parameter metrics (see :func:`parameter_errors`).

    Returns:
        ``{"num_mae": float, "cat_accuracy": float, "per_param": {name: {"mae"|"accuracy": float}}}``;
        ``num_mae`` is the mean over presets and numerical parameters, ``cat_accuracy`` the mean
        over presets and categorical parameters.
    """
    err, ok = parameter_errors(true_raw, pred_raw)
    per = {name: {"mae": float(e)} for (name, _, _), e in zip(NUMERICAL, err.mean(0))}
    per.update({name: {"accuracy": float(a)} for (name, _, _), a in zip(CATEGORICAL, ok.mean(0))})
    return {"num_mae": float(err.mean()), "cat_accuracy": float(ok.mean()), "per_param": per}


@functools.lru_cache(maxsize=4)
def mel_basis(sample_rate: int) -> torch.Tensor:
    """The MFCCs' ``(128, 513)`` mel basis (librosa's default: Slaney scale and area norm), cached."""
    from dexed_data.features import slaney_filterbank   # librosa.filters.mel's numbers, without its import

    return torch.from_numpy(slaney_filterbank(sample_rate, N_FFT, MFCC_MELS, area_norm=True))


@functools.lru_cache(maxsize=4)
def dct_matrix(n: int, k: int) -> torch.Tensor:
    """``(k, n)`` orthonormal DCT-II matrix (first ``k`` coefficients)."""
    i = np.arange(n)[None, :]
    q = np.arange(k)[:, None]
    m = np.cos(np.pi * (i + 0.5) * q / n) * np.sqrt(2.0 / n)
    m[0] /= np.sqrt(2.0)
    return torch.from_numpy(m.astype(np.float32))


def magnitude(audio: np.ndarray) -> torch.Tensor:
    """``(notes, samples)`` audio → STFT magnitude ``(notes, 513, frames)`` (n_fft 1024, hop 256, Hann)."""
    x = torch.as_tensor(np.ascontiguousarray(audio, dtype=np.float32))
    win = torch.hann_window(N_FFT, periodic=True)
    spec = torch.stft(x, N_FFT, hop_length=HOP, window=win, center=True, pad_mode="constant", return_complex=True)
    return spec.abs() * (2.0 / float(win.sum()))  # a full-scale sine reads ~1 at its bin


def to_db(x: torch.Tensor, power: bool) -> torch.Tensor:
    """Magnitudes (``power`` False) or powers (True) in dB, floored at ``FLOOR_DB``."""
    floor = 10.0 ** (FLOOR_DB / (10.0 if power else 20.0))
    return (10.0 if power else 20.0) * torch.log10(x.clamp_min(floor))


def audio_metrics(reference: np.ndarray, estimate: np.ndarray, sample_rate: int) -> dict[str, float]:
    """The four audio metrics of :data:`AUDIO_METRICS` between two renders.

    Args:
        reference, estimate: ``(notes, samples)`` float audio at plug-in scale, same shape.
        sample_rate: Hz (sets the mel scale of the MFCCs).

    Returns:
        ``{metric: float}``: log-spectral and MFCC errors are means over notes, spectral convergence
        is taken over all notes together (see the module docstring for definitions).
    """
    ref, est = np.atleast_2d(reference), np.atleast_2d(estimate)
    if ref.shape != est.shape:
        raise ValueError(f"reference {ref.shape} and estimate {est.shape} must have the same shape")
    a, b = magnitude(ref), magnitude(est)                        # (notes, bins, frames)
    lsd = (to_db(a, False) - to_db(b, False)).abs().mean(dim=(1, 2))
    silent = float(np.abs(ref).max(initial=0.0)) < 10.0 ** (SILENT_DB / 20.0)
    sc = float("nan") if silent else float(torch.linalg.norm(a - b) / torch.linalg.norm(a))
    basis = mel_basis(int(sample_rate))
    ma, mb = to_db(basis @ a.square(), True), to_db(basis @ b.square(), True)   # (notes, mels, frames)
    out = {"log_spectral_mae": float(lsd.mean()), "spectral_convergence": sc}
    for k in (13, 40):
        dct = dct_matrix(MFCC_MELS, k)
        out[f"mfcc{k}_mae"] = float((dct @ ma - dct @ mb).abs().mean())
    return out


def similarity(reference: np.ndarray, estimate: np.ndarray) -> float:
    """A 0–1 score for people: ``max(0, 1 − spectral convergence)`` (1 = identical magnitude spectra)."""
    a, b = magnitude(np.atleast_2d(reference)), magnitude(np.atleast_2d(estimate))
    sc = float(torch.linalg.norm(a - b) / torch.linalg.norm(a).clamp_min(1e-12))
    return max(0.0, 1.0 - sc)


def pitch_offset_cents(reference: np.ndarray, estimate: np.ndarray, sample_rate: int,
                       fmin: float = 40.0, max_cents: float = 600.0) -> float:
    """Estimated pitch shift of ``estimate`` relative to ``reference``, in cents (positive: estimate is sharp).

    Both long-term magnitude spectra (n_fft 8192) are resampled on a log-frequency axis (1 cent
    steps from ``fmin`` to Nyquist), log-compressed, and cross-correlated over ±``max_cents``;
    the best lag is refined by a parabola. Works on harmonic and inharmonic FM spectra alike
    (it measures where the partials sit, not a fundamental). NaN if either signal is silent.
    """
    n_fft = 8192

    def spectrum(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float64).reshape(-1)
        if len(x) < n_fft:
            x = np.pad(x, (0, n_fft - len(x)))
        frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::n_fft // 4]
        return np.abs(np.fft.rfft(frames * np.hanning(n_fft), axis=-1)).mean(0)

    sa, sb = spectrum(reference), spectrum(estimate)
    if sa.max() <= 1e-9 or sb.max() <= 1e-9:
        return float("nan")
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    cents = np.arange(0.0, 1200.0 * np.log2(sample_rate / 2 / fmin), 1.0)
    grid = fmin * 2.0 ** (cents / 1200.0)
    la = np.log1p(np.interp(grid, freqs, sa) / sa.max() * 1e3)
    lb = np.log1p(np.interp(grid, freqs, sb) / sb.max() * 1e3)
    la, lb = la - la.mean(), lb - lb.mean()
    lags = np.arange(-int(max_cents), int(max_cents) + 1)
    n = len(la)
    corr = np.array([np.dot(la[max(0, -l):n - max(0, l)], lb[max(0, l):n - max(0, -l)]) for l in lags])
    i = int(np.argmax(corr))
    shift = float(lags[i])
    if 0 < i < len(corr) - 1:
        c0, c1, c2 = corr[i - 1], corr[i], corr[i + 1]
        den = c0 - 2 * c1 + c2
        if den < 0:
            shift += 0.5 * (c0 - c2) / den
    return shift
