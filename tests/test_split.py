"""The near-copy split: near-copies share a side, the split is stable across subsets, kNN sees training only."""

from __future__ import annotations

import hashlib

import numpy as np

from dexed_data.schema import LEARNABLE_PARAMS
from preset_model.data import split_ids
from preset_model.split import NEAR_PARAMS, group_keys, near_copy_groups, near_pairs, nearest_distance

COLS = np.array([p.voice_offset for p in LEARNABLE_PARAMS])
MAXES = np.array([p.max for p in LEARNABLE_PARAMS])


def random_presets(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    raw = np.zeros((n, 145), np.uint8)
    raw[:, COLS] = (rng.random((n, len(COLS))) * (MAXES + 1)).astype(np.uint8)
    return raw


def random_ids(n: int, rng) -> list[str]:
    """n distinct 16-hex-digit ids in random order (like content hashes)."""
    salt = int(rng.integers(1 << 30))
    return [hashlib.sha256(f"{salt}:{i}".encode()).hexdigest()[:16] for i in range(n)]


def mutate(raw: np.ndarray, k: int, rng) -> np.ndarray:
    out = raw.copy()
    for c in rng.choice(len(COLS), k, replace=False):
        p = LEARNABLE_PARAMS[c]
        out[p.voice_offset] = (int(out[p.voice_offset]) + 1 + rng.integers(p.max)) % (p.max + 1)
    return out


def test_near_pairs_is_exact_against_brute_force():
    rng = np.random.default_rng(1)
    base = random_presets(40, seed=1)
    raw = np.concatenate([base] + [np.stack([mutate(r, int(rng.integers(0, 7)), rng) for r in base]) for _ in range(3)])
    values = raw[:, COLS]
    for k in (0, 1, 3, 5):
        dist = (values[:, None, :] != values[None, :, :]).sum(-1)
        want = {(i, j) for i, j in zip(*np.nonzero(dist <= k)) if i < j}
        assert {tuple(p) for p in near_pairs(values, k)} == want


def test_near_copies_share_a_side_and_unrelated_presets_spread():
    rng = np.random.default_rng(2)
    base = random_presets(300, seed=2)
    copies = np.stack([mutate(r, NEAR_PARAMS, rng) for r in base])          # within k of their original
    raw = np.concatenate([base, copies])
    names = [f"V{i}" for i in range(300)] + [f"W{i}" for i in range(300)]
    names[5] = names[77] = "SAME NAME"                                     # same name, different sounds
    fp = rng.integers(0, 256, (600, 16)).astype(np.uint8)
    fp[10] = fp[200] = 7                                                   # same near fingerprint
    groups = near_copy_groups(raw, names, fp, np.ones(600, bool))
    ids = random_ids(600, rng)
    keys = group_keys(ids, groups)
    split = split_ids(ids, 0, groups=keys)
    side = {i: s for s in ("train", "valid", "test") for i in getattr(split, s)}
    for i in range(300):
        assert side[ids[i]] == side[ids[300 + i]]
    assert side[ids[5]] == side[ids[77]] and side[ids[10]] == side[ids[200]]
    assert 0.1 < len(split.test) / 600 < 0.3                               # groups still spread
    # blank names never link
    blank = near_copy_groups(random_presets(3, seed=9), ["", "", "  "])
    assert len(set(blank.tolist())) == 3


def test_split_is_stable_across_subsets_when_groups_are_whole():
    """A subset that keeps each group's smallest id assigns every preset as the whole set does."""
    rng = np.random.default_rng(3)
    base = random_presets(400, seed=3)
    raw = np.concatenate([base, np.stack([mutate(r, 2, rng) for r in base])])
    ids = random_ids(800, rng)
    names = [f"N{i}" for i in range(800)]
    full_keys = group_keys(ids, near_copy_groups(raw, names))
    full = split_ids(ids, 0, groups=full_keys)
    side = {i: s for s in ("train", "valid", "test") for i in getattr(full, s)}
    # drop a random half of the presets, but never a group's key holder
    keep = [r for r in range(800) if ids[r] == full_keys[r] or rng.random() < 0.5]
    sub_ids = [ids[r] for r in keep]
    sub_keys = group_keys(sub_ids, near_copy_groups(raw[keep], [names[r] for r in keep]))
    assert sub_keys == [full_keys[r] for r in keep]
    sub = split_ids(sub_ids, 0, groups=sub_keys)
    for s in ("train", "valid", "test"):
        assert all(side[i] == s for i in getattr(sub, s))


def test_nearest_distance_counts_differing_learnable_parameters():
    rng = np.random.default_rng(4)
    pool = random_presets(50, seed=4)
    queries = np.stack([mutate(pool[3], 1, rng), mutate(pool[7], 5, rng), pool[9]])
    d = nearest_distance(queries, pool)
    assert d[0] <= 1 and d[1] <= 5 and d[2] == 0
    assert nearest_distance(queries, pool[:0]).tolist() == [144, 144, 144]
