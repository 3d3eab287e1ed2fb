"""dataset.h5 without rendering: chunk encoding, segment writer + assembly, reader checks, FORMAT.md example."""

from __future__ import annotations

import json
import re
from pathlib import Path

import h5py
import numpy as np
import pytest

from dexed_data import dataset as ds

from dexed_data import storage, wav, writer
from dexed_data import merge as merge_mod
from dexed_data.errors import DatasetError
from dexed_data.info import describe
from dexed_data.schema import FIXED_PARAMS, VOICE_MAX, apply_fixed, voice_index

REPO = Path(__file__).resolve().parents[1]
NOTES = ((48, 100), (60, 85))
SHAPES = ds.Shapes(notes=2, samples=2205, mels=257, frames=9)
MEL_CONFIG = {"sample_rate": 22050, "n_fft": 1024, "hop": 256, "n_mels": 257, "floor_db": -120.0}


def fake_dataset(path: Path, config: storage.StorageConfig, n: int = 6, failed=(2,), seed: int = 0,
                 occurrence_names=None) -> dict:
    """Write a dataset of ``n`` synthetic presets through the real writer; return what went in."""
    rng = np.random.default_rng(seed)
    raw = apply_fixed(rng.integers(0, VOICE_MAX.astype(np.int64) + 1, size=(n, 145)))
    ids = np.array([f"{i:016x}".encode() for i in range(n)], "S16")
    table = ds.PresetTable(raw, ids, np.array([f"FAKE {i}".encode() for i in range(n)], "S10"),
                           np.arange(n, dtype=np.int32), np.arange(n, dtype=np.int32),
                           {"preset": np.arange(n, dtype=np.int32), "path": np.array([f"bank{i}.syx" for i in range(n)], object),
                            "message": np.zeros(n, np.int32), "voice": np.arange(n, dtype=np.int32),
                            "name": np.array([f"FAKE {i}".encode() for i in range(n)], "S10")
                            if occurrence_names is None else occurrence_names})
    audio = (rng.standard_normal((n,) + SHAPES.of("audio")) * 0.1).astype(np.float32)   # noise: LZF gives up
    mel = np.clip(np.round(rng.standard_normal((n,) + SHAPES.of("mel")) * 4) - 90, -120, 0).astype(np.float16)
    enc = storage.ChunkEncoder(config)
    seg = path.with_name(path.name + ".seg.h5")
    w = writer.SegmentWriter(seg, 0, n, config, SHAPES)
    for i in range(n):
        if i in failed:
            w.add(writer.RowResult(i, ds.STATUS_FAILED, "EngineError: boom"))
            continue
        chunks = {name: enc.encode(name, {"audio": audio, "mel": mel}[name][i]) for name in config.arrays}
        w.add(writer.RowResult(i, ds.STATUS_OK, "", chunks, np.full((2, 6), -10, np.float32), np.ones((2, 6), bool),
                           np.abs(audio[i]).max(-1), np.ones(2, np.float32), False,
                           float(mel[i].min()), float(mel[i].max()),
                           fingerprint=np.full(16, i, np.uint8), near_fingerprint=np.zeros(16, np.uint8)))
    assert w.full
    w.finish()
    header = ds.DatasetHeader("dexed", "test", 22050, NOTES, 0.05, 0.05, dict(FIXED_PARAMS), MEL_CONFIG,
                              True, config, SHAPES, "dexed-data render test", "0" * 16, n)
    with h5py.File(seg, "r") as f:
        writer.write_dataset(path, header, table, [writer.Block(f, np.arange(n), np.arange(n), (-120.0, 0.0))])
    seg.unlink()
    return {"raw": raw, "audio": audio, "mel": mel, "failed": failed}


def test_occurrence_names_keep_their_bytes_nuls_included(tmp_path):
    # read_catalogue gives names as str objects; real banks have NULs inside names (131 in the corpus)
    names = np.array(["E.ORG\x00N 7 ", "PLAIN     ", "X\x00\x00\x00\x00\x00\x00\x00\x00\x00", "A", "B", "C"], object)
    path = tmp_path / "d.h5"
    fake_dataset(path, storage.StorageConfig(("mel",), "none"), occurrence_names=names)
    with h5py.File(path, "r") as f:
        assert f["occurrences/name"][0] == b"E.ORG\x00N 7 " and f["occurrences/name"][1] == b"PLAIN     "
    with h5py.File(path, "r") as f:
        back = ds.read_presets(f).occurrences["name"]
    assert list(back[:2]) == ["E.ORG\x00N 7 ", "PLAIN     "] and back[3] == "A         "


