"""Dedup by rendered sound: fingerprints, /duplicate_of at assembly, shards + merge, resume, training splits.

Small real data: voices of Yamaha's ROM1A bank, a short render (one note, 0.3 s + 0.1 s).
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from dexed_data import dataset as ds

from dexed_data import merge as merge_mod
from dexed_data import writer
from dexed_data import sysex
from dexed_data.catalogue import write_catalogue
from dexed_data.fingerprint import (count_distinct, duplicate_groups, duplicate_of, exact_fingerprint,
                                    merged_occurrences, near_fingerprint)
from dexed_data.render import RenderConfig, render_dataset
from dexed_data.schema import operator_offsets

CFG = RenderConfig(notes=((60, 85), (48, 110)), hold=0.3, release=0.1, operators=False, store=("mel",))


def test_fingerprints_on_arrays():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((2, 4000)).astype(np.float32) * 0.1
    b = a.copy()
    b[1, 100] = np.nextafter(b[1, 100], np.float32(1))          # one float32 step on one sample
    assert exact_fingerprint(a).dtype == np.uint8 and exact_fingerprint(a).shape == (16,)
    assert np.array_equal(exact_fingerprint(a), exact_fingerprint(a.copy()))
    assert not np.array_equal(exact_fingerprint(a), exact_fingerprint(b))
    assert np.array_equal(exact_fingerprint(np.zeros((1, 8))), exact_fingerprint(-np.zeros((1, 8))))
    assert np.array_equal(near_fingerprint(a), near_fingerprint(b))          # within the near tolerance
    assert not np.array_equal(near_fingerprint(a), near_fingerprint(a * 4))  # +12 dB is not near


def test_duplicate_of_picks_lowest_row_and_skips_failed():
    fp = np.array([[1] * 16, [2] * 16, [1] * 16, [2] * 16, [1] * 16], np.uint8)
    valid = np.array([False, True, True, True, True])
    assert duplicate_of(fp, valid).tolist() == [-1, -1, -1, 1, 2]
    assert count_distinct(fp, valid) == 2
    groups = duplicate_groups(duplicate_of(fp, valid))
    assert [(r, m.tolist()) for r, m in groups] == [(1, [1, 3]), (2, [2, 4])]


@pytest.fixture(scope="module")
def voices(rom1a_path):
    """Six voices (catalogue order is by id): a pair differing only in a silent operator's
    settings, a variant of that pair differing audibly (louder OP1), and three other ROM1A voices."""
    v = sysex.decode_file(rom1a_path).voices
    base = v[0].raw.copy()                                     # BRASS 1
    o = operator_offsets(2)
    base[o["OUTPUT LEVEL"]] = 0
    base[o["L SCALE DEPTH"]] = base[o["R SCALE DEPTH"]] = 0   # OP2 now outputs nothing
    silent_op_twin = base.copy()
    silent_op_twin[o["EG RATE 1"]] = (int(base[o["EG RATE 1"]]) + 37) % 100
    silent_op_twin[o["F COARSE"]] = (int(base[o["F COARSE"]]) + 3) % 32
    audible = base.copy()
    o1 = operator_offsets(1)
    audible[o1["OUTPUT LEVEL"]] = max(int(base[o1["OUTPUT LEVEL"]]) - 10, 0)
    raws = np.stack([base, silent_op_twin, audible, v[4].raw, v[8].raw, v[16].raw])
    names = ["BASE", "TWIN", "AUDIBLE", "STRINGS", "PIANO", "ORGAN"]
    return raws, names


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory, voices):
    raws, names = voices
    path = tmp_path_factory.mktemp("cat") / "presets.h5"
    occ = {"preset": np.arange(6, dtype=np.int32), "path": np.array([f"bank{i}.syx" for i in range(6)], object),
           "message": np.zeros(6, np.int32), "voice": np.arange(6, dtype=np.int32),
           "name": np.array([n.ljust(10).encode() for n in names], "S10")}
    write_catalogue(path, raws, names, occ)
    return path


def _rows_by_name(path) -> dict[str, int]:
    with ds.DatasetReader(path) as r:
        return {n.strip(): i for i, n in enumerate(r.names)}


@pytest.fixture(scope="module")
def single(tmp_path_factory, catalogue):
    out = tmp_path_factory.mktemp("single") / "dataset.h5"
    render_dataset(catalogue, out, CFG, jobs=1, progress=False, segment_size=2)
    return out


def test_silent_operator_twins_merged_audible_variant_not(single):
    rows = _rows_by_name(single)
    with ds.DatasetReader(single) as r:
        dup = r.duplicate_of
        a, b = sorted((rows["BASE"], rows["TWIN"]))
        assert dup[a] == -1 and dup[b] == a              # the lower row (smaller id) is kept
        assert dup[rows["AUDIBLE"]] == -1
        assert int(np.sum(dup >= 0)) == 1
        assert b not in r.usable() and a in r.usable()
        assert b in r.usable(keep_duplicates=True)
        with h5py.File(single, "r") as f:
            occ = {k: f["occurrences"][k][...] for k in ("preset", "voice")}
        merged = merged_occurrences(occ, dup, a)
        assert sorted(merged["preset"].tolist()) == [a, b]         # provenance of both, from either row
        assert merged_occurrences(occ, dup, b)["preset"].tolist() == merged["preset"].tolist()


def test_merge_finds_duplicates_across_shards(tmp_path, catalogue, single):
    rows = _rows_by_name(single)
    a, b = sorted((rows["BASE"], rows["TWIN"]))
    count = b - a + 1                # one preset per segment, shard k gets rows ≡ k (mod count): twins apart
    shards = [tmp_path / f"s{k}.h5" for k in range(count)]
    for k, p in enumerate(shards):
        render_dataset(catalogue, p, CFG, jobs=1, shard=f"{k}/{count}", progress=False, segment_size=1)
        with h5py.File(p, "r") as f:
            assert np.all(f["duplicate_of"][...] == -1)        # each shard alone has one twin
    merged = merge_mod.merge(shards, tmp_path / "merged.h5")
    with ds.DatasetReader(merged) as m, ds.DatasetReader(single) as s:
        assert m.duplicate_of[b] == a
        assert np.array_equal(m.duplicate_of, s.duplicate_of)
        assert np.array_equal(m.fingerprint, s.fingerprint)


def test_resume_keeps_marks(tmp_path, catalogue, single, monkeypatch):
    out = tmp_path / "resumed.h5"
    real = writer.finish_layout

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed before the file was finished")

    monkeypatch.setattr(writer, "finish_layout", crash)
    with pytest.raises(KeyboardInterrupt):
        render_dataset(catalogue, out, CFG, jobs=1, progress=False, segment_size=2)
    monkeypatch.setattr(writer, "finish_layout", real)
    summary = render_dataset(catalogue, out, CFG, jobs=1, progress=False, segment_size=2)
    assert summary.rendered == 0                                     # every segment came from the first run
    with h5py.File(out, "r") as f, h5py.File(single, "r") as g:
        for name in ("fingerprint", "near_fingerprint", "duplicate_of"):
            assert np.array_equal(f[name][...], g[name][...]), name


def test_info_prints_sound_counts(single):
    from dexed_data.info import describe

    text = describe(single)
    assert "distinct by sound" in text and "duplicates" in text and "silent per note" in text
    line = next(x for x in text.splitlines() if "distinct by sound" in x)
    assert line.split()[3] == "5"          # six presets, one pair renders identically
    assert next(x for x in text.splitlines() if x.strip().startswith("duplicates")).split()[1] == "1"


def test_training_rows_exclude_duplicates(single):
    from preset_model.data import read_usable

    rows = _rows_by_name(single)
    a, b = sorted((rows["BASE"], rows["TWIN"]))
    ids, usable, keys = read_usable(single)
    assert b not in usable and a in usable
    _, kept, _ = read_usable(single, keep_duplicates=True)
    assert b in kept
    assert keys[b] == keys[a]                                        # a kept duplicate shares its split
    # presets on different keys are not near-copies of each other (preset_model.split's rules)
    from dexed_data.nearcopy import NEAR_PARAMS, learnable_values

    with h5py.File(single) as f:
        values, names, near = learnable_values(f["presets/raw"][...]), f["presets/name"][...], f["near_fingerprint"][...]
    for i in range(len(ids)):
        for j in range(i):
            if keys[i] != keys[j]:
                assert (values[i] != values[j]).sum() > NEAR_PARAMS and names[i].strip() != names[j].strip()
                assert not np.array_equal(near[i], near[j])



def test_a_keep_duplicates_runs_split_is_scored_whole(single):
    # evaluate on a run fitted with --keep-duplicates: its split holds duplicates by sound, and they
    # are scored and serve the baselines (they were left out and reported as missing from the data)
    from types import SimpleNamespace

    from preset_model.evaluate import split_rows
    from preset_model.refine import training_rows

    rows = _rows_by_name(single)
    with ds.DatasetReader(single) as r:
        ids = list(r.ids)
    twin = max(rows["BASE"], rows["TWIN"])                      # the duplicate
    others = [i for i in ids if i != ids[twin]]
    split = {"fold": 0, "n_folds": 5, "test_fraction": 0.2,
             "train": others[:3], "valid": [], "test": [ids[twin], *others[3:]]}
    run = SimpleNamespace(checkpoint={"split": split})
    test, train = split_rows(run, single, "test")
    assert twin in test and len(test) == len(split["test"]) and len(train) == 3
    split["train"] = [ids[twin], *others[:3]]
    assert twin in training_rows(single, split["train"])
    assert twin not in training_rows(single)                    # without a run: fold 0 of the kept presets
