"""Distinct rows of 2-D arrays: the one place presets (by raw values, sound key or a band of
learnable values), packed voices and audio fingerprints are grouped by equal rows.

Every row is viewed as one opaque ``np.void`` value and passed to ``np.unique``: the same result as
``np.unique(a, axis=0, return_index=True, return_inverse=True)`` (checked on the CC0 corpus's
122,060 voices), which builds a structured dtype of one field per column and is 13× slower
(2.8 s against 0.2 s on those voices).

Example::

    >>> import numpy as np
    >>> a = np.array([[1, 2], [0, 5], [1, 2]], np.uint8)
    >>> first, inverse = unique_rows(a)
    >>> first.tolist(), inverse.tolist(), count_unique_rows(a), group_rows(a).tolist()
    ([1, 0], [1, 0, 1], 2, [0, 1, 0])
"""

from __future__ import annotations

import numpy as np

__all__ = ["count_unique_rows", "group_rows", "unique_rows"]


def unique_rows(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows of ``a (n, b)``: ``first (u,)``, the index of each distinct row's first
    occurrence (distinct rows sorted by content), and ``inverse (n,)``, each row's distinct row."""
    a = np.ascontiguousarray(a)
    if a.shape[0] == 0:
        return np.zeros(0, np.intp), np.zeros(0, np.intp)
    # equal bytes ⇔ equal values for the integer arrays grouped here
    rows = a.view(np.dtype((np.void, a.dtype.itemsize * a.shape[1]))).ravel()
    _, first, inverse = np.unique(rows, return_index=True, return_inverse=True)
    return first, inverse.ravel()   # numpy 2.0–2.1 shape the inverse like the input: (n, 1)


def count_unique_rows(a: np.ndarray) -> int:
    """Number of distinct rows of ``a (n, b)``."""
    return int(unique_rows(a)[0].size)


def group_rows(a: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Each row's group representative, the lowest row equal to it, ``(n,) int32``.

    Rows where ``valid (n,) bool`` is False are in no group and get −1.
    """
    n = a.shape[0]
    out = np.full(n, -1, np.int32)
    rows = np.arange(n) if valid is None else np.flatnonzero(np.asarray(valid, bool))
    if rows.size == 0:
        return out
    first, inverse = unique_rows(np.asarray(a)[rows])
    out[rows] = rows[first][inverse]
    return out
