"""Near-copy groups of presets: the same name, a few learnable parameters apart, every parameter
within one step, or the same near fingerprint.

Real collections hold many near-copies of one voice: the same patch saved under another name
with one envelope rate changed, or renamed without any change, or with settings that make no
audible difference. Presets are joined into one group when

* they have the **same name** (trimmed, case-folded; blank names join nothing), or
* they differ in at most ``k`` of the 144 learnable parameters (:data:`NEAR_PARAMS`), or
* they differ by **one step** in each of at most :data:`STEP_PARAMS` learnable parameters (the
  same voice saved again with its envelope rates nudged: "SYN-LEAD 4" / "SynLead.04", six EG
  rates one step apart), or
* (given audio fingerprints) they have the same **near fingerprint** (same coarse spectral
  envelope on every note, :mod:`dexed_data.fingerprint`; presets rendered OK and not silent),

and groups are the connected components of these links, so chains join too. ``import-sysex``
stores each preset's group over the whole catalogue (by name and parameters) as
``/presets/near_group``; ``render`` copies it into the dataset as the id of the group's first
preset, so a dataset of any subset of the catalogue carries the same groups.
``preset_model.split`` uses them to keep near-copies on one side of the train/test split.

Why ``k = 3`` (:data:`NEAR_PARAMS`): measured on the 30,451 presets of the CC0 corpus, name
links plus parameter links with k = 1, 3, 5, 8, 10 give a largest group of 1.6 %, 1.6 %, 5.3 %,
15.3 % and 17.6 % of all presets (k = 3: 20,600 groups). Beyond k = 3 the chains merge into one
giant group that alone would be a quarter to most of a 20 % test set; k = 3 is the largest value
that keeps every group under 2 %.

Why the one-step rule: an audit found 125 of 500 test presets of the corpus's split with a
training preset one step away in 4–7 parameters (mostly EG RATE 2), under another name and with
another near fingerprint: a median log-spectral MAE of 2.4 dB between the two, where the nearest
training preset is usually 5 dB away. With the rule (16 parameters: 7,878 such pairs, 7,870 at
12, 7,841 at 10, so few are left beyond), the corpus has 16,371 groups instead of 20,614, the
largest 2.1 % of the presets (635) instead of 1.6 %.

Example::

    >>> import numpy as np
    >>> raw = np.zeros((3, 145), np.uint8); raw[1, 0] = 5; raw[2, :40] = 50
    >>> near_copy_groups(raw, ["A", "B", "C"]).tolist()
    [0, 0, 2]
"""

from __future__ import annotations

import numpy as np

from .rows import unique_rows
from .schema import LEARNABLE_PARAMS

#: Presets within this many differing learnable parameters are near-copies (see the module docstring).
NEAR_PARAMS = 3

#: Presets one step apart in each of at most this many learnable parameters (and equal in the rest) are near-copies.
STEP_PARAMS = 16

_COLUMNS = np.array([p.voice_offset for p in LEARNABLE_PARAMS])


def learnable_values(raw: np.ndarray) -> np.ndarray:
    """The 144 learnable parameters of raw presets ``(N, 145)`` → ``(N, 144)`` uint8."""
    return np.ascontiguousarray(np.asarray(raw, np.uint8).reshape(-1, 145)[:, _COLUMNS])


def _equal_row_groups(keys: np.ndarray) -> list[np.ndarray]:
    """Row indices of each set of ≥ 2 equal rows of ``keys`` (2-D array)."""
    if len(keys) == 0:
        return []
    _, inverse = unique_rows(keys)
    counts = np.bincount(inverse)
    order = np.argsort(inverse, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)])
    return [order[starts[g]:starts[g + 1]] for g in np.flatnonzero(counts > 1)]


def near_pairs(values: np.ndarray, k: int = NEAR_PARAMS, block: int = 512) -> np.ndarray:
    """All pairs ``(i, j)``, ``i < j``, of rows of ``values (N, D)`` that differ in at most ``k`` columns.

    Exact, by the pigeonhole principle: split the columns into ``k + 1`` bands; two rows that
    differ in at most ``k`` columns agree on at least one whole band, so only rows that share a
    band are compared. Returns ``(P, 2)`` int64, sorted, without repeats.
    """
    values = np.asarray(values)
    n, d = values.shape
    if d <= k:   # every pair differs in at most d ≤ k columns
        i, j = np.triu_indices(n, 1)
        return np.stack([i, j], 1).astype(np.int64)
    # a fixed shuffle mixes operators and globals in each band, so bands rarely coincide by accident
    bands = np.array_split(np.random.default_rng(0).permutation(d), k + 1)
    found = []
    for band in bands:
        for members in _equal_row_groups(values[:, band]):
            for i in range(0, len(members), block):
                a = members[i:i + block]
                dist = (values[a][:, None, :] != values[members][None, :, :]).sum(-1)
                ii, jj = np.nonzero(dist <= k)
                keep = a[ii] < members[jj]
                found.append(np.stack([a[ii][keep], members[jj][keep]], 1))
    if not found:
        return np.zeros((0, 2), np.int64)
    return np.unique(np.concatenate(found).astype(np.int64), axis=0)


def near_copy_pairs(values: np.ndarray, k: int = NEAR_PARAMS, step_params: int = STEP_PARAMS) -> np.ndarray:
    """Pairs of rows of learnable values ``(N, 144)`` linked by the parameter rules (module
    docstring): at most ``k`` differing values, or at most ``step_params`` values one step apart
    and the rest equal. ``(P, 2)`` int64, ``i < j``."""
    values = np.asarray(values)
    pairs = np.concatenate([near_pairs(values, k), step_pairs(values, step_params)])
    return np.unique(pairs, axis=0) if len(pairs) else np.zeros((0, 2), np.int64)


