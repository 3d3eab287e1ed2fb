"""Where the log-spectral MAE of a match comes from: by the target's level, and after one-step changes.

The matching benchmark (tools/bench_refine.py) judges a voice by the log-spectral MAE of
``preset_model.metrics`` (STFT magnitude in dB, floor −120 dB, averaged over every bin and frame of
the six notes). This tool shows what that number is made of, on test presets of the split:

1. **By the target's level.** The |dB error| of the nearest training preset (the kNN baseline),
   split by the level of the target's bin (−120 dB floor, −120…−110, …, above −40 dB): each band's
   share of the bins, its mean error and its contribution to the MAE; with ``--refine N`` the same
   for the voice ``preset_model.refine`` finds in N renders (what ``match --data`` does).
2. **One step off.** The true preset with one learnable numerical parameter of an operator that
   is heard (or a global one) moved by one step, scored against the true preset's render: the
   MAE a match that is one step away gets, per parameter kind.

Usage::

    python tools/lsd_anatomy.py --data dataset.h5 --sounds 20 --steps 6 [--refine 300]
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import defaultdict
from pathlib import Path

for _k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_k, "1")

import h5py  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dexed_data.engines import make_engine  # noqa: E402
from dexed_data.features import mel_db  # noqa: E402
from dexed_data.schema import LEARNABLE_PARAMS  # noqa: E402
from preset_model import metrics  # noqa: E402
from preset_model.data import read_usable, split_ids  # noqa: E402
from preset_model.inference import read_render_settings  # noqa: E402
from preset_model.refine import (_CATEGORICAL, _MAXES, _OFFSETS, NearestPresets, RefineConfig,  # noqa: E402
                                  _voice, _weights, refine, sound_candidates, training_rows)

#: Lower edges of the level bands (dB) and their names.
BANDS = (-120.0, -119.99, -110.0, -100.0, -90.0, -70.0, -40.0)
BAND_NAMES = ("−120 (floor)", "−120 … −110", "−110 … −100", "−100 … −90", "−90 … −70", "−70 … −40", "above −40")


def db(audio: np.ndarray) -> np.ndarray:
    return metrics.to_db(metrics.magnitude(audio), False).numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--sounds", type=int, default=20)
    ap.add_argument("--steps", type=int, default=6, help="one-step changes tried per sound")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--refine", type=int, default=0, help="also split the error of the refined voice (budget)")
    a = ap.parse_args()
    from _cli import at_least

    at_least(a, sounds=1, steps=0, refine=0)

    import torch

    torch.set_num_threads(1)
    s = read_render_settings(a.data)
    engine = make_engine(s.engine_spec)
    ids, usable, keys = read_usable(a.data)
    test = set(split_ids([ids[r] for r in usable], 0, groups=[keys[r] for r in usable]).test)
    test_rows = np.array([r for r in usable if ids[r] in test], np.int64)
    rng = np.random.default_rng(a.seed)
    pick = np.sort(rng.choice(test_rows, size=min(a.sounds, len(test_rows)), replace=False))
    index = NearestPresets(a.data, training_rows(a.data))
    with h5py.File(a.data, "r") as h5:
        raw_all = h5["presets/raw"][:]

    err_sum, count = np.zeros((2, len(BANDS))), np.zeros(len(BANDS))
    by_kind: dict[str, list[float]] = defaultdict(list)
    mae: list[list[float]] = [[], []]
    cfg = RefineConfig(budget=a.refine, seed=a.seed)
    render = lambda raw: engine.render(raw, s.notes, s.hold, s.release).audio  # noqa: E731
    for r in pick:
        target = render(raw_all[r])
        t_db = db(target)
        near, _ = index.query(mel_db(target, s.mel), range(len(s.notes)), 1)
        estimates = [render(near[0])]
        if a.refine:
            cands = sound_candidates(target, range(len(s.notes)), s.mel, None, None, index, cfg)
            estimates.append(refine(target, s.notes, cands, s.engine_spec, s.hold, s.release, cfg).render)
        band = np.clip(np.searchsorted(BANDS, t_db, side="right") - 1, 0, len(BANDS) - 1)
        for b in range(len(BANDS)):
            count[b] += (band == b).sum()
        for e, est in enumerate(estimates):
            err = np.abs(t_db - db(est))
            mae[e].append(err.mean())
            for b in range(len(BANDS)):
                err_sum[e, b] += err[band == b].sum()
        x = raw_all[r][_OFFSETS].astype(np.int64)
        w = _weights(raw_all[r]) * ~_CATEGORICAL
        w[w < w.max()] = 0                          # only parameters that can change the sound
        for i in rng.choice(len(x), size=a.steps, replace=False, p=w / w.sum()):
            y = x.copy()
            y[i] = x[i] + 1 if x[i] < _MAXES[i] else x[i] - 1
            p = LEARNABLE_PARAMS[i]
            kind = p.name.split(" ", 1)[1] if p.operator else p.name
            by_kind[kind].append(float(np.abs(t_db - db(render(_voice(raw_all[r], y)))).mean()))

    total = count.sum()
    who = ["kNN"] + ([f"refined ({a.refine} renders)"] if a.refine else [])
    print(f"{a.data}: {len(pick)} test presets, log-spectral MAE "
          + ", ".join(f"{w} {np.mean(m):.2f} dB" for w, m in zip(who, mae)) + "\n")
    print("| target's level (dB) | share of bins | " + " | ".join(f"mean error, {w} (dB) | contribution, {w} (dB)"
                                                         for w in who) + " |")
    print("|---|---:|" + "---:|---:|" * len(who))
    for b, name in enumerate(BAND_NAMES):
        cells = " | ".join(f"{err_sum[e, b] / max(count[b], 1):.2f} | {err_sum[e, b] / total:.2f}" for e in range(len(who)))
        print(f"| {name} | {count[b] / total:.1%} | {cells} |")
    allv = [v for vs in by_kind.values() for v in vs]
    if not allv:
        return
    print(f"\nOne step off the true preset ({len(allv)} changes): log-spectral MAE mean {np.mean(allv):.2f} dB, "
          f"median {np.median(allv):.2f}\n")
    print("| parameter | changes | mean log-spectral MAE (dB) |")
    print("|---|---:|---:|")
    for kind, v in sorted(by_kind.items(), key=lambda kv: -np.mean(kv[1])):
        print(f"| {kind} | {len(v)} | {np.mean(v):.2f} |")


if __name__ == "__main__":
    from preset_model.errors import PresetModelError

    try:
        main()
    except PresetModelError as e:    # a bad --data: its message names the file and what to do
        sys.exit(f"error: {e}")
