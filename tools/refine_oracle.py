"""Which parameters hold a match's remaining error? Give one group of them the true preset's values.

For test presets of the split (fold 0, as tools/bench_refine.py draws them), the nearest training
preset (the kNN baseline) and, with ``--refine N``, the voice ``preset_model.refine`` finds in N
renders (what ``match --data`` does) are scored against the true preset's render on the dataset's
notes (log-spectral MAE of ``preset_model.metrics``). Then, for each group of learnable parameters,
the same voice with that group set to the true preset's values (an oracle) is scored again:

* ``freq``: each operator's MODE, F COARSE, F FINE, OSC DETUNE;
* ``all but freq``: every other learnable parameter;
* ``eg``, ``level``, ``pitch/lfo``, ``algo``, ``scaling/vel``: the operators' EG rates and levels,
  their OUTPUT LEVELs, the pitch EG, LFO and modulation sensitivities, ALGORITHM / FEEDBACK /
  OSC KEY SYNC, and the rest (keyboard scaling, velocity).

An oracle group bounds what a step that found those values exactly could gain: "min" is the
mean of the better of the voice and its oracle per sound (a search keeps a change only when it is
better). Per-sound numbers go to ``--out`` (JSON, rewritten after each sound).

Usage::

    python tools/refine_oracle.py --data dataset.h5 --sounds 20 --seed 1 --refine 300 --out oracle.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

for _k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_k, "1")

import h5py  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dexed_data.engines import make_engine  # noqa: E402
from dexed_data.schema import LEARNABLE_PARAMS, apply_fixed  # noqa: E402
from preset_model.inference import read_render_settings  # noqa: E402
from preset_model.metrics import audio_metrics  # noqa: E402
from preset_model.refine import NearestPresets, RefineConfig, refine, sound_candidates, training_rows  # noqa: E402

_FREQ = ("MODE", "F COARSE", "F FINE", "OSC DETUNE")


def group(name: str) -> str:
    """The oracle group of a learnable parameter (module docstring)."""
    if name.startswith("OP") and name.endswith(_FREQ):
        return "freq"
    if name in ("ALGORITHM", "FEEDBACK", "OSC KEY SYNC"):
        return "algo"
    if name.startswith("OP") and "EG" in name:
        return "eg"
    if name.endswith("OUTPUT LEVEL"):
        return "level"
    if name.startswith(("PITCH EG", "LFO")) or "MOD SENS" in name:
        return "pitch/lfo"
    return "scaling/vel"


def groups() -> dict[str, list[int]]:
    """Group → voice offsets, and ``all but freq``."""
    out: dict[str, list[int]] = {}
    for p in LEARNABLE_PARAMS:
        out.setdefault(group(p.name), []).append(p.voice_offset)
    out["all but freq"] = [o for g, offsets in out.items() if g != "freq" for o in offsets]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--sounds", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--refine", type=int, default=300, help="budget of the refined voice (0: the kNN voice only)")
    ap.add_argument("--out", type=Path, required=True, help="per-sound numbers (JSON)")
    a = ap.parse_args()
    from _cli import at_least, fail

    at_least(a, sounds=1, refine=0)
    if a.out.is_dir():
        fail(f"--out {a.out} is a folder; give a file name (e.g. {a.out / 'oracle.json'})")
    import torch

    torch.set_num_threads(1)
    s = read_render_settings(a.data)
    engine = make_engine(s.engine_spec)
    from bench_refine import test_sample   # this folder: the benchmark's own sounds

    pick = test_sample(a.data, a.sounds, a.seed)[3]
    index = NearestPresets(a.data, training_rows(a.data))
    with h5py.File(a.data, "r") as h5:
        raw_all = h5["presets/raw"][:]
    cfg, oracle = RefineConfig(budget=max(a.refine, 1), seed=a.seed), groups()
    rows: list[dict] = []
    for n, r in enumerate(pick):
        true = raw_all[r]
        target = engine.render(true, s.notes, s.hold, s.release).audio

        def lsd(voice: np.ndarray) -> float:
            audio = engine.render(apply_fixed(voice), s.notes, s.hold, s.release).audio
            return audio_metrics(target, audio, s.sample_rate)["log_spectral_mae"]

        cands = sound_candidates(target, range(len(s.notes)), s.mel, None, None, index, cfg)
        voices = {"knn": dict(cands)["nearest-1"]}
        if a.refine:
            voices["refined"] = refine(target, s.notes, cands, s.engine_spec, s.hold, s.release, cfg, 1).raw
        row: dict = {"row": int(r)}
        for name, voice in voices.items():
            row[name] = {"voice": lsd(voice), "freq params differing": int((voice[oracle["freq"]] != true[oracle["freq"]]).sum())}
            for g, offsets in oracle.items():
                fixed = voice.copy()
                fixed[offsets] = true[offsets]
                row[name][g] = lsd(fixed)
        rows.append(row)
        print(f"{n + 1}/{len(pick)} row {r}: " + "; ".join(f"{k} {v['voice']:.2f} dB, freq oracle {v['freq']:.2f}"
                                                         for k, v in row.items() if k != "row"), flush=True)
        tmp = a.out.with_name(a.out.name + ".tmp")
        tmp.write_text(json.dumps({"data": str(a.data), "seed": a.seed, "refine": a.refine, "sounds": rows}, indent=1))
        os.replace(tmp, a.out)
    print(f"\n{len(rows)} sounds, log-spectral MAE (dB): the voice, then each group set to the true preset's "
          "(mean over sounds / mean of the better of the two / sounds where the oracle is better)")
    for name in rows[0]:
        if name == "row":
            continue
        base = np.array([x[name]["voice"] for x in rows])
        print(f"{name}: {base.mean():.2f} dB; freq parameters differing on {sum(x[name]['freq params differing'] > 0 for x in rows)} sounds")
        for g in oracle:
            v = np.array([x[name][g] for x in rows])
            print(f"  {g:13s} {v.mean():6.2f} / {np.minimum(base, v).mean():5.2f} / {(v < base - 0.05).sum()}")


if __name__ == "__main__":
    from _cli import run_main   # this folder: errors as one line

    run_main(main)
