"""``preset-model evaluate``: parameter and audio metrics of a run (or a baseline) on a dataset split.

For each preset of the split (the run's saved split, ``test`` by default):

1. infer a preset: the model from the stored spectrograms of its input notes, or a baseline
   (``knn``: the nearest training preset by those spectrograms; ``mean`` / ``median``: the mean/mode or median/mode preset);
2. parameter metrics against the true raw values (:func:`preset_model.metrics.parameter_metrics`);
3. re-render the true and the inferred preset with the dataset's engine, notes and note length
   (in ``jobs`` worker processes) and compare them (:func:`preset_model.metrics.audio_metrics`).
   Both are rendered here, so a perfect preset scores exactly 0 whatever the stored audio's dtype.

Audio metrics use every note the dataset was rendered on (also for 1-note models), so models
with different inputs are compared on the same sounds.

Example::

    >>> from preset_model.evaluate import evaluate, write_report
    >>> report = evaluate("runs/small", jobs=2)                       # doctest: +SKIP
    >>> write_report(report, "runs/small/eval-test")                  # doctest: +SKIP
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from .baselines import BASELINES, NearestNeighbour, mean_preset, pool_factor, spectrogram_features
from .data import SpectrogramDataset, Split, read_usable
from .errors import DataError, PresetModelError
from .inference import RenderSettings, Run, load_run
from .metrics import AUDIO_METRICS, audio_metrics, parameter_metrics

SPLITS = ("test", "valid", "train")
_ENGINES: dict = {}


def split_rows(run: Run, data: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``data`` in the run's ``split`` and in its training set, both ascending."""
    if split not in SPLITS:
        raise PresetModelError(f"--split must be one of {', '.join(SPLITS)}, got {split!r}")
    s = Split.from_dict(run.checkpoint["split"])
    # the run's split says which presets it holds: a run fitted with --keep-duplicates has
    # duplicates by sound in it, and they are scored (and serve the baselines) as it trained on them
    ids, usable, _ = read_usable(data, keep_duplicates=True, keys=False)
    row_of = {ids[r]: r for r in usable}

    def rows(subset):
        found = sorted(row_of[i] for i in subset if i in row_of)
        return np.asarray(found, np.int64)

    want, train = rows(getattr(s, split)), rows(s.train)
    if not getattr(s, split):
        others = [f"--split {k} ({len(getattr(s, k))} presets)" for k in SPLITS if k != split and getattr(s, k)]
        raise DataError(f"the run's {split} split is empty: its dataset had too few presets (train {len(s.train)}, "
                        f"valid {len(s.valid)}, test {len(s.test)}); use " + " or ".join(others))
    if len(want) == 0:
        raise DataError(f"{data}: none of the {len(getattr(s, split))} presets of the run's {split} split are usable "
                        f"rows of this dataset; evaluate on the dataset the run was trained on")
    return want, train


def split_coverage(run: Run, split: str, rows: np.ndarray, train_rows: np.ndarray) -> dict[str, list[int]]:
    """``{"split": [in the data, in the run's split], "train": [...]}``: how much of the run's
    split and training set the evaluated dataset holds (less than all: another or a partial
    dataset, whose scores are not the run's)."""
    s = Split.from_dict(run.checkpoint["split"])
    return {"split": [int(len(rows)), len(getattr(s, split))], "train": [int(len(train_rows)), len(s.train)]}


def predict(run: Run, data: Path, rows: np.ndarray, train_rows: np.ndarray, baseline: str | None = None,
            batch_size: int = 64) -> np.ndarray:
    """Inferred raw presets ``(len(rows), 145)`` for dataset ``rows``: the model's or a baseline's."""
    import h5py

    with h5py.File(data, "r") as h5:
        raw_all = h5["presets/raw"][:]
    if baseline in BASELINES and len(train_rows) == 0:
        raise DataError(f"{data}: holds none of the run's {len(Split.from_dict(run.checkpoint['split']).train)} "
                        f"training presets, from which the {baseline} baseline is made; evaluate it on the dataset "
                        f"the run was trained on")
    if baseline in ("mean", "median"):
        return np.tile(mean_preset(raw_all[train_rows], baseline), (len(rows), 1))
    if baseline == "knn":
        shape = (len(run.note_index), run.model.cfg.n_mels, run.model.cfg.frames)
        pool = pool_factor(len(train_rows), shape)
        index = NearestNeighbour(spectrogram_features(data, train_rows, run.note_index, run.mel_bounds, pool))
        nearest = index.query(spectrogram_features(data, rows, run.note_index, run.mel_bounds, pool))
        return raw_all[train_rows[nearest]]
    if baseline is not None:
        raise PresetModelError(f"--baseline must be one of {', '.join(BASELINES)}, got {baseline!r}")
    ds = SpectrogramDataset(data, rows, run.model.cfg.encoding, run.note_index, run.mel_bounds)
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=0)
    return np.concatenate([run.model.infer(mel) for mel, _, _ in loader])


