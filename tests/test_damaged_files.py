"""Hand-damaged catalogues and datasets: every command refuses them with one ``error:`` line.

Each case is a good file with one h5py edit (an array deleted, cut or reshaped, an index out of
range, an attribute of the wrong type or value, a raw value above its maximum). The files are
checked once where they are opened (:func:`dexed_data.catalogue.check_catalogue`,
:func:`dexed_data.dataset.check_dataset`), so every command gives the same line, naming the
file, the array or attribute (and the preset row and id) and what to do; nothing is written.

Data: the 64 bundled presets; a 4-preset render of one short note for ``dexed-data``'s commands,
and the session's fitted tiny runs and their dataset (tests/run_fixtures.py) for ``preset-model``'s.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from dexed_data.cli import app as data_app
from preset_model.cli import app as model_app

REPO = Path(__file__).resolve().parents[1]


def run(app, *args):
    return CliRunner().invoke(app, [str(a) for a in args])


def clean_error(res, *needles) -> str:
    """Exit 2, one ``error:`` line on stderr (no traceback) holding every needle; returns the line."""
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert res.exit_code == 2, (res.exit_code, res.output)
    lines = [line for line in res.stderr.splitlines() if line.strip() and "it/s" not in line]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "Traceback" not in res.output
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def damaged_copy(src: Path, dst: Path, edit) -> Path:
    """``src`` copied to ``dst`` with one h5py edit applied."""
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        edit(f)
    return dst


def replace(name, make):
    """An edit: dataset ``name`` replaced by ``make(its values)``."""
    def edit(f):
        values = make(f[name][...])
        del f[name]
        f[name] = values
    return edit


def delete(name):
    def edit(f):
        del f[name]
    return edit


def set_attr(name, value):
    def edit(f):
        f.attrs[name] = value
    return edit


def del_attr(name):
    def edit(f):
        del f.attrs[name]
    return edit


def set_item(name, index, value):
    def edit(f):
        values = f[name][...]
        values[index] = value
        f[name][...] = values
    return edit


# --------------------------------------------------------------------------- fixtures


from test_faults import catalogue, dataset, fitted, work  # noqa: E402,F401 - the same small files


@pytest.fixture(scope="module")
def tone(work) -> Path:
    """A recording named by its note, as export-wav names them."""
    path = work / "tone_60-85.wav"
    t = np.arange(int(0.75 * 22050)) / 22050
    sf.write(path, (0.2 * np.sin(2 * np.pi * 261.63 * t)).astype(np.float32), 22050)
    return path


# --------------------------------------------------------------------------- 7: list


LIST_EDITS = {
    "no raw": (delete("presets/raw"), ["missing /presets/raw"]),
    "no id": (delete("presets/id"), ["missing /presets/id"]),
    "raw rows fewer than ids": (replace("presets/raw", lambda v: v[:2]), ["/presets/raw has shape (2, 145)"]),
    "no occurrences": (delete("occurrences"), ["missing /occurrences/preset"]),
}


@pytest.mark.parametrize("edit", sorted(LIST_EDITS))
@pytest.mark.parametrize("kind", ["catalogue", "dataset"])
def test_list_refuses_what_info_refuses(kind, edit, catalogue, dataset, tmp_path):
    src = {"catalogue": catalogue, "dataset": dataset}[kind]
    change, needles = LIST_EDITS[edit]
    bad = damaged_copy(src, tmp_path / "bad.h5", change)
    line = clean_error(run(data_app, "list", bad), str(bad), f"malformed {kind}", *needles)
    assert clean_error(run(data_app, "info", bad)) == line   # one check, the same words
    if kind == "catalogue":
        assert clean_error(run(data_app, "export", bad, "--all", "-o", tmp_path / "x.syx")) == line
        assert not (tmp_path / "x.syx").exists()


def _mel_config(**changes):
    def edit(f):
        f.attrs["mel_config"] = json.dumps({**json.loads(f.attrs["mel_config"]), **changes})
    return edit


TIMING_EDITS = {   # audit U: attributes that contradict the arrays' shapes were accepted
    "hold": (set_attr("hold", 0.6), ["shapes has 6615 samples per note", "hold 0.6 s + release 0.1 s", "make 15434"]),
    "hop": (_mel_config(hop=512), ["shapes has", "frames", "mel_config's hop 512"]),
    "n_mels": (_mel_config(n_mels=80), ["mel bands, attribute mel_config 80"]),
    "bounds": (set_attr("mel_min_db", float("nan")), ["mel_min_db, mel_max_db are nan", "finite bounds"]),
}


@pytest.mark.parametrize("edit", sorted(TIMING_EDITS))
def test_attributes_that_contradict_the_arrays_are_refused(edit, dataset, tmp_path):
    change, needles = TIMING_EDITS[edit]
    bad = damaged_copy(dataset, tmp_path / "bad.h5", change)
    line = clean_error(run(data_app, "list", bad), str(bad), "malformed dataset", *needles)
    assert clean_error(run(data_app, "info", bad)) == line


def test_list_names_a_folder_and_a_truncated_file(dataset, tmp_path):
    folder = tmp_path / "x.h5"
    folder.mkdir()
    clean_error(run(data_app, "list", folder), "x.h5 is a folder")
    cut = tmp_path / "cut.h5"
    data = dataset.read_bytes()
    cut.write_bytes(data[: len(data) // 3])
    line = clean_error(run(data_app, "list", cut), "cut.h5", "damaged HDF5 file", "truncated", "copy or write it again")
    assert "not an HDF5 file" not in line


# --------------------------------------------------------------------------- 8: catalogue arrays


CATALOGUE_EDITS = {
    "raw (64, 100)": (replace("presets/raw", lambda v: v[:, :100]), ["/presets/raw has shape (64, 100)", "(64, 145)"]),
    "raw (64,)": (replace("presets/raw", lambda v: v[:, 0]), ["/presets/raw has shape (64,)"]),
    "near_group out of range": (set_item("presets/near_group", 0, 9999), ["/presets/near_group of row 0", "9999"]),
    "sound_group out of range": (set_item("presets/sound_group", 5, -3), ["/presets/sound_group of row 5", "-3"]),
    "occurrence of no preset": (set_item("occurrences/preset", 0, 64), ["/occurrences/preset of row 0", "64"]),
    "raw of another dtype": (replace("presets/raw", lambda v: v.astype(np.float32)), ["/presets/raw holds float32"]),
}


@pytest.mark.parametrize("edit", sorted(CATALOGUE_EDITS))
@pytest.mark.parametrize("command", ["export", "render"])
def test_catalogue_arrays_are_checked_on_reading(command, edit, catalogue, tmp_path):
    change, needles = CATALOGUE_EDITS[edit]
    bad = damaged_copy(catalogue, tmp_path / "bad.h5", change)
    args = (["--all", "-o", tmp_path / "x.syx"] if command == "export"
            else ["-o", tmp_path / "d.h5", "--limit", "4", "--notes", "60:85", "--hold", "0.2", "--release", "0.1",
                  "--no-progress"])
    clean_error(run(data_app, command, bad, *args), "bad.h5", "malformed catalogue", *needles, "import the SysEx again")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.h5"]


# --------------------------------------------------------------------------- 9: datasets for preset-model


def mel_frames(f):
    mel = f["mel"][:, :, :, :5]
    del f["mel"]
    f["mel"] = mel


DATASET_EDITS = {
    "no raw": (delete("presets/raw"), ["missing /presets/raw"]),
    "no notes": (del_attr("notes"), ["missing attribute notes"]),
    "notes not pairs": (set_attr("notes", [60, 85, 1]), ["attribute notes = [60, 85, 1]", "(pitch, velocity) pairs"]),
    "mel_config not JSON": (set_attr("mel_config", "not json"), ["attribute mel_config = 'not json'", "JSON"]),
    "status of 5 rows": (replace("status", lambda v: v[:5]), ["/status", "one row per preset (64)"]),
    "mel of 10 rows": (replace("mel", lambda v: v[:10]), ["/mel", "one row per preset (64)"]),
    "mel of 5 frames": (mel_frames, ["/mel has shape (64, 6, 257, 5)"]),
    "audible (64, 6)": (replace("audible", lambda v: v[:, 0]), ["/audible has shape (64, 6)", "(64, 6, 6)"]),
    "hold -1": (set_attr("hold", -1.0), ["attribute hold = -1.0", "> 0"]),
    "no status": (delete("status"), ["missing /status"]),
    "sample_rate 0": (set_attr("sample_rate", 0), ["attribute sample_rate = 0"]),
    "ALGORITHM 200": (set_item("presets/raw", (slice(None), 134), 200), ["ALGORITHM = 200", "above its max 31",
                                                                           "preset row 0 (id "]),
}


@pytest.fixture(scope="module")
def damaged_data(fitted, work):
    """The fitted runs' dataset, damaged one way per file (made on first use)."""
    made: dict[str, Path] = {}

    def get(edit: str) -> Path:
        if edit not in made:
            made[edit] = damaged_copy(fitted.data, work / f"data-{len(made)}.h5", DATASET_EDITS[edit][0])
        return made[edit]
    return get


