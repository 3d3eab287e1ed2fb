"""The Python API (dexed_data.open_dataset / render, preset_model.load_run), runs that travel,
and the examples of the README, docs/FORMAT.md and the API docstrings, run as written.

The examples refer to ``dataset.h5``, ``runs/paper``, ``presets/`` and ``piano_60-85.wav`` in the
current folder; :func:`workdir` builds such a folder from real data: the bundled banks imported
(with provenance) and rendered on the paper's six notes (short notes), and the session's tiny
fitted run copied to ``runs/paper`` as a run that travels (its checkpoint holds the render
settings, its recorded dataset path does not exist).
"""

from __future__ import annotations

import doctest
import importlib
import json
import re
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from run_fixtures import HOLD, NOTES, RELEASE, build

REPO = Path(__file__).resolve().parents[1]


def render_record(data: Path) -> dict:
    """The ``"render"`` dict a checkpoint holds (what ``fit`` stores), from a dataset's attributes."""
    with h5py.File(data, "r") as f:
        a = f.attrs
        return {"engine": str(a["engine"]), "engine_version": str(a["engine_version"]),
                "sample_rate": int(a["sample_rate"]), "notes": np.asarray(a["notes"]).tolist(),
                "hold": float(a["hold"]), "release": float(a["release"]),
                "mel_config": json.loads(a["mel_config"]), "fixed_params": json.loads(a["fixed_params"])}


def travel(run: Path, data: Path, dest: Path, recorded: str | None = "/nonexistent/elsewhere/dataset.h5",
           render: bool = True) -> Path:
    """Copy a run folder to ``dest``; record ``recorded`` as its dataset path and, with ``render``,
    add the checkpoint's ``"render"`` record (as ``fit`` writes it)."""
    shutil.copytree(run, dest)
    for name in ("best.pt", "last.pt"):
        ckpt = torch.load(dest / name, weights_only=True)
        if render:
            ckpt["render"] = render_record(data)
        else:
            ckpt.pop("render", None)
        if recorded is not None:
            ckpt["dataset"] = {**ckpt["dataset"], "path": recorded, "name": Path(recorded).name}
        torch.save(ckpt, dest / name)
    return dest


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    return build(tmp_path_factory.getbasetemp() / "fitted")


@pytest.fixture(scope="module")
def workdir(fitted, tmp_path_factory) -> Path:
    from dexed_data.importer import import_sysex
    from dexed_data.render import RenderConfig, render_dataset
    from dexed_data.voice import load_voice, render_voice

    base = tmp_path_factory.mktemp("api")
    import_sysex([REPO / "presets"], base / "presets.h5")
    render_dataset(base / "presets.h5", base / "dataset.h5", RenderConfig(notes=NOTES, hold=HOLD, release=RELEASE),
                   jobs=1, progress=False)
    (base / "presets").symlink_to(REPO / "presets")
    travel(fitted.flow6, fitted.data, base / "runs" / "paper")
    audio = render_voice(load_voice(REPO / "presets" / "toolkit_bank_a.syx:4"), [(60, 85)], HOLD, RELEASE)[0]
    sf.write(base / "piano_60-85.wav", audio, 22050)
    return base


# --- docstring examples, README and FORMAT.md examples -------------------------------------------

API_MODULES = ("dexed_data", "dexed_data.access", "dexed_data.voice", "dexed_data.torch_dataset",
               "dexed_data.schema", "preset_model", "preset_model.inference", "preset_model.encoding")


@pytest.mark.parametrize("name", API_MODULES)
def test_api_docstring_examples_run(name, workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    module = importlib.import_module(name)
    failures, tried = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
                                      verbose=False, report=True)
    assert failures == 0, f"{failures} of {tried} examples of {name} failed (output above)"
    if name not in ("preset_model",):
        assert tried > 0


def test_parse_ids_example():
    from dexed_data import ids

    finder = doctest.DocTestFinder()
    (test,) = finder.find(ids.parse_ids, "parse_ids", globs=vars(ids))
    assert doctest.DocTestRunner().run(test).failed == 0


def _python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), re.S)


@pytest.mark.parametrize("doc", ["README.md", "docs/FORMAT.md"])
def test_doc_python_examples_run_as_written(doc, workdir, monkeypatch, capsys):
    blocks = _python_blocks(REPO / doc)
    assert blocks, f"{doc} has no python example"
    monkeypatch.chdir(workdir)
    for code in blocks:
        exec(compile(code, doc, "exec"), {"__name__": "__doc_example__"})
    assert capsys.readouterr().out.strip()   # the examples print what they show