def _score(pairs: list[tuple[np.ndarray, np.ndarray]], settings: RenderSettings) -> list[dict[str, float]]:
    """Worker: render each (true, inferred) pair on the dataset's notes and compare."""
    from dexed_data.features import silent_notes

    from .inference import ScoringEngine

    engine = _ENGINES.get(settings.engine_spec)
    if engine is None:
        torch.set_num_threads(1)
        engine = _ENGINES[settings.engine_spec] = ScoringEngine(settings.engine_spec)
    out = []
    for true_raw, pred_raw in pairs:
        a = engine.render(true_raw, settings.notes, settings.hold, settings.release).audio
        before = engine.embedded
        b = a if np.array_equal(true_raw, pred_raw) else \
            engine.render(pred_raw, settings.notes, settings.hold, settings.release).audio
        out.append({**audio_metrics(a, b, settings.sample_rate), "silent": float(silent_notes(b).all()),
                    "embedded": float(engine.embedded > before)})
    return out


def score_audio(true_raw: np.ndarray, pred_raw: np.ndarray, settings: RenderSettings, jobs: int = 1,
                chunk: int = 8, progress: bool = False) -> dict[str, np.ndarray]:
    """Audio metrics of each (true, inferred) preset pair: ``{metric: (N,) float64}``, rendered in ``jobs`` processes.

    Besides :data:`AUDIO_METRICS`, ``"silent"`` is 1.0 where the inferred preset is near-silent on every note
    (:func:`dexed_data.features.silent_notes`), a failure the averages alone hide, and ``"embedded"``
    1.0 where the plug-in path refused it and the embedded engine rendered it
    (:class:`~preset_model.inference.ScoringEngine`). ``progress``: a bar on stderr over the presets.
    """
    from dexed_data.console import progress as progress_bar

    pairs = list(zip(np.asarray(true_raw, np.uint8), np.asarray(pred_raw, np.uint8)))
    chunks = [pairs[i:i + chunk] for i in range(0, len(pairs), chunk)]
    results = []
    with progress_bar(progress, total=len(pairs), desc="re-render", unit=" presets", leave=False) as bar:
        if jobs <= 1:
            for c in chunks:
                results.append(_score(c, settings))
                bar.update(len(c))
        else:
            from dexed_data.render import helper_pool

            # workers end with this process (a killed evaluate would leave them for the idle timeout)
            ex = helper_pool(jobs)
            futures = [ex.submit(_score, c, settings) for c in chunks]
            for c, f in zip(chunks, futures):
                results.append(f.result())
                bar.update(len(c))
    flat = [m for r in results for m in r]
    return {k: np.array([m[k] for m in flat], np.float64) for k in (*AUDIO_METRICS, "silent", "embedded")}


