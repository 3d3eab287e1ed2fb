"""The train/validation/test split by near-copy group: near-copies never straddle train and test.

If one copy of a voice lands in training and another in the test set, a test score partly
measures retrieval of copies. Every preset therefore takes the side of its near-copy group
(:mod:`dexed_data.nearcopy`: same name, at most :data:`~dexed_data.nearcopy.NEAR_PARAMS`
differing learnable parameters, every parameter within one step, same near fingerprint; and here,
mel spectrograms within :data:`SOUND_COPY_DB` of each other, whatever the names and parameters),
and a group's side is a hash of its key (:func:`preset_model.data.split_ids`).

Keys (:func:`split_keys`): a dataset rendered by this version carries each preset's catalogue
group (``/presets/near_group``, the id of the group's first preset over the whole catalogue), so
the name and parameter rules give the same key whatever subset of the catalogue was rendered.
Near fingerprints and spectrograms exist only for rendered presets: groups they join take the
smallest of their keys; so do the parameter rules among the dataset's own rows (a catalogue
imported before the one-step rule lacks its links). So a preset's side can change between a
subset and the whole only when a near-fingerprint or sound twin from another catalogue group is
missing from the subset (measured on the CC0 corpus: docs/RESULTS.md, "Near copies"). Older
datasets without ``/presets/near_group`` are grouped over their own rows.

Example::

    >>> import numpy as np
    >>> split_keys(["b", "a", "c"], np.array([b"a", b"a", b"c"])).tolist()
    ['a', 'a', 'c']
"""

from __future__ import annotations

import numpy as np

from dexed_data.nearcopy import (NEAR_PARAMS, Links, _chain, _equal_row_groups, add_near_copy_links, fingerprint_links,
                                 learnable_values, near_copy_groups, nearest_distance)

__all__ = ["NEAR_PARAMS", "SOUND_COPY_DB", "add_sound_copy_links", "group_keys", "nearest_distance", "split_keys"]

#: Two rendered, audible presets whose dB mel spectrograms differ by at most this much on average
#: (mean |difference| over every note, band and frame, as the log-spectral MAE averages) share a side
#: of the split, whatever their names and parameters: audit A8 found test presets 0.02 dB from a
#: training preset (two voices that differ in a break point and a few envelope rates, another name,
#: and near fingerprints split by a 3 dB step boundary). The nearest training preset of a test preset
#: is about 6 dB away (median).
SOUND_COPY_DB = 0.5


def group_keys(ids, groups: np.ndarray) -> list[str]:
    """Split key of every preset: the smallest id in its group (ids are content hashes)."""
    ids = list(ids)
    smallest: dict[int, str] = {}
    for i, g in zip(ids, groups):
        g = int(g)
        if g not in smallest or i < smallest[g]:
            smallest[g] = i
    return [smallest[int(g)] for g in groups]




def split_keys(ids, near_group: np.ndarray | None = None, raw: np.ndarray | None = None, names=None,
               near_fingerprints: np.ndarray | None = None, fingerprint_valid: np.ndarray | None = None,
               mel=None) -> np.ndarray:
    """Split key of every preset of a dataset: ``(N,)`` str.

    Args:
        ids: N preset ids.
        near_group: ``(N,)`` catalogue group keys (``/presets/near_group``); None to group the
            rows themselves by name and parameters (needs ``raw`` and ``names``).
        raw, names: the presets (``raw`` also links rows by the parameter rules when ``near_group``
            is given: a catalogue imported before the one-step rule lacks those links).
        near_fingerprints, fingerprint_valid: equal near fingerprints of valid rows join groups.
        mel: ``(N, K, M, F)`` dB mel spectrograms (``/mel``, read in blocks), or None: valid rows
            whose spectrograms differ by at most :data:`SOUND_COPY_DB` join groups
            (:func:`add_sound_copy_links`).
    """
    ids = list(ids)
    n = len(ids)
    if near_group is None:
        base = np.array(group_keys(ids, near_copy_groups(raw, names)), dtype=object)
    else:
        base = np.array([g.decode() if isinstance(g, bytes) else str(g) for g in near_group], dtype=object)
    # members of each key, chained (by one sort: comparing every row with every key took ~10 s on the corpus)
    codes = np.unique(base.astype(str), return_inverse=True)[1].reshape(-1, 1) if n else np.zeros((0, 1), np.int64)
    links = Links(n)
    links.add_pairs(_chain(_equal_row_groups(codes)))
    if near_fingerprints is not None:
        links.add_pairs(fingerprint_links(near_fingerprints, fingerprint_valid))
    if near_group is not None and raw is not None and n:
        add_near_copy_links(links, learnable_values(raw))
    if mel is not None and n:
        add_sound_copy_links(links, mel, np.ones(n, bool) if fingerprint_valid is None else fingerprint_valid)
    comp = links.components()
    smallest: dict[int, str] = {}
    for c, k in zip(comp.tolist(), base.tolist()):
        if c not in smallest or k < smallest[c]:
            smallest[c] = k
    return np.array([smallest[c] for c in comp.tolist()], dtype=object)