# --- dexed_data.open_dataset / render ------------------------------------------------------------


def test_open_dataset_presets_params_mel_and_exact_audio(workdir):
    import dexed_data
    from dexed_data.catalogue import read_catalogue
    from dexed_data.schema import VOICE_PARAMS

    with dexed_data.open_dataset(workdir / "dataset.h5") as ds:
        cat = read_catalogue(workdir / "presets.h5")
        assert [p.id for p in ds.presets] == cat.ids and len(ds.presets) == 64
        p = ds.presets[5]
        assert p.sources and p.sources[0].path.startswith("toolkit_bank_")
        params = ds.params(5)
        assert list(params) == [q.name for q in VOICE_PARAMS]
        assert [params[q.name] for q in VOICE_PARAMS] == ds.raw[5].tolist() and params["TRANSPOSE"] == 24
        audio = ds.audio(5)                       # not stored: re-rendered with the file's settings
        assert "audio" not in ds.file and audio.shape == (6, int((HOLD + RELEASE) * 22050))
        from dexed_data.storage import as_dtype
        from dexed_data.features import MelConfig, mel_db

        mel_again = as_dtype(mel_db(audio, MelConfig(**ds.info.header.mel_config)), np.float16).astype(np.float32)
        assert np.array_equal(mel_again, ds.mel(5))   # exactly the audio the stored spectrograms came from
        same = dexed_data.render(p, notes=ds.info.notes, hold=HOLD, release=RELEASE)
        assert np.array_equal(same, audio)


def test_mel_dataset_refuses_a_catalogue_and_an_interrupted_render(workdir, tmp_path):
    # MelDataset read an unfinished render's rows as full-scale spectrograms, and called a catalogue
    # a dataset rendered without --store mel (audit P)
    import shutil

    from dexed_data.errors import DatasetError
    from dexed_data.torch_dataset import MelDataset

    with pytest.raises(DatasetError, match="a catalogue of presets, not a rendered dataset"):
        MelDataset(workdir / "presets.h5", [0])
    partial = tmp_path / "partial.h5"
    shutil.copy(workdir / "dataset.h5", partial)
    with h5py.File(partial, "r+") as f:
        f.attrs["complete"] = False
    with pytest.raises(DatasetError, match="incomplete"):
        MelDataset(partial, [0])
    assert MelDataset(workdir / "dataset.h5", [0])[0][0].shape[0] == len(NOTES)


def test_torch_dataset_without_preset_model(workdir):
    import dexed_data
    from torch.utils.data import DataLoader

    with dexed_data.open_dataset(workdir / "dataset.h5") as ds:
        tds = ds.torch_dataset()
        assert len(tds) == len(ds.usable())
        mel, raw = next(iter(DataLoader(tds, batch_size=3, num_workers=0)))
        assert mel.shape[:2] == (3, 6) and float(mel.min()) >= -1 and float(mel.max()) <= 1
        assert raw.shape == (3, 145) and torch.equal(raw[0], torch.from_numpy(ds.raw[ds.usable()[0]].astype(np.int64)))
        db, _ = ds.torch_dataset(rows=[0], notes=[3], scale=False)[0]
        assert db.shape[0] == 1 and torch.equal(db[0], torch.from_numpy(ds.mel(0)[3]))
        from dexed_data.errors import DatasetError

        with pytest.raises(DatasetError, match=r"give indices of the file's 6 notes .*not \(pitch, velocity\) pairs"):
            ds.torch_dataset(notes=[(60, 85)])            # a raw TypeError from int() before


def test_a_torch_dataset_is_not_made_from_a_file_replaced_under_its_reader(workdir, tmp_path):
    # it served the new file's spectrograms with the old file's rows and bounds
    import os
    import shutil

    import dexed_data
    from dexed_data.errors import DatasetError

    path = tmp_path / "d.h5"
    shutil.copy(workdir / "dataset.h5", path)
    with dexed_data.open_dataset(path) as ds:
        assert len(ds.torch_dataset()) == len(ds.usable())
        shutil.copy(workdir / "dataset.h5", tmp_path / "new.h5")
        os.replace(tmp_path / "new.h5", path)                 # what a rerun of render into the same path does
        with pytest.raises(DatasetError, match="was replaced since it was opened"):
            ds.torch_dataset()


