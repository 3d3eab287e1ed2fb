"""Benchmark: sound matching by re-render search (preset_model.refine) against the nearest-preset baseline.

For test presets of the split (``read_usable`` + ``split_ids``, fold 0), rendered on the dataset's
notes, for the same presets with ``--perturb`` random learnable parameters changed (sounds that
are not in the dataset), and for the same presets played 1–5 semitones above or below the notes
they are matched on (set ``transposed``: a recording whose note is not the one assumed), it
compares on the same sounds:

* ``knn``: the nearest training preset by spectrogram (the ``--baseline knn`` of evaluate);
* ``refined``: ``preset_model.refine.refine`` with a budget of ``--budget`` renders from the
  nearest training presets and a sine voice (no model: what ``match --data`` does), and with
  ``--run RUN`` also from the model's voice and its samples (what ``match RUN --refine`` does; the
  run must have been trained on ``--data`` with the same split).

Audio metrics are those of ``preset-model evaluate`` (log-spectral MAE in dB, MFCC-40 MAE), on all
notes. It prints presets/s and renders/s per CPU second of this process (``--jobs 1``: one core,
so the numbers hold on a shared machine; wall-clock seconds beside them), the parameter distance of each
set to its nearest training preset, and writes every per-sound number (JSON, rewritten after each
sound, so a partial run keeps what it measured) and the tables (markdown) to ``--out``:

* ``--out DIR`` (any path not ending in ``.json``): a folder, created if missing (parents too),
  that receives ``bench_refine.json`` and ``bench_refine.md``;
* ``--out FILE.json``: that file and ``FILE.md`` beside it (its folder created if missing).

Both are written atomically (a temporary file renamed into place), and replace earlier ones. The
output location is checked before any rendering: a path that cannot be written fails at once.

Usage::

    python tools/bench_refine.py --data dataset.h5 --out bench/
    nice -n 5 python tools/bench_refine.py --data dataset.h5 --sounds 100 --budget 300 --jobs 1 --out bench.json
    python tools/bench_refine.py --data dataset.h5 --sounds 20 --budget 100 --sets test --out quick.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

for _k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_k, "1")

import h5py  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dexed_data.engines import make_engine  # noqa: E402
from dexed_data.features import silent_notes  # noqa: E402
from dexed_data.schema import LEARNABLE_PARAMS, apply_fixed  # noqa: E402
from preset_model.data import read_usable, split_ids  # noqa: E402
from preset_model.inference import read_render_settings  # noqa: E402
from preset_model.metrics import audio_metrics  # noqa: E402
from preset_model.refine import NearestPresets, RefineConfig, refine, sound_candidates, training_rows  # noqa: E402

OFFSETS = np.array([p.voice_offset for p in LEARNABLE_PARAMS])
MAXES = np.array([p.max for p in LEARNABLE_PARAMS])
NUMERICAL = np.array([p.kind != "categorical" for p in LEARNABLE_PARAMS])


def perturb(raw: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``raw`` with ``n`` random learnable parameters set to another value of their range, uniformly."""
    out = raw.copy()
    for i in rng.choice(len(OFFSETS), size=n, replace=False):
        out[OFFSETS[i]] = (int(raw[OFFSETS[i]]) + rng.integers(1, MAXES[i] + 1)) % (MAXES[i] + 1)
    return apply_fixed(out)


def test_sample(data: Path, sounds: int, seed: int):
    """The benchmark's sounds: ``sounds`` test presets of fold 0's split drawn with ``seed``, in row order.
    Returns ``(ids, usable rows, test rows, picked rows)``."""
    ids, usable, keys = read_usable(data)
    test = set(split_ids([ids[r] for r in usable], 0, groups=[keys[r] for r in usable]).test)
    test_rows = np.array([r for r in usable if ids[r] in test], np.int64)
    pick = np.sort(np.random.default_rng(seed).choice(test_rows, size=min(sounds, len(test_rows)), replace=False))
    return ids, usable, test_rows, pick


def param_distance(raw: np.ndarray, train_raw: np.ndarray) -> tuple[int, float]:
    """(fewest learnable parameters that differ, smallest numerical MAE in fractions of range) to any training preset."""
    a, t = raw[OFFSETS].astype(np.int64), train_raw[:, OFFSETS].astype(np.int64)
    differ = (a != t).sum(1)
    mae = (np.abs(a - t)[:, NUMERICAL] / MAXES[NUMERICAL]).mean(1)
    return int(differ.min()), float(mae.min())


RESULTS_NAME = "bench_refine.json"   # the JSON's name in an --out folder (the tables: .md beside it)