def step_pairs(values: np.ndarray, m: int = STEP_PARAMS) -> np.ndarray:
    """All pairs ``(i, j)``, ``i < j``, of rows of ``values (N, D)`` one step apart in each of at most
    ``m`` columns and equal in the others. ``(P, 2)`` int64, sorted, without repeats.

    As :func:`near_pairs`, rows that differ in at most ``m`` columns share one of ``m + 1`` bands of
    columns; and such rows' sums of values are at most ``m`` apart. So each band's rows are sorted
    by (band values, sum), and each row is compared with the next ones while they share its band
    values and their sums are within ``m``: one array operation per distance in that order, for
    all groups at once (the corpus's ~80,000 small groups cost 8 s one by one).
    """
    values = np.asarray(values)
    n, d = values.shape
    if n < 2:
        return np.zeros((0, 2), np.int64)
    sums = values.astype(np.int64).sum(1)
    found = []
    # (with d ≤ m columns every row may pair with every other: one band of no columns, one group)
    bands = np.array_split(np.random.default_rng(0).permutation(d), m + 1) if d > m else [np.arange(0)]
    for band in bands:
        group = unique_rows(values[:, band])[1] if band.size else np.zeros(n, np.int64)
        order = np.lexsort((sums, group))
        g, s = group[order], sums[order]
        start = np.arange(n - 1)
        step = 1
        while start.size:
            other = start + step
            start = start[other < n]
            other = start + step
            near = (g[other] == g[start]) & (s[other] - s[start] <= m)   # fails for every later one too
            start, other = start[near], other[near]
            a, b = order[start], order[other]
            diff = np.abs(values[a].astype(np.int16) - values[b].astype(np.int16))
            ok = (diff.max(1, initial=0) <= 1) & ((diff > 0).sum(1) <= m)
            found.append(np.stack([np.minimum(a, b)[ok], np.maximum(a, b)[ok]], 1))
            step += 1
    pairs = np.concatenate(found).astype(np.int64) if found else np.zeros((0, 2), np.int64)
    return np.unique(pairs, axis=0) if len(pairs) else np.zeros((0, 2), np.int64)


def _components(n: int, pairs: np.ndarray) -> np.ndarray:
    """Smallest row index of each row's connected component under ``pairs``."""
    parent = np.arange(n)

    def root(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        ra, rb = root(int(a)), root(int(b))
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return np.array([root(i) for i in range(n)], np.int64)


def _chain(groups: list[np.ndarray]) -> np.ndarray:
    """Pairs linking the members of each group in a chain (enough for connectivity)."""
    pairs = [np.stack([g[:-1], g[1:]], 1) for g in groups if len(g) > 1]
    return np.concatenate(pairs).astype(np.int64) if pairs else np.zeros((0, 2), np.int64)


def fingerprint_links(near_fingerprints: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Pairs of rows with equal near fingerprints, among the ``valid`` ones (rendered OK, not silent)."""
    fp = np.asarray(near_fingerprints)
    rows = np.flatnonzero(np.ones(len(fp), bool) if valid is None else np.asarray(valid, bool))
    return _chain([rows[g] for g in _equal_row_groups(fp[rows])])


def near_copy_groups(raw: np.ndarray, names, near_fingerprints: np.ndarray | None = None,
                     fingerprint_valid: np.ndarray | None = None, k: int = NEAR_PARAMS,
                     step_params: int = STEP_PARAMS) -> np.ndarray:
    """Group of every preset: the smallest row of its near-copy component, ``(N,)`` int64.

    Args:
        raw: ``(N, 145)`` raw voices (voice order).
        names: N voice names (str or bytes); compared trimmed and case-folded, blank ones never link.
        near_fingerprints: optional ``(N, 16)`` uint8 near fingerprints; equal ones link.
        fingerprint_valid: ``(N,)`` bool, rows whose fingerprint may link (rendered OK, not silent).
        k: parameter-distance threshold (differing learnable parameters).
        step_params: most parameters one step apart (the rest equal) that still link; 0 = the
            rule before it (at most ``k`` differing parameters only).
    """
    n = len(raw)
    text = [(x.decode("ascii", "replace") if isinstance(x, bytes) else str(x)).strip().casefold() for x in names]
    name_codes = np.unique(np.array(text, dtype=object).astype(str), return_inverse=True)[1].ravel()
    named = np.array([t != "" for t in text], bool)
    links = [near_copy_pairs(learnable_values(raw), k, step_params),
             _chain([np.flatnonzero(named)[g] for g in _equal_row_groups(name_codes[named][:, None])])]
    if near_fingerprints is not None:
        links.append(fingerprint_links(near_fingerprints, fingerprint_valid))
    return _components(n, np.concatenate(links))


def nearest_distance(queries: np.ndarray, pool: np.ndarray, block: int = 256) -> np.ndarray:
    """Fewest differing learnable parameters between each query preset and any preset of ``pool``.

    Args:
        queries, pool: ``(Q, 145)`` and ``(P, 145)`` raw voices.

    Returns:
        ``(Q,)`` int64 (144 when ``pool`` is empty).
    """
    q, p = learnable_values(queries), learnable_values(pool)
    out = np.full(len(q), q.shape[1], np.int64)
    if len(p) == 0:
        return out
    for i in range(0, len(q), block):
        qb = q[i:i + block]
        best = np.full(len(qb), q.shape[1], np.int64)
        for j in range(0, len(p), 4096):
            best = np.minimum(best, (qb[:, None, :] != p[None, j:j + 4096, :]).sum(-1).min(1))
        out[i:i + block] = best
    return out
