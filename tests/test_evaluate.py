"""Evaluation: metric definitions, baselines, and `preset-model evaluate` on a tiny fitted run."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from dexed_data.schema import VOICE_MAX, apply_fixed
from preset_model.baselines import NearestNeighbour, mean_preset, pool_factor, spectrogram_features
from preset_model.cli import app
from preset_model.evaluate import evaluate, split_rows
from preset_model.inference import load_run
from preset_model.metrics import (AUDIO_METRICS, CATEGORICAL, NUMERICAL, audio_metrics, parameter_metrics,
                                  pitch_offset_cents)
from run_fixtures import build

SR = 22050


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    return build(tmp_path_factory.getbasetemp() / "fitted")


def _tone(freq: float, seconds: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * freq * t) + 0.1 * np.sin(2 * np.pi * 3 * freq * t)).astype(np.float32)


def test_audio_metrics_are_zero_for_identical_audio_and_positive_otherwise():
    x = np.stack([_tone(220), _tone(330)])
    assert audio_metrics(x, x.copy(), SR) == {k: 0.0 for k in AUDIO_METRICS}
    y = np.stack([_tone(233), _tone(330) * 0.5])
    m = audio_metrics(x, y, SR)
    assert all(m[k] > 0 for k in AUDIO_METRICS)
    assert 0 < m["spectral_convergence"] < 2


def test_parameter_metrics_count_quantized_steps():
    rng = np.random.default_rng(1)
    raw = apply_fixed(rng.integers(0, VOICE_MAX.astype(int) + 1, size=(5, 145))).astype(np.uint8)
    same = parameter_metrics(raw, raw)
    assert same["num_mae"] == 0.0 and same["cat_accuracy"] == 1.0
    assert len(same["per_param"]) == len(NUMERICAL) + len(CATEGORICAL) == 144
    name, off, mx = NUMERICAL[0]
    other = raw.copy()
    other[:, off] = np.where(raw[:, off] > 0, raw[:, off] - 1, 1)      # one step off on every preset
    cname, coff, cmax = CATEGORICAL[0]
    other[0, coff] = (raw[0, coff] + 1) % (cmax + 1)                   # one wrong category on one preset
    m = parameter_metrics(raw, other)
    assert m["per_param"][name]["mae"] == pytest.approx(1 / mx)
    assert m["num_mae"] == pytest.approx(1 / mx / len(NUMERICAL))
    assert m["per_param"][cname]["accuracy"] == pytest.approx(0.8)


def test_pitch_offset_in_cents():
    a = _tone(440.0, 1.0)
    assert pitch_offset_cents(a, a, SR) == pytest.approx(0.0, abs=0.5)
    assert pitch_offset_cents(a, _tone(440.0 * 2 ** (25 / 1200), 1.0), SR) == pytest.approx(25.0, abs=3.0)
    assert pitch_offset_cents(a, _tone(440.0 * 2 ** (-40 / 1200), 1.0), SR) == pytest.approx(-40.0, abs=3.0)
    assert np.isnan(pitch_offset_cents(a, np.zeros_like(a), SR))


def test_mean_preset_takes_mean_of_numbers_and_mode_of_categories():
    raw = np.zeros((3, 145), np.uint8)
    _, off, _ = NUMERICAL[0]
    _, coff, _ = CATEGORICAL[0]
    raw[:, off] = [10, 20, 60]        # mean 30
    raw[:, coff] = [1, 2, 2]          # mode 2
    m = mean_preset(raw)
    assert m[off] == 30 and m[coff] == 2 and m.shape == (145,)
    assert (m <= VOICE_MAX).all()
    med = mean_preset(raw, "median")  # median 20: the constant with the least absolute error
    assert med[off] == 20 and med[coff] == 2
    with pytest.raises(ValueError, match="median"):
        mean_preset(raw, "mode")


def test_pool_factor_keeps_index_under_budget():
    assert pool_factor(10, (6, 64, 87)) == 1
    p = pool_factor(30000, (6, 257, 345), budget=1 << 30)
    assert p > 1 and 30000 * 6 * (257 // p) * (345 // p) * 4 <= 1 << 30


def test_knn_on_training_presets_returns_themselves(fitted):
    run = load_run(fitted.flow6)
    _, train = split_rows(run, fitted.data, "test")
    feats = spectrogram_features(fitted.data, train, run.note_index, run.mel_bounds)
    assert feats.shape == (len(train), 6 * run.model.cfg.n_mels * run.model.cfg.frames)
    nearest = NearestNeighbour(feats).query(feats)
    # presets that sound identical on these notes may answer each other; their features are then equal
    assert np.array_equal(feats[nearest], feats)
    assert (nearest == np.arange(len(train))).mean() > 0.9


def test_knn_never_sees_the_evaluated_split(fitted):
    """Every kNN answer is a training preset; a test preset never retrieves itself or another test preset."""
    import h5py

    from preset_model.evaluate import predict

    run = load_run(fitted.flow6)
    rows, train_rows = split_rows(run, fitted.data, "test")
    assert len(rows) and not set(rows.tolist()) & set(train_rows.tolist())
    with h5py.File(fitted.data) as h5:
        raw = h5["presets/raw"][:]
    pred = predict(run, fitted.data, rows, train_rows, "knn")
    train_set = {r.tobytes() for r in raw[train_rows]}
    held_out = {raw[r].tobytes() for r in rows} - train_set
    assert all(p.tobytes() in train_set for p in pred)
    assert not {p.tobytes() for p in pred} & held_out


def test_spectral_convergence_is_bounded_for_silent_reference_notes():
    """Over all notes together: a near-silent reference note cannot blow it up; an all-silent reference is NaN."""
    loud, quiet = _tone(220), _tone(330) * 1e-5                      # −100 dB note beside a loud one
    ref = np.stack([loud, quiet])
    est = np.stack([loud, _tone(330) * 0.3])                          # the quiet note rendered loud
    per_note = np.linalg.norm(np.abs(np.fft.rfft(ref[1])) - np.abs(np.fft.rfft(est[1]))) / \
        np.linalg.norm(np.abs(np.fft.rfft(ref[1])))
    assert per_note > 1000                                            # what the old per-note mean was driven by
    sc = audio_metrics(ref, est, SR)["spectral_convergence"]
    assert 0 < sc < 2
    assert audio_metrics(ref, np.zeros_like(ref), SR)["spectral_convergence"] == pytest.approx(1.0)
    assert np.isnan(audio_metrics(np.zeros_like(ref), est, SR)["spectral_convergence"])


def test_evaluate_reports_model_and_baselines(fitted):
    rep = evaluate(fitted.flow6, limit=4, jobs=1)
    assert rep["method"] == "model" and rep["presets"] == 4 and rep["split"] == "test"
    assert set(rep["audio"]) == set(AUDIO_METRICS)
    assert all(len(rep["per_preset"][k]) == 4 for k in AUDIO_METRICS)
    assert all(np.isfinite(v["mean"]) for v in rep["audio"].values())
    assert 0 <= rep["params"]["cat_accuracy"] <= 1
    # knn on the training split finds each preset itself: everything is exactly perfect
    knn = evaluate(fitted.flow6, split="train", baseline="knn", limit=3, jobs=1)
    assert knn["params"] == {"num_mae": 0.0, "cat_accuracy": 1.0}
    assert all(v["mean"] == 0.0 for v in knn["audio"].values())
    assert knn["near_copies"]["within_1"] == 1.0          # training presets are their own nearest copies
    mean = evaluate(fitted.mlp1, baseline="mean", limit=2, jobs=1)
    median = evaluate(fitted.mlp1, baseline="median", limit=2, jobs=1)
    assert median["method"] == "median" and median["presets"] == mean["presets"] == 2
    # a baseline's report names the run's split and input notes, not the model's encoding or head
    assert mean["method"] == "mean" and mean["model"] is None and mean["input_notes"] == [[60, 85]]


def test_cli_evaluate_writes_json_and_markdown(fitted, tmp_path):
    out = tmp_path / "report"
    res = CliRunner().invoke(app, ["evaluate", str(fitted.mlp1), "--limit", "2", "--baseline", "knn", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "0 by construction" not in res.output
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["method"] == "knn" and report["presets"] == 2
    res = CliRunner().invoke(app, ["evaluate", str(fitted.mlp1), "--limit", "2", "--baseline", "knn", "--split", "train",
                                   "-o", str(tmp_path / "train")])
    assert res.exit_code == 0 and "finds each preset itself, so its scores are 0 by construction" in res.output
    assert "0 by construction" in (tmp_path / "train.md").read_text()
    assert "| numerical parameter MAE" in (tmp_path / "report.md").read_text()
    assert "num MAE" in res.output


def test_a_checkpoint_given_as_run_is_the_one_the_report_names(fitted, tmp_path):
    # audit W: `evaluate RUN/last.pt` reported "checkpoint": "best.pt", and `RUN/best.pt --checkpoint
    # last.pt` scored best.pt under the name last.pt
    out = tmp_path / "r"
    res = CliRunner().invoke(app, ["evaluate", str(fitted.mlp1 / "last.pt"), "--limit", "1", "--baseline", "mean",
                                   "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "r.json").read_text())["checkpoint"] == "last.pt"
    assert "checkpoint last.pt" in (tmp_path / "r.md").read_text()
    res = CliRunner().invoke(app, ["evaluate", str(fitted.mlp1 / "best.pt"), "--checkpoint", "last.pt", "--limit", "1",
                                   "-o", str(tmp_path / "s")])
    assert res.exit_code == 2 and "is a checkpoint file" in res.output and not (tmp_path / "s.json").exists()
    # audit Y9: last.pt's report took best.pt's default name (refused, or with --force replaced it)
    import shutil

    run = tmp_path / "run"
    shutil.copytree(fitted.mlp1, run)
    for extra in ([], ["--checkpoint", "last.pt"]):
        res = CliRunner().invoke(app, ["evaluate", str(run), "--limit", "1", "--baseline", "mean", *extra])
        assert res.exit_code == 0, res.output
    assert (run / "eval-test-mean.json").exists() and (run / "eval-test-last-mean.json").exists()
    assert json.loads((run / "eval-test-last-mean.json").read_text())["checkpoint"] == "last.pt"
    shutil.copy(run / "last.pt", run / "epoch2.pt")                      # R4: any other checkpoint file too
    res = CliRunner().invoke(app, ["evaluate", str(run / "epoch2.pt"), "--limit", "1", "--baseline", "mean"])
    assert res.exit_code == 0 and (run / "eval-test-epoch2-mean.json").exists(), res.output


def test_evaluate_says_when_the_data_lacks_part_of_the_runs_split(fitted, tmp_path):
    from dexed_data.render import RenderConfig, render_dataset
    from run_fixtures import HOLD, NOTES, RELEASE

    import h5py

    with h5py.File(fitted.data) as f:
        ids = [x.decode() for x in f["presets/id"][:]]
    (tmp_path / "half.txt").write_text("\n".join(ids[::2]) + "\n")      # every other preset, same settings
    half = tmp_path / "half.h5"
    render_dataset(fitted.data.parent / "presets.h5", half, RenderConfig(notes=NOTES, hold=HOLD, release=RELEASE),
                   jobs=1, progress=False, ids_file=tmp_path / "half.txt")
    full = evaluate(fitted.flow6, limit=2, jobs=1)
    assert full["coverage"]["split"][0] == full["coverage"]["split"][1]
    res = CliRunner().invoke(app, ["evaluate", str(fitted.flow6), "--data", str(half), "--limit", "2", "-o",
                                   str(tmp_path / "e")])
    assert res.exit_code == 0, res.output
    have, n = json.loads((tmp_path / "e.json").read_text())["coverage"]["split"]
    assert have < n
    assert f"lacks {n - have} of the {n} presets of the run's test split" in res.output
    assert "not comparable" in (tmp_path / "e.md").read_text()


def test_a_dataset_replaced_while_evaluate_reads_it_is_refused_not_mixed(fitted, tmp_path, monkeypatch):
    """Audit A1: evaluate opens the dataset three times; one replaced in between (merge --force) gave a
    report of one file's predictions scored against the other's presets, exit 0, or a traceback."""
    import os
    import shutil

    import preset_model.evaluate as ev
    from preset_model.errors import DataError

    data = tmp_path / "d.h5"
    shutil.copy(fitted.data, data)
    real = ev.predict

    def then_replaced(*args, **kwargs):
        out = real(*args, **kwargs)
        shutil.copy(fitted.data, tmp_path / "new.h5")
        os.replace(tmp_path / "new.h5", data)   # another command's publish
        return out

    monkeypatch.setattr(ev, "predict", then_replaced)
    with pytest.raises(DataError, match="d.h5 was replaced or changed while this evaluation read it"):
        evaluate(fitted.flow6, data, limit=2, jobs=1)
    monkeypatch.setattr(ev, "predict", real)
    assert evaluate(fitted.flow6, data, limit=2, jobs=1)["presets"] == 2   # left alone, it is read as it is


def test_a_baseline_on_data_without_the_runs_training_presets_is_refused_in_one_line(fitted, tmp_path):
    # the kNN index over no preset multiplied by a 0 x 0 matrix, and the mean preset of none indexed
    # an empty array: tracebacks, where the model's own evaluation on the same data answered
    import torch
    from dexed_data.render import RenderConfig, render_dataset
    from run_fixtures import HOLD, NOTES, RELEASE

    test = torch.load(fitted.flow6 / "best.pt", weights_only=False)["split"]["test"]
    (tmp_path / "test.txt").write_text("\n".join(test[:2]) + "\n")
    only_test = tmp_path / "t.h5"
    render_dataset(fitted.data.parent / "presets.h5", only_test, RenderConfig(notes=NOTES, hold=HOLD, release=RELEASE),
                   jobs=1, progress=False, ids_file=tmp_path / "test.txt")
    for baseline in ("knn", "mean", "median"):
        res = CliRunner().invoke(app, ["evaluate", str(fitted.flow6), "--data", str(only_test), "--baseline", baseline,
                                       "-o", str(tmp_path / baseline)])
        assert res.exit_code == 2, res.output
        assert "none of the run's" in res.output and f"the {baseline} baseline" in res.output, res.output
    assert not list(tmp_path.glob("knn*")) and not list(tmp_path.glob("mean*"))


def test_an_empty_split_is_named_with_the_splits_to_use_instead(fitted, tmp_path):
    import shutil

    import torch

    run = tmp_path / "run"
    shutil.copytree(fitted.flow6, run)
    for name in ("best.pt", "last.pt"):                 # a run whose dataset was too small for a test split
        ckpt = torch.load(run / name, weights_only=False)
        ckpt["split"]["valid"] += ckpt["split"]["test"]
        ckpt["split"]["test"] = []
        torch.save(ckpt, run / name)
    res = CliRunner().invoke(app, ["evaluate", str(run), "-o", str(tmp_path / "e")])
    assert res.exit_code == 2
    assert "the run's test split is empty" in res.output and "use --split valid (" in res.output


def test_evaluate_shows_its_progress_unless_told_not_to(fitted, tmp_path, capsys):
    from preset_model.evaluate import score_audio

    loaded = load_run(fitted.mlp1)
    import h5py

    with h5py.File(loaded.data) as f:
        raw = f["presets/raw"][:3]
    score_audio(raw, raw, loaded.settings, progress=True)
    err = capsys.readouterr().err
    assert "re-render" in err and "3/3" in err and "\r" not in err      # plain lines in a log, never a redrawn bar
    score_audio(raw, raw, loaded.settings, progress=False)
    assert capsys.readouterr().err == ""
    res = CliRunner().invoke(app, ["evaluate", str(fitted.mlp1), "--limit", "2", "--baseline", "mean", "--no-progress",
                                   "-o", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize("mel", [[["hop", 512]], "abc", 3])
def test_a_checkpoints_mel_settings_that_are_not_an_object_are_refused(mel):
    # a list of pairs was read as "no settings" (the default hop) instead of refused (audit Z15)
    from preset_model.checkpoint import CheckpointError
    from preset_model.inference import settings_from_checkpoint

    render = {"engine": "dexed", "sample_rate": 22050, "notes": [[60, 85]], "hold": 3.0, "release": 1.0,
              "mel_config": {"hop": 512}}
    assert settings_from_checkpoint(render).mel.hop == 512
    with pytest.raises(CheckpointError, match="incomplete"):
        settings_from_checkpoint({**render, "mel_config": mel})


def test_a_dataset_on_other_notes_is_refused_with_a_true_reason(fitted, tmp_path):
    # the 1-note run was said to be "trained on" all six notes of its dataset (audit Z16)
    from dexed_data.render import RenderConfig, render_dataset
    from run_fixtures import HOLD, NOTES, RELEASE

    one = tmp_path / "one.h5"
    render_dataset(fitted.data.parent / "presets.h5", one, RenderConfig(notes=NOTES[3:4], hold=HOLD, release=RELEASE),
                   jobs=1, progress=False, limit=4)
    res = CliRunner().invoke(app, ["evaluate", str(fitted.mlp1), "--data", str(one), "-o", str(tmp_path / "e")])
    assert res.exit_code == 2, res.output
    shown = ", ".join(f"{p}:{v}" for p, v in NOTES)
    assert (f"rendered on notes {NOTES[3][0]}:{NOTES[3][1]}, but the run's dataset on {shown} (the notes its presets "
            "are re-rendered and scored on, whichever of them the model reads)") in res.output, res.output