def evaluate(run: str | Path, data: str | Path | None = None, split: str = "test", baseline: str | None = None,
             jobs: int = 1, limit: int | None = None, checkpoint: str = "best.pt", refine: int = 0,
             progress: bool = False, journal: str | Path | None = None) -> dict:
    """Evaluate a run (or a baseline on the run's split and input notes); returns the report dict.

    Args:
        run: run folder (or checkpoint file).
        data: dataset (default: the one the run was trained on).
        split: ``test`` (default), ``valid`` or ``train``.
        baseline: None for the model, ``"knn"``, ``"mean"`` or ``"median"``.
        jobs: render processes.
        limit: evaluate only the first ``limit`` presets of the split (by row; for quick checks).
        checkpoint: ``best.pt`` or ``last.pt``.
        refine: N > 0 refines each inferred preset by a re-render search of N renders against the
            true preset's sound (:func:`preset_model.refine.refine_presets`).
        progress: bars on stderr for the search and the re-rendering.
        journal: with ``refine``, a file that keeps each refined preset as it is done, so that an
            interrupted evaluation resumes (:class:`preset_model.refine.RefineJournal`).
    """
    t0 = time.perf_counter()
    loaded = load_run(run, checkpoint, data)
    data = loaded.data
    if loaded.settings.engine not in ("dexed", "dawdreamer"):
        raise DataError(f"{data}: made with engine {loaded.settings.engine!r}, which cannot re-render presets")
    from dexed_data.outputs import file_identity

    # the dataset is opened several times (rows, spectrograms, presets): one replaced in between (merge
    # --force) mixed two files' presets into a report, or failed with a traceback (audit A1)
    seen = file_identity(data)

    def unchanged() -> None:
        if file_identity(data) != seen:
            raise DataError(f"{data} was replaced or changed while this evaluation read it (another command wrote "
                            "it); once that command has finished, run the evaluation again")

    try:
        return _evaluate(loaded, data, split, baseline, jobs, limit, checkpoint, refine, progress, journal, run, t0,
                         unchanged)
    except Exception:
        unchanged()   # what failed read a file that had changed: say that
        raise


def _evaluate(loaded, data, split, baseline, jobs, limit, checkpoint, refine, progress, journal, run, t0,
              unchanged) -> dict:
    rows, train_rows = split_rows(loaded, data, split)
    coverage = split_coverage(loaded, split, rows, train_rows)
    if limit is not None:
        rows = rows[:limit]
    pred = predict(loaded, data, rows, train_rows, baseline)
    timing: dict = {}
    if refine > 0:
        from .refine import refine_presets

        pred = refine_presets(loaded.settings, data, rows, train_rows, pred, refine, jobs, progress=progress,
                              journal=journal, timing=timing)
    import h5py

    with h5py.File(data, "r") as h5:
        raw_all = h5["presets/raw"][:]
        ids = [x.decode() for x in h5["presets/id"][:]]
    unchanged()   # its last read: the rows, spectrograms and presets all came from one file
    true = raw_all[rows]
    params = parameter_metrics(true, pred)
    from .split import nearest_distance

    near = nearest_distance(true, raw_all[train_rows])
    t_infer = time.perf_counter() - t0
    audio = score_audio(true, pred, loaded.settings, jobs, progress=progress)
    cfg = loaded.model.cfg
    return {
        "format": "preset-model-evaluation", "format_version": 1,
        "run": str(loaded.path), "checkpoint": Path(run).name if Path(run).is_file() else checkpoint, "epoch": int(loaded.checkpoint.get("epoch", -1)) + 1,
        "method": (baseline or "model") + (f"+refine{refine}" if refine > 0 else ""),
        "model": None if baseline else {"encoding": cfg.encoding, "head": cfg.head, "notes": cfg.notes},
        "input_notes": [list(n) for n in loaded.input_notes],
        "dataset": str(data), "split": split, "presets": int(len(rows)), "train_presets": int(len(train_rows)),
        "coverage": coverage,
        "notes_rendered": [list(n) for n in loaded.settings.notes],
        "params": {"num_mae": params["num_mae"], "cat_accuracy": params["cat_accuracy"]},
        "audio": {k: {"mean": float(np.nanmean(audio[k])) if np.isfinite(audio[k]).any() else float("nan"),
                      "median": float(np.nanmedian(audio[k])) if np.isfinite(audio[k]).any() else float("nan"),
                      "scored": int(np.isfinite(audio[k]).sum())} for k in AUDIO_METRICS},
        "silent_fraction": float(audio["silent"].mean()),
        "near_copies": {f"within_{k}": float((near <= k).mean()) for k in (1, 5, 10)},
        "per_param": params["per_param"],
        "per_preset": {"id": [ids[r] for r in rows], **{k: v.tolist() for k, v in audio.items()}},
        # "total" is this run's; "refine" adds up every search, an interrupted earlier run's included
        "seconds": {"inference": t_infer, "total": time.perf_counter() - t0,
                    **({"refine": timing["seconds"], "refine_resumed": timing["resumed"]} if timing else {})},
        "jobs": jobs,
        # inferred presets the plug-in path refuses, rendered by the embedded engine (ScoringEngine)
        "embedded_renders": int(audio["embedded"].sum()),
    }