def _block_sums(x: np.ndarray, bm: int, bt: int) -> np.ndarray:
    """``(n, K, M, F)`` → ``(n, K·⌈M/bm⌉·⌈F/bt⌉)`` float64 sums over blocks of ``bm × bt`` (the last ones smaller)."""
    s = np.add.reduceat(x, np.arange(0, x.shape[2], bm), axis=2, dtype=np.float64)
    return np.add.reduceat(s, np.arange(0, x.shape[3], bt), axis=3).reshape(len(x), -1)


def add_sound_copy_links(links: Links, mel, valid: np.ndarray, tol_db: float = SOUND_COPY_DB,
                         block: int = 256) -> int:
    """Join every two ``valid`` rows whose dB mel spectrograms differ by at most ``tol_db`` on average; exact.

    ``mel`` ``(N, K, M, F)`` (an ``h5py`` dataset is read once, in blocks of rows) is summed over
    blocks of about M/8 bands × F/11 frames: the summed |difference| of two rows' block sums is at
    most their spectrograms' (the triangle inequality), and so is the difference of their totals.
    Rows sorted by mean are compared with those whose mean lies within ``tol_db`` (blocks of
    ``block`` rows), by the L1 distance of their block sums; a pair within the bound that is not
    joined yet is checked on the full spectrograms. Cost: one read of ``mel``, a few seconds for
    30,000 presets, and a check per candidate pair (measured on the CC0 corpus: a few thousand).

    Returns:
        the number of links added.
    """
    import torch

    from .data import read_row, row_blocks

    rows = np.flatnonzero(np.asarray(valid, bool))
    if len(rows) < 2:
        return 0
    _, k, m, f = mel.shape
    bm, bt = -(-m // 8), -(-f // 11)
    total = k * m * f
    reads = max(1, min(block, (64 << 20) // (total * 8)))                 # rows per read: ≤ 64 MB as float64
    feats = np.concatenate([_block_sums(x, bm, bt) for _, _, x in row_blocks(mel, rows, reads)])
    mean = feats.sum(1) / total
    order = np.argsort(mean, kind="stable")
    feats, mean, rows = torch.from_numpy(feats[order]), mean[order], rows[order]
    limit = total * tol_db
    slack = 1e-9 * total * (float(np.abs(mean).max()) + tol_db + 1.0)   # rounding of the sums (far above float64's)
    links.flush()
    parent = {int(r): int(links.label[r]) for r in rows}       # union-find over rows, seeded joined

    def find(r: int) -> int:
        while parent.setdefault(r, r) != r:
            parent[r] = parent.setdefault(parent[r], parent[r])
            r = parent[r]
        return r

    cache: dict[int, np.ndarray] = {}
    cached = max(2, min(256, (256 << 20) // (total * 8)))   # spectrograms kept for the checks: ≤ 256 MB

    def full(r: int) -> np.ndarray:
        if r not in cache:
            if len(cache) >= cached:
                cache.pop(next(iter(cache)))
            cache[r] = np.asarray(read_row(mel, r), np.float64)
        return cache[r]

    added = []
    for a in range(0, len(rows), block):
        b = min(a + block, len(rows))
        hi = int(np.searchsorted(mean, mean[b - 1] + tol_db + slack / total, side="right"))
        d = torch.cdist(feats[a:b], feats[a:hi], p=1.0).numpy()
        i, j = np.nonzero(d <= limit + slack)
        keep = j > i
        for p, q in zip((i[keep] + a).tolist(), (j[keep] + a).tolist()):
            r, s = int(rows[p]), int(rows[q])
            fr, fs = find(r), find(s)
            if fr == fs or np.abs(full(r) - full(s)).sum() > limit:
                continue
            parent[max(fr, fs)] = min(fr, fs)
            added.append((r, s))
    if added:
        links.add_pairs(np.array(added, np.int64))
    return len(added)
