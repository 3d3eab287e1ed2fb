"""Benchmark one core: dexed engine renders (with/without operators) and features per preset.

    python tools/bench_engine.py [--presets 20]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from dexed_data.engines import EngineSpec, make_engine
from dexed_data.features import MelConfig, compute_features, limit_threads, mel_db

NOTES = ((40, 85), (50, 85), (60, 42), (60, 85), (60, 127), (70, 85))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--presets", type=int, default=20)
    args = ap.parse_args()
    if args.presets < 1:
        ap.error(f"--presets {args.presets}: give at least 1")
    limit_threads()
    rng = np.random.default_rng(0)
    from dexed_data.schema import VOICE_MAX, apply_fixed

    raws = apply_fixed(rng.integers(0, VOICE_MAX.astype(int) + 1, size=(args.presets, 145)).astype(np.uint8))
    engine = make_engine(EngineSpec())
    for ops in (False, True):
        t = time.perf_counter()
        renders = [engine.render(r, NOTES, 3.0, 1.0, operators=ops) for r in raws]
        dt = time.perf_counter() - t
        print(f"render operators={ops}: {args.presets / dt:.1f} presets/s")
    cfg = MelConfig()
    mel_db(renders[0].audio, cfg)  # build the cached filter bank
    t = time.perf_counter()
    for r in renders:
        mel_db(r.audio, cfg)
    print(f"mel_db: {1000 * (time.perf_counter() - t) / len(renders):.1f} ms/preset (6 notes)")
    t = time.perf_counter()
    for r in renders:
        compute_features(r, cfg)
    print(f"compute_features: {1000 * (time.perf_counter() - t) / len(renders):.1f} ms/preset")


if __name__ == "__main__":
    from _cli import run_main   # this folder: errors as one line

    run_main(main)
