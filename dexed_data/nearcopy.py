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


class Links:
    """Links between ``n`` rows kept as connected components: memory ``O(n)`` however many links.

    Links are buffered and folded into component labels (each row's smallest row of its component)
    when the buffer grows past ``max(65,536, n / 2)`` links or on :meth:`components`. ``label`` may lag
    behind the buffer: two rows with equal labels are joined, unequal ones may be joined already.
    """

    def __init__(self, n: int):
        self.n = n
        self.label = np.arange(n, dtype=np.int64)
        self._pending: list[np.ndarray] = []
        self._count = 0

    def add(self, a: np.ndarray, b: np.ndarray) -> None:
        """Join rows ``a[i]`` and ``b[i]`` for every ``i``."""
        a, b = np.asarray(a, np.int64).ravel(), np.asarray(b, np.int64).ravel()
        new = self.label[a] != self.label[b]
        if new.any():
            self._pending.append(np.stack([a[new], b[new]], 1))
            self._count += int(new.sum())
            if self._count > max(1 << 16, self.n // 2):
                self.flush()

    def add_pairs(self, pairs: np.ndarray) -> None:
        """Join the two rows of every row of ``pairs (P, 2)``."""
        pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
        self.add(pairs[:, 0], pairs[:, 1])

    def flush(self) -> None:
        """Fold the buffered links into ``label``."""
        if not self._pending:
            return
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        pairs = np.concatenate(self._pending)
        self._pending, self._count = [], 0
        # each row's present label is a row of its component, so (row, label) keeps what is joined
        i = np.concatenate([pairs[:, 0], np.arange(self.n)])
        j = np.concatenate([pairs[:, 1], self.label])
        graph = coo_matrix((np.ones(len(i), np.int8), (i, j)), shape=(self.n, self.n))
        count, comp = connected_components(graph, directed=False)
        smallest = np.full(count, self.n, np.int64)
        np.minimum.at(smallest, comp, np.arange(self.n))
        self.label = smallest[comp]

    def components(self) -> np.ndarray:
        """Smallest row of each row's component, ``(n,)`` int64."""
        self.flush()
        return self.label.copy()


def add_near_links(links: Links, values: np.ndarray, k: int = NEAR_PARAMS, small: int = 256) -> None:
    """Join every two rows of ``values (N, D)`` that differ in at most ``k`` columns (exact components).

    By the pigeonhole principle: split the columns into ``k + 1`` bands; two rows that differ in at
    most ``k`` columns agree on at least one whole band, so only rows that share a band are
    compared. A group of rows that share a band is split again in the same way over the columns
    that still vary in it, until it is small (every two of its rows compared, in blocks) or varies
    in at most ``k`` columns (all of its rows joined): so many variants of one voice (a patch
    randomiser's output) cost about ``N log N``, not ``N²``. Groups whose rows are all joined
    already are skipped.
    """
    values = np.asarray(values)
    n, d = values.shape
    # a fixed shuffle mixes operators and globals in each band, so bands rarely coincide by accident
    stack = [(np.arange(n), np.random.default_rng(0).permutation(d))]
    while stack:
        rows, cols = stack.pop()
        label = links.label[rows]
        if len(rows) < 2 or (label == label[0]).all():
            continue
        sub = values[np.ix_(rows, cols)]
        varying = cols[(sub != sub[0]).any(0)]
        if varying.size <= k:   # every two rows differ in at most k columns
            links.add(rows[:-1], rows[1:])
        elif len(rows) <= small:
            part = values[np.ix_(rows, varying)]
            for i in range(0, len(rows), 64):
                dist = (part[i:i + 64, None, :] != part[None, :, :]).sum(-1)
                ii, jj = np.nonzero(dist <= k)
                keep = ii + i < jj
                links.add(rows[ii[keep] + i], rows[jj[keep]])
        else:
            for band in np.array_split(varying, k + 1):
                rest = varying[~np.isin(varying, band)]
                stack.extend((rows[g], rest) for g in _equal_row_groups(values[np.ix_(rows, band)]))


#: Set bits of each byte value (np.bitwise_count, 2.5 times faster here, needs NumPy 2).
_BITS = np.array([bin(i).count("1") for i in range(256)], np.uint8)


def _set_bits(rows: np.ndarray) -> np.ndarray:
    """Set bits of each row of ``rows (n, 8·w)`` uint8, ``(n,)``."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(rows.view(np.uint64)).sum(1, dtype=np.int64)
    return _BITS[rows].sum(1, dtype=np.int64)


#: Rows compared with each row in :func:`add_step_links`'s sorted order (the CC0 corpus needs 68).
STEP_WINDOW = 256


def add_step_links(links: Links, values: np.ndarray, m: int = STEP_PARAMS, window: int = STEP_WINDOW) -> None:
    """Join rows of ``values (N, D)`` one step apart in each of at most ``m`` columns and equal in the others.

    As :func:`add_near_links`, rows that differ in at most ``m`` columns share one of ``m + 1`` bands
    of columns; and such rows' sums of values are at most ``m`` apart. So each band's rows are sorted
    by (band values, sum), and each row is compared with the next ones while they share its band
    values and their sums are within ``m``: one array operation per distance in that order, for
    all groups at once (the corpus's ~80,000 small groups cost 8 s one by one). Exact when no more
    than ``window`` rows follow a row in that order within its band values and sum range (true of
    the CC0 corpus, where the most is 67); beyond, only the ``window`` next ones are compared, so
    that a file of many variants of one voice costs ``N · window``, not ``N²``. Pairs already
    joined are not compared, nor pairs whose values' lowest bits differ in more than ``m`` columns
    (a step flips a value's lowest bit: exact, and cheap).
    """
    values = np.asarray(values)
    n, d = values.shape
    if n < 2:
        return
    sums = values.sum(1, dtype=np.int64)   # (not astype first: 600 MB at 64 MB of voices)
    # each value's lowest bit, packed: rows one step apart in c columns differ in c of these bits, so
    # a pair whose bits differ in more than m columns is out at the cost of a few words (a file of
    # voices each nudged by one step in many parameters compared every pair in full)
    parity = np.packbits(values & 1, axis=1)
    parity = np.ascontiguousarray(np.pad(parity, ((0, 0), (0, -parity.shape[1] % 8))))   # whole 64-bit words
    # (with d ≤ m columns every row may pair with every other: one band of no columns, one group)
    bands = np.array_split(np.random.default_rng(0).permutation(d), m + 1) if d > m else [np.arange(0)]
    for band in bands:
        links.flush()
        group = unique_rows(values[:, band])[1] if band.size else np.zeros(n, np.int64)
        # only rows of groups that span two components or more can join anything
        lowest, highest = np.full(n, n, np.int64), np.full(n, -1, np.int64)
        np.minimum.at(lowest, group, links.label)
        np.maximum.at(highest, group, links.label)
        rows = np.flatnonzero(lowest[group] != highest[group])
        if rows.size < 2:
            continue
        order = rows[np.lexsort((sums[rows], group[rows]))]
        g, s, bits = group[order], sums[order], parity[order]
        alive = np.ones(len(order), bool)   # rows whose next ones in the order may still be near them
        for step in range(1, window + 1):
            if step >= len(order):
                break
            # a row is compared with the one `step` places after it: contiguous slices, no gathers
            alive = alive[:-1] & (g[step:] == g[:-step]) & (s[step:] - s[:-step] <= m)   # fails for every later one too
            if not alive.any():
                break
            start = np.flatnonzero(alive & (_set_bits(bits[step:] ^ bits[:-step]) <= m))
            a, b = order[start], order[start + step]
            new = links.label[a] != links.label[b]
            a, b = a[new], b[new]
            for i in range(0, len(a), 1 << 16):   # in blocks: all at once held 600 MB of differences at 64 MB
                x, y = a[i:i + (1 << 16)], b[i:i + (1 << 16)]
                diff = np.abs(values[x].astype(np.int16) - values[y].astype(np.int16))
                ok = (diff.max(1, initial=0) <= 1) & ((diff > 0).sum(1) <= m)
                links.add(x[ok], y[ok])


def add_near_copy_links(links: Links, values: np.ndarray, k: int = NEAR_PARAMS, step_params: int = STEP_PARAMS) -> None:
    """Join rows of learnable values ``(N, 144)`` linked by the parameter rules (module docstring):
    at most ``k`` differing values, or at most ``step_params`` values one step apart and the rest
    equal."""
    add_near_links(links, values, k)
    if step_params:
        add_step_links(links, values, step_params)


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
    links = Links(n)
    links.add_pairs(_chain([np.flatnonzero(named)[g] for g in _equal_row_groups(name_codes[named][:, None])]))
    if near_fingerprints is not None:
        links.add_pairs(fingerprint_links(near_fingerprints, fingerprint_valid))
    add_near_copy_links(links, learnable_values(raw), k, step_params)
    return links.components()


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
