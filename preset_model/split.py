"""The train/validation/test split by near-copy group: near-copies never straddle train and test.

If one copy of a voice lands in training and another in the test set, a test score partly
measures retrieval of copies. Every preset therefore takes the side of its near-copy group
(:mod:`dexed_data.nearcopy`: same name, at most :data:`~dexed_data.nearcopy.NEAR_PARAMS`
differing learnable parameters, every parameter within one step, same near fingerprint), and a
group's side is a hash of its key (:func:`preset_model.data.split_ids`).

Keys (:func:`split_keys`): a dataset rendered by this version carries each preset's catalogue
group (``/presets/near_group``, the id of the group's first preset over the whole catalogue), so
the name and parameter rules give the same key whatever subset of the catalogue was rendered.
Near fingerprints exist only for rendered presets: groups they join take the smallest of their
keys; so do the parameter rules among the dataset's own rows (a catalogue imported before the
one-step rule lacks its links). So a preset's side can change between a subset and the whole
only when a near-fingerprint twin from another catalogue group is missing from the subset
(measured on the CC0 corpus: 2.2 % of presets for a random half, docs/RESULTS.md). Older
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

__all__ = ["NEAR_PARAMS", "group_keys", "nearest_distance", "split_keys"]


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
               near_fingerprints: np.ndarray | None = None, fingerprint_valid: np.ndarray | None = None) -> np.ndarray:
    """Split key of every preset of a dataset: ``(N,)`` str.

    Args:
        ids: N preset ids.
        near_group: ``(N,)`` catalogue group keys (``/presets/near_group``); None to group the
            rows themselves by name and parameters (needs ``raw`` and ``names``).
        raw, names: the presets (``raw`` also links rows by the parameter rules when ``near_group``
            is given: a catalogue imported before the one-step rule lacks those links).
        near_fingerprints, fingerprint_valid: equal near fingerprints of valid rows join groups.
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
    comp = links.components()
    smallest: dict[int, str] = {}
    for c, k in zip(comp.tolist(), base.tolist()):
        if c not in smallest or k < smallest[c]:
            smallest[c] = k
    return np.array([smallest[c] for c in comp.tolist()], dtype=object)
