"""Baselines a learned model must beat: nearest-neighbour retrieval and the mean/mode preset.

* :class:`NearestNeighbour`: the training preset whose spectrograms are closest (L2 on the
  model-input scale, [-1, 1]) to the query's, on the same notes the model sees.
* :func:`mean_preset`: every numerical parameter at its (rounded) training mean, every
  categorical one at its training mode.

Example::

    >>> import numpy as np
    >>> from preset_model.baselines import NearestNeighbour
    >>> feats = np.eye(3, dtype=np.float32)
    >>> NearestNeighbour(feats).query(feats[[2, 0]]).tolist()
    [2, 0]
"""

from __future__ import annotations

import h5py
import numpy as np
import torch
import torch.nn.functional as F

from dexed_data.schema import LEARNABLE_PARAMS, apply_fixed

from .data import read_row
from .inference import scale_mel

BASELINES: tuple[str, ...] = ("knn", "mean", "median")
#: Index size above which spectrograms are average-pooled before the distance (bytes of float32).
INDEX_BYTES = 1 << 30


def mean_preset(train_raw: np.ndarray, center: str = "mean") -> np.ndarray:
    """The mean/mode preset of ``train_raw (N, 145)``: ``(145,)`` uint8 (fixed bytes applied).

    With ``center="median"`` the numerical parameters take their median instead: the constant with
    the least mean absolute error (the right reference for a model trained with an L1 loss).
    """
    if center not in ("mean", "median"):
        raise ValueError(f"center must be 'mean' or 'median', got {center!r}")
    raw = np.asarray(train_raw).reshape(-1, 145)
    out = raw[0].copy()
    for p in LEARNABLE_PARAMS:
        col = raw[:, p.voice_offset].astype(np.int64)
        if p.kind == "categorical":
            out[p.voice_offset] = np.bincount(col, minlength=p.max + 1).argmax()
        else:
            mid = col.mean() if center == "mean" else np.median(col)
            out[p.voice_offset] = int(np.clip(np.rint(mid), 0, p.max))
    return apply_fixed(out)


def pool_factor(n_presets: int, shape: tuple[int, ...], budget: int = INDEX_BYTES) -> int:
    """Smallest average-pooling factor (1, 2, 4, ...) over mels and frames that keeps the index under ``budget``."""
    k, h, w = shape
    p = 1
    while n_presets * k * (h // p) * (w // p) * 4 > budget and min(h, w) // (2 * p) >= 1:
        p *= 2
    return p


def spectrogram_features(path, rows, note_index, bounds: tuple[float, float], pool: int = 1,
                         block: int = 64) -> np.ndarray:
    """Flattened model-input spectrograms of dataset ``rows``: ``(len(rows), features)`` float32.

    Reads ``/mel`` one block of rows at a time; each note is scaled to [-1, 1] with ``bounds``
    and average-pooled by ``pool`` along mels and frames.
    """
    rows = np.asarray(rows, np.int64)
    notes = list(note_index)
    out = []
    with h5py.File(path, "r") as h5:
        mel = h5["mel"]
        for i in range(0, len(rows), block):
            chunk = np.stack([read_row(mel, r)[notes] for r in rows[i:i + block]]).astype(np.float32)
            x = torch.from_numpy(scale_mel(chunk, bounds))
            if pool > 1:
                x = F.avg_pool2d(x, pool)
            out.append(x.flatten(1).numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


class NearestNeighbour:
    """Exact L2 nearest neighbour over a feature matrix (brute force, in blocks).

    Args:
        features: ``(N, F)`` float32, one row per training preset.
    """

    def __init__(self, features: np.ndarray) -> None:
        self.features = torch.from_numpy(np.ascontiguousarray(features, np.float32))
        self._sq = self.features.square().sum(1)

    def query(self, queries: np.ndarray, block: int = 256) -> np.ndarray:
        """Index of the nearest training row for each query ``(B, F)`` → ``(B,)`` int64 (ties: lowest index)."""
        q = torch.from_numpy(np.ascontiguousarray(queries, np.float32))
        best = []
        for i in range(0, len(q), block):
            qb = q[i:i + block]
            d = qb.square().sum(1, keepdim=True) - 2.0 * qb @ self.features.T + self._sq[None]
            best.append(d.argmin(1))
        return torch.cat(best).numpy() if best else np.zeros(0, np.int64)