def test_render_a_syx_voice_or_catalogue_row_equals_the_dataset(workdir):
    import dexed_data
    from dexed_data.catalogue import read_catalogue
    from dexed_data.errors import DexedDataError

    cat = read_catalogue(workdir / "presets.h5")
    from_row = dexed_data.render(cat.raw[0], notes=[(60, 85)], hold=0.3, release=0.1)
    assert from_row.shape == (1, int(0.4 * 22050)) and from_row.dtype == np.float32
    a = dexed_data.render(str(REPO / "presets" / "toolkit_bank_b.syx") + ":3", notes=[(48, 100)], hold=0.3, release=0.1)
    assert np.abs(a).max() > 0
    with pytest.raises(DexedDataError, match="voice 40 does not exist"):
        dexed_data.render(str(REPO / "presets" / "toolkit_bank_b.syx") + ":40")
    # values that are not the DX7's bytes are refused, not cast (1.5 → 1, -1 → 255)
    for bad, why in ((cat.raw[0] - 1.0, "0 or more"), (cat.raw[0] + 0.5, "whole numbers"),
                     (np.where(np.arange(145) == 7, np.nan, cat.raw[0]), r"such as \[nan\]")):
        with pytest.raises(DexedDataError, match=why):
            dexed_data.render(bad, notes=[(60, 85)], hold=0.1, release=0.1)


# --- preset_model.load_run: runs that travel ------------------------------------------------------


def test_a_copied_run_matches_and_interpolates_without_its_dataset(fitted, tmp_path):
    import preset_model
    from preset_model.cli import app
    from preset_model.errors import CheckpointError

    run_dir = travel(fitted.flow6, fitted.data, tmp_path / "elsewhere" / "myrun")
    run = preset_model.load_run(run_dir)
    assert run.dataset is None and run.settings.notes == NOTES
    with pytest.raises(CheckpointError, match=r"--data PATH/dataset\.h5"):
        run.data                                   # evaluation says exactly what to pass
    wav = tmp_path / "clav_60-85.wav"
    sf.write(wav, dexed_data_render(fitted.bank, 3), 22050)
    result = run.match(wav)
    assert len(result.voices) == 1 and result.voices[0].render.shape == (6, int((HOLD + RELEASE) * 22050))
    array_result = run.match(sf.read(wav, dtype="float32")[0], note=(60, 85))
    assert np.array_equal(array_result.voices[0].raw, result.voices[0].raw)
    morph = run.interpolate(f"{fitted.bank}:1", f"{fitted.bank}:5", steps=3)
    assert morph.raw.shape == (3, 145) and morph.endpoint_errors == (0, 0)

    out = tmp_path / "m.syx"
    res = CliRunner().invoke(app, ["match", str(run_dir), str(wav), "-o", str(out)])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, ["interpolate", str(run_dir), f"{fitted.bank}:1", f"{fitted.bank}:5",
                                   "--steps", "3", "-o", str(tmp_path / "i.syx")])
    assert res.exit_code == 0, res.output
    assert "all but" not in res.output and "the first voice reproduces" in res.output

    # a voice an octave up (TRANSPOSE 36): the bank's voices all have the model's 24, and it says so
    from dexed_data.schema import TRANSPOSE_OFFSET
    from preset_model.interpolate import read_voice
    from preset_model.match import write_syx

    up = read_voice(f"{fitted.bank}:1")
    raw = up.raw.copy()
    raw[TRANSPOSE_OFFSET] = 36
    write_syx(tmp_path / "up.syx", raw[None], [up.name])
    res = CliRunner().invoke(app, ["interpolate", str(run_dir), str(tmp_path / "up.syx"), f"{fitted.bank}:5",
                                   "--steps", "3", "-o", str(tmp_path / "j.syx")])
    assert res.exit_code == 0, res.output
    first = res.output.splitlines()[1]
    assert "learnable parameters" in first, res.output        # never "reproduces up.syx exactly"
    assert "TRANSPOSE is 24" in res.output and "has 36: it plays 12 semitones lower" in res.output, res.output

    # a voice repaired when read (OP6 OUTPUT LEVEL 127, clamped to 99): said, and "exactly" only as read
    from dexed_data.sysex import checksum

    bank = bytearray(fitted.bank.read_bytes())
    bank[6 + 14] = 127                                   # voice 1, OP6's packed OUTPUT LEVEL
    bank[-2] = checksum(bytes(bank[6:-2]))
    (tmp_path / "hot.syx").write_bytes(bytes(bank))
    res = CliRunner().invoke(app, ["interpolate", str(run_dir), f"{tmp_path / 'hot.syx'}:1", f"{fitted.bank}:5",
                                   "--steps", "3", "-o", str(tmp_path / "k.syx")])
    assert res.exit_code == 0, res.output
    assert "OP6 OUTPUT LEVEL = 127 is above its maximum 99; clamped to 99" in res.output
    assert f"reproduces {tmp_path / 'hot.syx'}:1 exactly" not in res.output
    assert "as read (see the notes above)" in res.output


