"""Benchmark: matching a normalised recording, as given, with ``--gain-db auto``, and at its true level.

A musician's recording of a DX7 sound is usually normalised near 0 dBFS, about 15 dB louder than
the plug-in's output. For test presets of the split (as ``bench_refine.py`` picks them), the render
of note 60:85 is normalised to a peak of -1 dBFS and matched by ``preset_model.refine.refine`` from
the nearest training presets (what ``preset-model match --data DATA FILE --refine N`` does):

* ``as given``: the normalised file at gain 0;
* ``auto``: scaled so that its peak is ``AUTO_PEAK_DB`` (``--gain-db auto``);
* ``true level``: scaled back to the preset's own level (what no user knows);
* ``peak -18``: a lower fixed peak, for comparison.

Each refined voice's render is scored against the preset's own render with their RMS levels
aligned (the musician sets the volume), so the numbers compare timbre: log-spectral MAE (dB) and
MFCC-40 MAE, and the re-render's level relative to the input it was matched at.

Usage::

    python tools/bench_gain.py --data dataset.h5 --sounds 12 --budget 300
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

for _k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_k, "1")

import h5py  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dexed_data.engines import make_engine  # noqa: E402
from preset_model.data import read_usable, split_ids  # noqa: E402
from preset_model.inference import read_render_settings  # noqa: E402
from preset_model.match import AUTO_PEAK_DB, _rms_db as rms_db  # noqa: E402
from preset_model.metrics import audio_metrics  # noqa: E402
from preset_model.refine import NearestPresets, RefineConfig, refine, sound_candidates, training_rows  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--sounds", type=int, default=12)
    ap.add_argument("--budget", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    from _cli import at_least, fail

    at_least(a, sounds=1, budget=1)

    import torch

    torch.set_num_threads(1)
    s = read_render_settings(a.data)
    if (60, 85) not in s.notes:
        fail(f"{a.data}: its notes {s.notes} lack 60:85")
    engine = make_engine(s.engine_spec)
    ids, usable, keys = read_usable(a.data)
    test = set(split_ids([ids[r] for r in usable], 0, groups=[keys[r] for r in usable]).test)
    test_rows = np.array([r for r in usable if ids[r] in test], np.int64)
    pick = np.sort(np.random.default_rng(a.seed).choice(test_rows, size=min(a.sounds, len(test_rows)), replace=False))
    index = NearestPresets(a.data, training_rows(a.data))
    with h5py.File(a.data, "r") as h5:
        raw_all = h5["presets/raw"][:]
    note, k = [(60, 85)], s.notes.index((60, 85))
    cfg = RefineConfig(budget=a.budget, seed=a.seed)
    peaks = {"as given": -1.0, "auto": AUTO_PEAK_DB, "true level": None, "peak -18": -18.0}
    scores: dict[str, list] = {name: [] for name in peaks}
    for n, r in enumerate(pick, 1):
        true = engine.render(raw_all[r], note, s.hold, s.release).audio
        true_peak = 20 * np.log10(np.abs(true).max())
        line = []
        for name, peak in peaks.items():
            target = (true * 10 ** (((true_peak if peak is None else peak) - true_peak) / 20)).astype(np.float32)
            cands = sound_candidates(target, [k], s.mel, None, None, index, cfg)
            out = refine(target, note, cands, s.engine_spec, s.hold, s.release, cfg)
            aligned = (out.render * 10 ** ((rms_db(true) - rms_db(out.render)) / 20)).astype(np.float32)
            m = audio_metrics(true, aligned, s.sample_rate)
            scores[name].append((m["log_spectral_mae"], m["mfcc40_mae"], rms_db(out.render) - rms_db(target)))
            line.append(f"{name} {m['log_spectral_mae']:.2f}")
        print(f"{n}/{len(pick)} row {r} (peak {true_peak:.1f} dBFS): " + ", ".join(line), flush=True)
    print("\n| input level | log-spectral MAE (dB, levels aligned) | MFCC-40 MAE | re-render level re its input (dB) |")
    print("|---|---:|---:|---:|")
    for name, v in scores.items():
        lsd, mfcc, level = np.mean(v, axis=0)
        print(f"| {name} | {lsd:.2f} | {mfcc:.2f} | {level:+.1f} |")


if __name__ == "__main__":
    from preset_model.errors import PresetModelError

    try:
        main()
    except PresetModelError as e:
        sys.exit(f"error: {e}")