def output_paths(out: Path) -> tuple[Path, Path]:
    """(JSON, markdown) paths of ``--out``: ``FILE.json`` and ``FILE.md`` beside it, or a folder's
    ``bench_refine.json`` and ``bench_refine.md``. Creates the folder (parents too) and checks that both
    files can be written there, so that a bad ``--out`` fails before any work; ``SystemExit`` with one line
    otherwise."""
    folder, results = (out.parent, out) if out.suffix == ".json" else (out, out / RESULTS_NAME)
    tables = results.with_suffix(".md")
    try:
        if folder.exists() and not folder.is_dir():
            raise NotADirectoryError(f"{folder} is a file, not a folder")
        folder.mkdir(parents=True, exist_ok=True)
        for path in (results, tables):
            if path.is_dir():
                raise IsADirectoryError(f"{path} is a folder")
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".bench_refine-", suffix=".tmp"):
            pass
    except OSError as e:
        reason = e.strerror if e.strerror and e.filename else str(e)
        where = f" ({e.filename})" if e.strerror and e.filename else ""
        sys.exit(f"error: --out {out}: cannot write the results there: {reason}{where}")
    return results, tables


def write_atomic(path: Path, text: str) -> None:
    """``text`` into ``path`` through a temporary file beside it, renamed into place."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--sounds", type=int, default=100)
    ap.add_argument("--budget", type=int, default=300)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--perturb", type=int, default=10)
    ap.add_argument("--sets", default="test,perturbed")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--neighbours", type=int, default=RefineConfig.neighbours,
                    help="Nearest training presets taken as candidates.")
    ap.add_argument("--donors", type=int, default=RefineConfig.donors,
                    help="Candidates whose operators are tried in the best one before the search (0: none).")
    ap.add_argument("--offspring", type=int, default=RefineConfig.offspring,
                    help="Children per generation of the evolution strategy (λ).")
    ap.add_argument("--screen", type=int, default=RefineConfig.screen,
                    help="Children drawn per generation, of which the λ predicted best are rendered (0: all drawn).")
    ap.add_argument("--transpose", type=int, default=RefineConfig.transpose,
                    help="Best candidates tried again moved onto the input's pitch when off it (0: none).")
    ap.add_argument("--jump", type=float, default=RefineConfig.jump,
                    help="Chance that a numerical parameter of a child jumps to a uniform value of its range.")
    ap.add_argument("--run", type=Path, default=None,
                    help="A run trained on --data: its voice and samples join the candidates (match RUN --refine).")
    ap.add_argument("--out", type=Path, required=True,
                    help=f"A folder (created if missing) for {RESULTS_NAME} and {Path(RESULTS_NAME).stem}.md, "
                         "or a FILE.json (the tables go to FILE.md beside it).")
    a = ap.parse_args()
    from _cli import at_least, fail

    at_least(a, sounds=1, budget=1, jobs=1, perturb=1, neighbours=1, donors=0, offspring=1, screen=0, transpose=0)
    if not 0 <= a.jump <= 1:
        fail(f"--jump {a.jump}: must be a probability between 0 and 1")
    unknown = set(a.sets.split(",")) - {"test", "perturbed", "transposed"}
    if unknown:
        fail(f"--sets: unknown set(s) {', '.join(sorted(unknown))}; choose from test, perturbed, transposed")
    out_json, out_md = output_paths(a.out)   # before any work: a bad --out fails at once

    import torch

    torch.set_num_threads(1)
    s = read_render_settings(a.data)
    engine = make_engine(s.engine_spec)
    ids, usable, test_rows, pick = test_sample(a.data, a.sounds, a.seed)
    t0 = time.perf_counter()
    train = training_rows(a.data)
    index = NearestPresets(a.data, train)
    t_index = time.perf_counter() - t0
    with h5py.File(a.data, "r") as h5:
        raw_all = h5["presets/raw"][:]
    train_raw = raw_all[train]
    cfg = RefineConfig(budget=a.budget, seed=a.seed, neighbours=a.neighbours, donors=a.donors, offspring=a.offspring,
                       jump=a.jump, screen=a.screen, transpose=a.transpose)
    loaded = None
    if a.run is not None:
        from preset_model.inference import load_run

        loaded = load_run(a.run, data=a.data)
        if sorted(loaded.checkpoint["split"]["train"]) != sorted(ids[r] for r in train):
            fail(f"{a.run} was not trained on the training split of {a.data}")
    print(f"{a.data}: {len(usable)} usable presets, {len(train)} training, {len(test_rows)} test; "
          f"{len(pick)} sounds per set, budget {a.budget}, jobs {a.jobs}; "
          f"index built in {t_index:.1f} s (pool {index.pool})", flush=True)
    results: dict = {"data": str(a.data), "budget": a.budget, "jobs": a.jobs,
                     "neighbours": cfg.neighbours, "perturb": a.perturb,
                     "offspring": cfg.offspring, "donors": cfg.donors, "jump": cfg.jump, "screen": cfg.screen, "transpose": cfg.transpose,
                     "run": None if a.run is None else str(a.run), "model_samples": cfg.model_samples if a.run else 0,
                     "index_seconds": t_index,
                     "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load "
                                f"{os.getloadavg()[0]:.1f} at start", "sets": {}}
    for name in a.sets.split(","):
        prng = np.random.default_rng(a.seed + 1)
        trng = np.random.default_rng(a.seed + 2)
        rows = []
        for n_done, r in enumerate(pick):
            raw = raw_all[r]
            if name == "perturbed":
                for _ in range(20):  # a perturbed preset may fall silent; draw again
                    cand = perturb(raw, a.perturb, prng)
                    target = engine.render(cand, s.notes, s.hold, s.release).audio
                    if not silent_notes(target).all():
                        raw = cand
                        break
            shift = 0
            if name == "transposed":
                shift = int(trng.choice([-5, -4, -3, -2, -1, 1, 2, 3, 4, 5]))
            target = engine.render(raw, [(p + shift, v) for p, v in s.notes], s.hold, s.release).audio
            t1, c1 = time.perf_counter(), time.process_time()
            db = None if loaded is None else loaded.spectrogram(target)
            cands = sound_candidates(target, range(len(s.notes)), s.mel, loaded, db, index, cfg)
            knn = engine.render(dict(cands)["nearest-1"], s.notes, s.hold, s.release).audio
            res = refine(target, s.notes, cands, s.engine_spec, s.hold, s.release, cfg, a.jobs)
            sec, cpu = time.perf_counter() - t1, time.process_time() - c1
            mk, mr = audio_metrics(target, knn, s.sample_rate), audio_metrics(target, res.render, s.sample_rate)
            differ, pmae = param_distance(raw, train_raw)
            rows.append({"row": int(r), "knn": mk, "refined": mr, "distance_knn": res.candidate("nearest-1"),
                         "distance_best_candidate": min(d for _, d in res.candidates), "distance_refined": res.distance,
                         "renders": res.renders, "seconds": sec, "cpu_seconds": cpu, "params_differ_nearest_train": differ,
                         "num_mae_nearest_train": pmae, "semitones": shift, "refined_silent": bool(silent_notes(res.render).all())})
            print(f"{name} {n_done + 1}/{len(pick)} row {r}: log-spec {mk['log_spectral_mae']:.2f} → "
                  f"{mr['log_spectral_mae']:.2f} dB, MFCC-40 {mk['mfcc40_mae']:.2f} → {mr['mfcc40_mae']:.2f}, "
                  f"{res.renders} renders in {sec:.1f} s ({cpu:.1f} s CPU)", flush=True)
            results["sets"][name] = rows
            write_atomic(out_json, json.dumps(results, indent=1))
    md = report(results)
    write_atomic(out_md, md)
    print(md)
    print(f"results: {out_json}, tables: {out_md}")


def report(results: dict) -> str:
    """The markdown tables of a results dict (also usable on a partial run)."""
    lines = ["| sounds | set | log-spectral MAE, knn → refined (dB) | change | MFCC-40 MAE, knn → refined | change "
             "| refined silent | CPU s per sound | presets/s (one core) | renders/s (one core) | wall s per sound "
             "| params differing from nearest training preset (of 144, mean / min) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, rows in results["sets"].items():
        if not rows:
            continue
        k = {m: np.mean([x["knn"][m] for x in rows]) for m in ("log_spectral_mae", "mfcc40_mae")}
        f = {m: np.mean([x["refined"][m] for x in rows]) for m in ("log_spectral_mae", "mfcc40_mae")}
        sec = np.mean([x["cpu_seconds"] for x in rows])
        wall = np.mean([x["seconds"] for x in rows])
        renders = np.sum([x["renders"] for x in rows]) / np.sum([x["cpu_seconds"] for x in rows])
        differ = [x["params_differ_nearest_train"] for x in rows]
        lines.append(f"| {len(rows)} | {name} | {k['log_spectral_mae']:.2f} → {f['log_spectral_mae']:.2f} | "
                     f"{f['log_spectral_mae'] / k['log_spectral_mae'] - 1:+.0%} | {k['mfcc40_mae']:.2f} → "
                     f"{f['mfcc40_mae']:.2f} | {f['mfcc40_mae'] / k['mfcc40_mae'] - 1:+.0%} | "
                     f"{np.mean([x['refined_silent'] for x in rows]):.0%} | {sec:.1f} | {1 / sec:.3f} | {renders:.1f} | {wall:.1f} | "
                     f"{np.mean(differ):.1f} / {min(differ)} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    from preset_model.errors import PresetModelError

    try:
        main()
    except PresetModelError as e:    # a bad --data: its message names the file and what to do
        sys.exit(f"error: {e}")