def dexed_data_render(bank: Path, n: int) -> np.ndarray:
    import dexed_data

    return dexed_data.render(f"{bank}:{n}", notes=[(60, 85)], hold=HOLD, release=RELEASE)[0]


def test_evaluate_finds_a_moved_dataset_beside_the_run_or_says_what_to_pass(fitted, tmp_path, monkeypatch):
    from preset_model.errors import CheckpointError
    from preset_model.inference import load_run

    monkeypatch.chdir(tmp_path)   # a relative recorded path is tried from here: not the user's own dataset.h5

    moved = tmp_path / "project"
    travel(fitted.flow6, fitted.data, moved / "runs" / "paper", recorded=str(fitted.data.parent / "gone.h5"))
    shutil.copy(fitted.data, moved / "runs" / "gone.h5")             # beside the run folder, same name
    assert load_run(moved / "runs" / "paper").data == moved / "runs" / "gone.h5"
    (moved / "runs" / "gone.h5").unlink()
    with pytest.raises(CheckpointError, match=r"pass it with --data PATH/gone\.h5"):
        load_run(moved / "runs" / "paper").data
    from preset_model.cli import app

    res = CliRunner().invoke(app, ["evaluate", str(moved / "runs" / "paper"), "--limit", "1"])
    assert res.exit_code == 2 and "--data PATH/gone.h5" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(app, ["evaluate", str(moved / "runs" / "paper"), "--limit", "2", "--data",
                                   str(fitted.data), "-o", str(tmp_path / "ev")])
    assert res.exit_code == 0, res.output
    # an older checkpoint (no render record) needs its dataset even to match, and says so
    old = travel(fitted.flow6, fitted.data, tmp_path / "old", recorded="dataset.h5", render=False)
    with pytest.raises(CheckpointError, match=r"older version.*--data"):
        load_run(old)
    assert load_run(old, data=fitted.data).data == fitted.data


def test_decode_targets_of_every_encoding(fitted):
    import preset_model
    from preset_model.data import make_datasets

    raw = np.stack([v for v in h5py.File(fitted.data, "r")["presets/raw"][:4]])
    for enc in ("num", "numcat", "numcat++"):
        train, _, _, _ = make_datasets(fitted.data, enc, 6)
        _, target, _ = train[0]
        decoded = preset_model.decode_targets(target)
        row = train.rows[0]
        assert np.array_equal(decoded, h5py.File(fitted.data, "r")["presets/raw"][row])
    run = preset_model.load_run(fitted.flow6)
    assert np.array_equal(run.decode(run.encoding.encode(raw)), raw)
    with pytest.raises(preset_model.inference.PresetModelError, match="144, 224, 610"):
        run.decode(np.zeros(100))


# --- match: notes in file names on 1-note models, much quieter re-renders ------------------------


def test_one_note_model_honours_the_note_in_the_file_name(fitted, tmp_path):
    import dexed_data
    from preset_model.cli import app
    from preset_model.match import match_files

    wav = tmp_path / "GANJA_BASS_40-85.wav"
    sf.write(wav, dexed_data.render(f"{fitted.bank}:2", notes=[(40, 85)], hold=HOLD, release=RELEASE)[0], 22050)
    (voice,) = match_files(fitted.mlp1, [wav]).voices
    (score,) = voice.scores
    assert score.note == (40, 85) and score.shift_semitones == 20
    assert voice.name.strip() == "GANJA_BASS"
    res = CliRunner().invoke(app, ["match", str(fitted.mlp1), str(wav), "-o", str(tmp_path / "g.syx"),
                                   "--wav", str(tmp_path / "re")])
    assert res.exit_code == 0, res.output
    assert "note 40:85 from its name, pitch-shifted +20 semitones to the model's note 60:85" in res.output
    assert (tmp_path / "re" / "GANJA_BASS_40-85.rerender.wav").is_file()