def report_notes(report: dict) -> list[str]:
    """Sentences a reader of the scores must see: the dataset lacks some of the run's split or
    training presets; a kNN baseline scored on the training split (it finds each preset itself)."""
    notes = []
    cov = report.get("coverage") or {}
    missing = [f"{n - have} of the {n} presets of the run's {what if what == 'train' else report['split']} "
               f"{'set' if what == 'train' else 'split'}" for what, (have, n) in cov.items() if have < n]
    if missing:
        notes.append(f"Note: this dataset lacks {' and '.join(missing)} (another or a partial dataset, or presets "
                     "that became unusable): these scores are not comparable with the run's on its own dataset.")
    if report.get("embedded_renders"):
        notes.append(f"Note: {report['embedded_renders']} inferred preset(s) have a sample-and-hold LFO that can be "
                     "heard, which the plug-in cannot reset; they were rendered by the embedded dexed engine (the "
                     "plug-in's sound from a clean state, docs/FORMAT.md).")
    if report.get("split") == "train" and str(report.get("method", "")).startswith("knn"):
        notes.append("Note: the kNN baseline on the training split finds each preset itself, so its scores are 0 "
                     "by construction; score it on the test (or valid) split.")
    return notes


def report_markdown(report: dict) -> str:
    """The human-readable summary of a report."""
    m = report["model"]
    notes = ", ".join(f"{p}:{v}" for p, v in report["input_notes"])
    what = (f"model (encoding {m['encoding']}, head {m['head']}, input notes {notes})" if m else
            f"{report['method']} baseline (on the run's split and input notes {notes})")
    lines = [f"# Evaluation: {report['run']}", "",
             f"{what}, {report['split']} split of `{report['dataset']}`: {report['presets']} presets "
             f"({report['train_presets']} training presets)" + (
                 f", checkpoint {report['checkpoint']} (epoch {report['epoch']}, counted from 1)." if m else
                 f", the split of checkpoint {report['checkpoint']} (a baseline uses none of its weights)."),   # audit Y8
             *[line for note in report_notes(report) for line in ("", note)],
             "", "| metric | value |", "|---|---|",
             f"| numerical parameter MAE (fraction of range) | {report['params']['num_mae']:.4f} |",
             f"| categorical parameter accuracy | {report['params']['cat_accuracy']:.4f} |"]
    lines += [f"| {k} (mean / median) | {v['mean']:.4f} / {v['median']:.4f} |" for k, v in report["audio"].items()]
    lines.append(f"| inferred presets silent on every note | {report['silent_fraction']:.1%} |")
    nc = report["near_copies"]
    lines += ["", f"Near copies: {nc['within_1']:.1%} / {nc['within_5']:.1%} / {nc['within_10']:.1%} of these presets "
              "have a training preset within 1 / 5 / 10 of the 144 learnable parameters (the split keeps "
              "near-copies together, preset_model/split.py)."]
    lines += ["", "Audio metrics compare renders of the true and inferred presets on the notes "
              f"{report['notes_rendered']}.", "", "## Per parameter", "", "| parameter | MAE | accuracy |", "|---|---|---|"]
    for name, v in report["per_param"].items():
        lines.append(f"| {name} | {v['mae']:.4f} | |" if "mae" in v else f"| {name} | | {v['accuracy']:.3f} |")
    return "\n".join(lines) + "\n"


def write_report(report: dict, out: str | Path, last: bool = False) -> tuple[Path, Path]:
    """Write ``out.json`` and ``out.md`` (``out`` without extension); returns both paths. ``last``:
    the command's last writes (:func:`dexed_data.outputs.together`)."""
    out = Path(out)
    if out.suffix in (".json", ".md"):
        out = out.with_suffix("")
    from dexed_data.outputs import together, write_text

    js, md = out.with_name(out.name + ".json"), out.with_name(out.name + ".md")
    with together(last=last):   # each whole, both or neither (dexed_data.outputs)
        write_text(js, json.dumps(report, indent=1), "report")
        write_text(md, report_markdown(report), "report")
    return js, md