@pytest.mark.parametrize("edit", sorted(DATASET_EDITS))
@pytest.mark.parametrize("command", ["fit", "evaluate", "match"])
def test_preset_model_checks_a_dataset_as_dexed_data_does(command, edit, damaged_data, fitted, tone, tmp_path):
    bad = damaged_data(edit)
    args = {"fit": ["fit", "--data", bad, "--out", tmp_path / "run", "--size", "tiny", "--epochs", "1",
                    "--workers", "0", "--device", "cpu", "--no-progress", "--max-steps", "1"],
            "evaluate": ["evaluate", fitted.mlp1, "--data", bad, "--limit", "2", "-o", tmp_path / "e.json"],
            "match": ["match", "--data", bad, tone, "-o", tmp_path / "m.syx"]}[command]
    line = clean_error(run(model_app, *args), str(bad), *DATASET_EDITS[edit][1])
    assert tone.name not in line                                # the dataset is to blame, not the recording
    assert clean_error(run(data_app, "info", bad)) == line      # the same check as dexed-data's
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- 10: report, merge


def test_report_checks_duplicate_rows(dataset, tmp_path):
    bad = damaged_copy(dataset, tmp_path / "bad.h5", set_item("duplicate_of", 3, 999))
    clean_error(run(data_app, "report", bad, "-o", tmp_path / "rep"), "bad.h5", "/duplicate_of of row 3", "999",
                "-1 or an earlier row")
    assert not (tmp_path / "rep").exists()