def test_match_warns_when_the_rerender_is_much_quieter(fitted, tmp_path):
    from preset_model.cli import app

    wav = tmp_path / "loud.wav"
    sf.write(wav, dexed_data_render(fitted.bank, 2), 22050)
    res = CliRunner().invoke(app, ["match", str(fitted.mlp1), str(wav), "-o", str(tmp_path / "l.syx"),
                                   "--gain-db", "80"])
    assert res.exit_code == 0, res.output
    assert re.search(r"warning: the re-render of .*loud\.wav is (\d+\.\d dB quieter than the input|silent)",
                     res.output)
    assert "try --gain-db auto" in res.output        # the input peaks far above a voice's level: the hint fits


# --- CLI: --version, list, --ids --------------------------------------------------------------------


def test_version_on_both_commands():
    import dexed_data
    import preset_model
    from dexed_data.cli import app as data_app
    from preset_model.cli import app as model_app

    assert CliRunner().invoke(data_app, ["--version"]).output.strip() == f"dexed-data {dexed_data.__version__}"
    assert CliRunner().invoke(model_app, ["--version"]).output.strip() == f"preset-model {preset_model.__version__}"


def test_list_catalogue_and_dataset_and_ids_everywhere(workdir, tmp_path):
    from dexed_data.catalogue import read_catalogue
    from dexed_data.cli import app

    cat = read_catalogue(workdir / "presets.h5")
    for f in ("presets.h5", "dataset.h5"):
        res = CliRunner().invoke(app, ["list", str(workdir / f)])
        assert res.exit_code == 0, res.output
        lines = [line for line in res.stdout.splitlines() if line.strip()]
        assert len(lines) == 64 and lines[0].split()[1] == cat.ids[0]
        assert "toolkit_bank_" in lines[0]
    name = cat.names[7].strip()
    res = CliRunner().invoke(app, ["list", str(workdir / "presets.h5"), "--name", name.lower(), "--limit", "1"])
    assert res.exit_code == 0 and name in res.stdout and len(res.stdout.strip().splitlines()) == 1

    ids = ",".join(cat.ids[:2])
    assert CliRunner().invoke(app, ["export", str(workdir / "presets.h5"), "--ids", ids, "-o",
                                    str(tmp_path / "x.syx")]).exit_code == 0
    out = tmp_path / "two.h5"
    res = CliRunner().invoke(app, ["render", str(workdir / "presets.h5"), "-o", str(out), "--ids", ids,
                                   "--notes", "60:85", "--hold", "0.1", "--release", "0", "--no-progress",
                                   "--no-operators"])
    assert res.exit_code == 0, res.output
    with h5py.File(out, "r") as f:
        assert sorted(x.decode() for x in f["presets/id"][:]) == sorted(cat.ids[:2])
    res = CliRunner().invoke(app, ["render", str(workdir / "presets.h5"), "-o", str(tmp_path / "y.h5"),
                                   "--ids", "nosuchfile.txt"])
    assert res.exit_code == 2 and "no such file, and 'nosuchfile.txt' is not a preset id" in res.output