@pytest.mark.parametrize("compression", ["none", "lzf", "gzip-4"])
def test_writer_round_trip_through_plain_h5py(tmp_path, compression):
    config = storage.StorageConfig(("audio", "mel"), compression)
    path = tmp_path / "d.h5"
    src = fake_dataset(path, config)
    ok = [i for i in range(6) if i not in src["failed"]]
    with h5py.File(path, "r") as f:
        assert f["mel"].compression == (None if compression == "none" else compression[:4])
        # uncompressed: one contiguous array, rows written in place; compressed: one preset per chunk
        assert f["mel"].chunks == (None if compression == "none" else (1,) + SHAPES.of("mel"))
        for i in src["failed"]:   # failed rows read as NaN in both layouts
            assert np.isnan(f["mel"][i]).all() and np.isnan(f["audio"][i]).all()
        for i in ok:
            assert np.array_equal(f["mel"][i], src["mel"][i])
            assert np.array_equal(f["audio"][i], src["audio"][i].astype(np.float16))
        assert np.array_equal(f["presets/raw"][...], src["raw"])
        assert f["status"][...].tolist() == [ds.STATUS_FAILED if i in src["failed"] else ds.STATUS_OK for i in range(6)]
        assert f["error"].asstr()[2] == "EngineError: boom"
        assert json.loads(f["schema"].attrs["table"])[0]["name"] == "Cutoff"
    with ds.DatasetReader(path) as r:
        assert r.usable().tolist() == ok
        assert r.mel_bounds == (-120.0, 0.0) and r.info.notes == NOTES
        assert np.array_equal(r.audio(1), src["audio"][1].astype(np.float16).astype(np.float32))
        assert r.errors == {r.ids[2]: "EngineError: boom"}


def test_storage_config_is_canonical_and_checked():
    assert storage.StorageConfig.parse("mel,audio", "gzip-1").arrays == ("audio", "mel")
    with pytest.raises(DatasetError, match="choose among"):
        storage.StorageConfig.parse("audio,wav")
    with pytest.raises(DatasetError, match="gzip-1"):
        storage.StorageConfig(compression="gzip-0")
    with pytest.raises(DatasetError, match="float16"):
        storage.StorageConfig(audio_dtype="int16")


def test_reader_refuses_other_versions_schemas_and_incomplete_files(tmp_path):
    path = tmp_path / "d.h5"
    fake_dataset(path, storage.StorageConfig(("mel",)))
    for key, value, message in [("format_version", 99, "version 99"), ("schema_hash", "0123456789abcdef", "schema"),
                                ("complete", False, "incomplete"), ("format", "dexed-catalogue", "a catalogue of presets, not a rendered dataset"),
                                ("format", "something-else", "not a dexed dataset")]:
        bad = tmp_path / f"bad-{key}.h5"
        bad.write_bytes(path.read_bytes())
        with h5py.File(bad, "a") as f:
            f.attrs[key] = value
        with pytest.raises(DatasetError, match=message):
            ds.DatasetReader(bad)
    with pytest.raises(DatasetError, match="no such dataset"):
        ds.DatasetReader(tmp_path / "missing.h5")


def test_merge_refuses_files_that_are_not_shards(tmp_path):
    path = tmp_path / "d.h5"
    fake_dataset(path, storage.StorageConfig(("mel",)))
    with pytest.raises(DatasetError, match="not a shard file"):
        merge_mod.merge([path], tmp_path / "m.h5")
    with pytest.raises(DatasetError, match="give the shard files"):
        merge_mod.merge([], tmp_path / "m.h5")


def test_export_wav_without_stored_audio_needs_the_same_engine(tmp_path):
    path = tmp_path / "d.h5"
    fake_dataset(path, storage.StorageConfig(("mel",)))      # engine_version "test": cannot be re-rendered
    with pytest.raises(DatasetError, match="--store audio,mel"):
        wav.export_wav(path, tmp_path / "wav")


def test_describe_summarises(tmp_path):
    path = tmp_path / "d.h5"
    fake_dataset(path, storage.StorageConfig(("audio", "mel"), "gzip-1"))
    text = describe(path)
    assert "format version 1" in text and "6 (5 ok, 1 failed" in text and "gzip-1" in text
    assert "EngineError: boom" in text


def test_format_md_example_runs(tmp_path, capsys):
    """The plain-h5py example in docs/FORMAT.md runs as written on a dataset file."""
    doc = (REPO / "docs" / "FORMAT.md").read_text()
    example = re.search(r"```python\n(.*?)```", doc, re.S).group(1)
    assert len(example.strip().splitlines()) <= 10
    path = tmp_path / "d.h5"
    src = fake_dataset(path, storage.StorageConfig(("audio", "mel")))
    exec(compile(example.replace('"dataset.h5"', repr(str(path))), "FORMAT.md", "exec"), {})
    out = capsys.readouterr().out
    assert "FAKE 0" in out and f"ALGORITHM {src['raw'][0][voice_index('ALGORITHM')] + 1} of 1-32" in out


def test_fast_float16_conversion_equals_numpy():
    # the workers convert through torch for speed; the stored bits must be numpy's (IEEE, nearest-even)
    rng = np.random.default_rng(0)
    x = np.concatenate([(rng.standard_normal(100_000) * 10.0 ** rng.integers(-9, 6, 100_000)).astype(np.float32),
                        np.array([0.0, -0.0, 65504.0, 65520.0, 1e6, -1e6, 6e-8, 3e-8, 2.98e-8, np.inf, -np.inf],
                                 np.float32)])
    assert x.dtype == np.float32
    fast = storage.as_dtype(x.reshape(-1, 1), np.float16)
    assert fast.dtype == np.float16 and fast.flags["C_CONTIGUOUS"]
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(fast.view(np.uint16).ravel(), x.astype(np.float16).view(np.uint16))
    assert storage.as_dtype(x, np.float32) is not None and storage.as_dtype(x[:3], np.float32).dtype == np.float32