def test_merge_checks_the_shard_attribute(catalogue, tmp_path):
    from dexed_data.render import RenderConfig, render_dataset

    cfg = RenderConfig(notes=((60, 85),), hold=0.2, release=0.1)
    shards = [tmp_path / f"s{k}.h5" for k in range(2)]
    for k, shard in enumerate(shards):
        render_dataset(catalogue, shard, cfg, jobs=1, shard=f"{k}/2", progress=False, limit=4, segment_size=2)
    for value in ("zz", "3/2", "1"):
        with h5py.File(shards[1], "r+") as f:
            f.attrs["shard"] = value
        clean_error(run(data_app, "merge", *shards, "-o", tmp_path / "m.h5"), "s1.h5", f"attribute shard = '{value}'",
                    "K/N")
        assert not (tmp_path / "m.h5").exists()


# --------------------------------------------------------------------------- 11: export-wav with nothing to export


def no_rows(f):
    """Every per-preset array (and the occurrences) cut to 0 rows: a dataset of no presets."""
    n = f["presets/id"].shape[0]
    names = []
    f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) and obj.shape[:1] in
                 ((n,), (f["occurrences/preset"].shape[0],)) else None)
    for name in names:
        d = f[name]
        values, dtype = d[...][:0], d.dtype
        del f[name]
        f.create_dataset(name, data=values, dtype=dtype)
    f.attrs["selection_size"] = 0


@pytest.mark.parametrize("edit,needle", [(set_item("status", slice(None), 2), "all 4 presets failed to render"),
                                         (no_rows, "the dataset holds no presets")], ids=["all failed", "empty"])
def test_export_wav_says_there_is_nothing_to_export(edit, needle, dataset, tmp_path):
    bad = damaged_copy(dataset, tmp_path / "bad.h5", edit)
    clean_error(run(data_app, "export-wav", bad, "-o", tmp_path / "wav"), "bad.h5", "nothing to export", needle)
    assert not (tmp_path / "wav").exists()


# --------------------------------------------------------------------------- 12: errors name the file and preset


def test_export_names_the_catalogue_preset_and_parameter(catalogue, tmp_path):
    bad = damaged_copy(catalogue, tmp_path / "bad.h5", set_item("presets/raw", (3, 0), 200))
    with h5py.File(bad, "r") as f:
        ident = f["presets/id"][3].decode()
    line = clean_error(run(data_app, "export", bad, "--all", "-o", tmp_path / "x.syx"), "bad.h5",
                       f"preset row 3 (id {ident})", "OP6 EG RATE 1 = 200", "above its max 99")
    assert "clamp" not in line
    assert not (tmp_path / "x.syx").exists()


def test_export_wav_names_the_dataset_preset_and_parameter(dataset, tmp_path):
    bad = damaged_copy(dataset, tmp_path / "bad.h5", set_item("presets/raw", (slice(None), 134), 200))
    line = clean_error(run(data_app, "export-wav", bad, "-o", tmp_path / "wav"), "bad.h5", "preset row 0 (id ",
                       "ALGORITHM = 200")
    assert "dexed_data.sysex" not in line
    assert not (tmp_path / "wav").exists()