def test_a_researchers_mistakes_get_the_toolkits_errors_not_wrong_results(workdir, fitted, tmp_path):
    import pickle
    import shutil
    import threading

    import dexed_data
    from dexed_data.errors import DatasetError, DexedDataError
    from preset_model.errors import PresetModelError
    from preset_model.inference import load_run

    data = tmp_path / "d.h5"
    shutil.copy(workdir / "dataset.h5", data)
    ds = dexed_data.open_dataset(data)
    # two threads re-rendering (no audio stored) get exactly the single-thread audio
    ref = {i: ds.audio(i) for i in range(4)}
    wrong = []

    def work():
        for i in range(4):
            if not np.array_equal(ds.audio(i), ref[i]):
                wrong.append(i)

    threads = [threading.Thread(target=work) for _ in range(2)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert wrong == []
    # rows are whole numbers in range; values are never wrapped or truncated
    for row, why in ((len(ds), "out of range"), (1.7, "a row is a whole number"), ("3", "a row is a whole number")):
        with pytest.raises(DatasetError, match=why):
            ds.mel(row)
    raw = ds.raw[0].astype(np.int64)
    raw[134] = 256 + 5                                     # ALGORITHM 261 would wrap to 5
    with pytest.raises(DexedDataError, match="ALGORITHM=261"):
        dexed_data.render(raw, notes=[(60, 85)], hold=0.1, release=0.1)
    with pytest.raises(DexedDataError, match="whole numbers"):
        dexed_data.render(ds.raw[0], notes=[(60.7, 85)], hold=0.1, release=0.1)
    run = load_run(fitted.flow6)
    with pytest.raises(PresetModelError, match="ALGORITHM=261"):
        run.interpolate(raw, ds.raw[1], steps=3)
    assert run.interpolate(ds.presets[0], ds.presets[1], steps=3).raw.shape == (3, 145)   # objects with .raw
    x = ds.audio(0)[3]
    for kwargs, why in ((dict(sample_rate=0), "sample_rate 0"), (dict(note=(60.4, 85)), "whole numbers")):
        with pytest.raises(PresetModelError, match=why):
            run.match(x, **kwargs)
    with pytest.raises(PresetModelError, match="int16"):
        run.match((x * 32767).astype(np.int16))
    # said of the array, not of the temporary file it went through (named, then gone)
    nan = x.copy()
    nan[5] = np.nan
    for odd, why in ((np.zeros(0, np.float32), "audio array: empty"), (nan, "NaN or infinite samples .*sample 5"),
                     (np.stack([x, x]), r"looks like stereo: mix it to mono first \(x.mean\(axis=0\)\)"),
                     (x * 1e6, r"audio array \(60:85\): its samples reach .* gain_db=")):
        with pytest.raises(PresetModelError, match=why) as err:
            run.match(odd)
        assert "AUDIO_" not in str(err.value) and "/tmp" not in str(err.value) and "--gain-db" not in str(err.value)
    matched = run.match(x)
    assert matched.voices[0].files == ["audio array (60:85)"] and matched.voices[0].scores[0].file == "audio array (60:85)"
    with pytest.raises(PresetModelError, match=r"^gain_db=loud: must be 'auto'"):   # it said "gain_db= loud"
        run.match(x, gain_db="loud")
    # audit Y6: a failed row's spectrogram (NaN in /mel) became an all-zero voice, silently; a batch
    # size of -1 gave no presets for one spectrogram
    db = np.stack([ds.mel(0)[list(run.note_index)]] * 3)
    assert run.infer_db(db, batch_size=2).shape == (3, 145)
    db[1, 0, 3, 4] = np.nan
    with pytest.raises(PresetModelError, match=r"spectrogram 1 \(of 3\) holds NaN .*/status is not 0"):
        run.infer_db(db)
    for size in (-1, 0, 2.5, True):
        with pytest.raises(PresetModelError, match="batch_size=.*must be an integer ≥ 1"):
            run.infer_db(db[:1], batch_size=size)
    # wrong types: the toolkit's errors naming the argument, not pathlib's or numpy's
    from dexed_data.errors import RenderError
    from preset_model.encoding import decode_targets
    from preset_model.errors import CheckpointError

    for rate in ("44100", None, 22050.9):
        with pytest.raises(RenderError, match=f"sample_rate {rate!r}: give a whole number"):
            dexed_data.render(ds.raw[0], notes=[(60, 85)], hold=0.1, release=0.1, sample_rate=rate)
    for steps in (3.0, "4", None):
        with pytest.raises(PresetModelError, match="--steps must be a whole number"):
            run.interpolate(ds.raw[0], ds.raw[1], steps=steps)
    for call, why in ((lambda: load_run(123), "run 123: give the path"),
                      (lambda: load_run(fitted.flow6, checkpoint=None), "checkpoint None"),
                      (lambda: dexed_data.open_dataset(123), "123: give the path of a dataset file"),
                      (lambda: decode_targets("abc"), "got a str"),
                      (lambda: decode_targets(np.zeros(144, complex)), "got an array of complex128")):
        with pytest.raises((CheckpointError, DatasetError, PresetModelError), match=why):
            call()
    # a reader cannot be pickled (say so), and once closed says so
    with pytest.raises(DatasetError, match="cannot be pickled"):
        pickle.dumps(ds)
    td = ds.torch_dataset()
    ds.close()
    with pytest.raises(DatasetError, match="was closed"):
        ds.mel(0)
    # a torch dataset whose file was replaced refuses to mix the old raw values with new spectrograms
    shutil.copy(fitted.data, tmp_path / "other.h5")
    (tmp_path / "other.h5").replace(data)
    with pytest.raises(DatasetError, match="was replaced or removed since this dataset was made"):
        td[0]
