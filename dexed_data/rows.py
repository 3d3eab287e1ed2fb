"""Distinct rows of 2-D arrays: the one place presets (by raw values or sound key) and audio
fingerprints are grouped by equal rows.

Example::

    >>> import numpy as np
    >>> a = np.array([[1, 2], [0, 5], [1, 2]], np.uint8)
    >>> first, inverse = unique_rows(a)
    >>> first.tolist(), inverse.tolist(), count_unique_rows(a)
    ([1, 0], [1, 0, 1], 2)
"""

from __future__ import annotations

import numpy as np

__all__ = ["count_unique_rows", "unique_rows"]


def _rows_void(a: np.ndarray) -> np.ndarray:
    """View each row of a 2-D uint8 array as one opaque value (for np.unique on rows)."""
    a = np.ascontiguousarray(a, dtype=np.uint8)
    return a.view(np.dtype((np.void, a.shape[1]))).ravel()


def unique_rows(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the first row of each distinct row (sorted by content), and each row's class."""
    if a.shape[0] == 0:
        return np.zeros(0, np.intp), np.zeros(0, np.intp)
    _, first, inverse = np.unique(_rows_void(a), return_index=True, return_inverse=True)
    return first, inverse.ravel()


def count_unique_rows(a: np.ndarray) -> int:
    """Number of distinct rows of a 2-D uint8 array."""
    return int(np.unique(_rows_void(a)).size) if a.shape[0] else 0
