"""Benchmark the render job against its in-process ideal, on the same presets, in one run.

Prints, for the same N presets (the paper's six notes, 4 s each):

* engine only and the in-process ideal (engine + features, no file), one thread, this process;
* the real command ``dexed-data render --jobs 1`` and ``--jobs 2`` (default storage), wall clock
  of the whole process (start-up, workers, writer, assembly included), and their ratios;
* the single writer's ceiling (presets/s it can store and assemble) and projected times for 30k
  presets on 2 and 32 cores;
* bytes per preset and for 30k presets for each storage choice, and the worker time to encode them.

Usage::

    python tools/bench_render.py [--presets 600] [--source corpus|bundled|DIR|presets.h5] [--work /tmp/bench_render]

Timings on a shared machine are noisy: compare the ratios printed by one run, not runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import os
import pickle
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
N_30K = 30_000


def _catalogue(source: str, work: Path) -> Path:
    if source.endswith(".h5"):
        return Path(source)
    from dexed_data.catalogue import import_sysex

    folder = {"corpus": Path(os.environ.get("DEXED_CORPUS", REPO.parent / "shared" / "corpus" / "dx7-cc0")),
              "bundled": REPO / "presets"}.get(source, Path(source))
    out = work / "presets.h5"
    import_sysex([folder], out, progress=False, force=True)
    return out


def _command(cat: Path, out: Path, n: int, jobs: int, extra=()) -> tuple[float, float, float]:
    """``dexed-data render --jobs N`` in a fresh process: wall seconds, its workers' start-up seconds,
    and CPU seconds of the command and its workers."""
    if out.exists():
        out.unlink()
    shutil.rmtree(out.with_name(out.name + ".parts"), ignore_errors=True)
    cmd = [sys.executable, "-m", "dexed_data", "render", str(cat), "-o", str(out), "--limit", str(n),
           "--jobs", str(jobs), "--no-progress", *extra]
    t = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    text = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    m = re.search(r"workers ready after ([\d.]+) s", text)
    return wall, (float(m.group(1)) if m else 0.0), cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", type=int, default=600, help="presets rendered by each measurement")
    ap.add_argument("--source", default="corpus", help="corpus, bundled, a SysEx folder, or a presets.h5")
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench_render"), help="scratch folder (deleted first)")
    args = ap.parse_args()

    from dexed_data import dataset as ds
    from dexed_data.catalogue import read_catalogue
    from dexed_data.engines import make_engine
    from dexed_data.features import compute_features, limit_threads
    from dexed_data.render import RenderConfig
    from dexed_data.schema import apply_fixed

    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    cat_path = _catalogue(args.source, args.work)
    raws = apply_fixed(read_catalogue(cat_path).raw[: args.presets])
    n = len(raws)
    cfg = RenderConfig()
    print(f"{n} presets from {args.source}, notes {len(cfg.notes)} × {cfg.hold + cfg.release:g} s, "
          f"operators={cfg.operators}, default storage {','.join(cfg.storage.arrays)} / {cfg.compression} / "
          f"{cfg.audio_dtype}; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")

    # --- in-process: engine only and the ideal (engine + features), one thread -------------------
    limit_threads()
    engine = make_engine(cfg.engine_spec)
    compute_features(engine.render(raws[0], cfg.notes, cfg.hold, cfg.release, operators=cfg.operators),
                     cfg.mel_config)   # warm-up: filter bank, first-call costs
    t_engine = t_ideal = 0.0
    sample = []
    cpu0 = time.process_time()
    for i, raw in enumerate(raws):
        t0 = time.perf_counter()
        r = engine.render(raw, cfg.notes, cfg.hold, cfg.release, operators=cfg.operators)
        t1 = time.perf_counter()
        f = compute_features(r, cfg.mel_config)
        fingerprints(r.audio, cfg.sample_rate)
        t2 = time.perf_counter()
        t_engine += t1 - t0
        t_ideal += t2 - t0
        if i < 16:
            sample.append((r.audio, f.mel))

    cpu_ideal = time.process_time() - cpu0

    # --- the real command: n presets, and 1 preset for its fixed start-up cost ------------------
    t_j1 = _command(cat_path, args.work / "j1.h5", n, 1)
    t_j2 = _command(cat_path, args.work / "j2.h5", n, 2)
    same = _same_data(args.work / "j1.h5", args.work / "j2.h5")
    f_j1 = _command(cat_path, args.work / "f1.h5", 1, 1)
    f_j2 = _command(cat_path, args.work / "f2.h5", 1, 2)

    print("\nthroughput (presets/s, 6 notes each)")
    ideal = n / t_ideal
    print(f"  {'engine only':<30}{n / t_engine:8.2f}")
    print(f"  {'ideal (engine + features)':<30}{ideal:8.2f}")
    print(f"  {'command --jobs 1':<30}{n / t_j1[0]:8.2f}   whole command, wall clock")
    print(f"  {'command --jobs 2':<30}{n / t_j2[0]:8.2f}")
    print(f"  --jobs 1 / ideal              {n / t_j1[0] / ideal:8.2f}   (target ≥ 0.80)")
    print(f"  --jobs 2 / --jobs 1           {t_j1[0] / t_j2[0]:8.2f}   (target ≥ 1.80)")
    print(f"  --jobs 1 and --jobs 2 files hold the same data: {same}")
    print(f"  fixed start-up of a run (1 preset): --jobs 1 {f_j1[0]:.1f} s wall, {f_j1[2]:.1f} CPU s; "
          f"--jobs 2 {f_j2[0]:.1f} s wall, {f_j2[2]:.1f} CPU s")
    # steady state = (n-preset run − 1-preset run) / (n − 1): what a 30k run sees
    w1, w2 = (t_j1[0] - f_j1[0]) / (n - 1), (t_j2[0] - f_j2[0]) / (n - 1)
    c1, c2 = (t_j1[2] - f_j1[2]) / (n - 1), (t_j2[2] - f_j2[2]) / (n - 1)
    print(f"  steady state, wall:  --jobs 1 {1 / w1:.2f} presets/s = {1 / w1 / ideal:.2f} × ideal; "
          f"--jobs 2 {1 / w2:.2f} presets/s = {w1 / w2:.2f} × --jobs 1")
    print(f"  steady state, CPU s per preset (what other processes on a shared machine do not change): "
          f"ideal {cpu_ideal / n:.3f}, --jobs 1 {c1:.3f} (ideal / this = {cpu_ideal / n / c1:.2f}), "
          f"--jobs 2 {c2:.3f} (2 × --jobs 1 / this = {2 * c1 / c2:.2f}: the speed-up on 2 free cores)")

    # --- the writer's ceiling: store + assemble already-encoded results, no rendering ------------
    cap = _writer_ceiling(cfg, sample, args.work)
    eff = min(1.0, c1 / c2)     # per-worker efficiency from 1 to 2 workers (CPU s per preset)
    per_core = 1 / c1           # presets/s of one free core, steady state
    print("\nprojection for 30,000 presets (steady state; add the start-up above once per run)")
    print(f"  single writer ceiling       {cap:8.1f} presets/s (unpickle, store in a segment, copy into the dataset)")
    print(f"  2 cores, as measured here   {N_30K * w2 / 3600:8.2f} h   (machine shared with other jobs)")
    print(f"  2 free cores                {N_30K / (2 * per_core * eff) / 3600:8.2f} h   (from CPU s per preset)")
    r32 = min(per_core * 32 * eff, cap)
    print(f"  32 free cores, one machine  {N_30K / r32 / 3600:8.2f} h   ({r32:.0f} presets/s"
          + (", writer-bound" if r32 == cap else "") + ")")
    r32s = per_core * 32 * eff
    print(f"  32 cores as shards + merge  {N_30K / r32s / 3600:8.2f} h   (+ merge: {N_30K / cap / 60:.0f} min)")

    # --- storage choices ----------------------------------------------------------------------------
    print("\nstorage per preset (6 notes) and for 30k presets; encode = a worker's ms per preset to convert")
    print("(float16) and compress; the small arrays and parameters add ~0.6 kB per preset")
    print(f"  {'compression':<12}{'audio MB':>9}{'ms':>6}{'mel MB':>9}{'ms':>6}{'both MB':>9}"
          f"{'30k audio':>11}{'30k mel':>9}{'30k both':>10}")
    for comp in ("none", "lzf", "gzip-1", "gzip-4", "gzip-9"):
        enc = ds.ChunkEncoder(ds.StorageConfig(compression=comp))
        size = {"audio": 0.0, "mel": 0.0}
        ms = {"audio": 0.0, "mel": 0.0}
        for audio, mel in sample:
            for name, x in (("audio", audio), ("mel", mel)):
                t = time.perf_counter()
                size[name] += len(enc.encode(name, x)[1]) / len(sample) / 1e6
                ms[name] += 1000 * (time.perf_counter() - t) / len(sample)
        a, m = size["audio"], size["mel"]
        print(f"  {comp:<12}{a:9.3f}{ms['audio']:6.1f}{m:9.3f}{ms['mel']:6.1f}{a + m:9.3f}"
              f"{a * N_30K / 1e3:9.1f}GB{m * N_30K / 1e3:7.1f}GB{(a + m) * N_30K / 1e3:8.1f}GB")
    print(f"  load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"  (the ideal costs {1000 * t_ideal / n:.0f} ms per preset; default: {','.join(cfg.storage.arrays)} "
          f"{cfg.compression})")


def fingerprints(audio, sample_rate):
    """The per-preset audio fingerprints, part of the features when dexed_data.fingerprint exists."""
    try:
        from dexed_data.fingerprint import exact_fingerprint, near_fingerprint
    except ImportError:
        return None
    return exact_fingerprint(audio), near_fingerprint(audio, sample_rate)


def _same_data(a: Path, b: Path) -> bool:
    import h5py

    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        return all(np.array_equal(fa[k][...], fb[k][...]) for k in ("mel", "audio", "status", "peak")
                   if k in fa)


def _writer_ceiling(cfg, sample, work: Path) -> float:
    """Presets/s one writer process stores (segment files) and assembles, from encoded results."""
    import h5py

    from dexed_data import dataset as ds

    enc = ds.ChunkEncoder(cfg.storage)
    k, t = sample[0][0].shape
    shapes = ds.Shapes(k, t, sample[0][1].shape[1], sample[0][1].shape[2])
    results = []
    for i, (audio, mel) in enumerate(sample):
        chunks = {}
        if "audio" in cfg.storage.arrays:
            chunks["audio"] = enc.encode("audio", audio)
        if "mel" in cfg.storage.arrays:
            chunks["mel"] = enc.encode("mel", mel.astype(np.float16))
        r = ds.RowResult(i, ds.STATUS_OK, "", chunks, np.zeros((k, 6), np.float32),
                         np.ones((k, 6), bool), np.ones(k, np.float32), np.ones(k, np.float32), False, -120.0, 0.0)
        for name in ("fingerprint", "near_fingerprint"):   # present when dexed_data.fingerprint is
            if hasattr(r, name):
                setattr(r, name, np.zeros(16, np.uint8))
        results.append(r)
    reps = 4
    n = len(results) * reps
    seg = work / "writer-seg.h5"
    blobs = [pickle.dumps(dataclasses.replace(r, row=rep * len(results) + r.row))
             for rep in range(reps) for r in results]
    t0 = time.perf_counter()
    w = ds.SegmentWriter(seg, 0, n, cfg.storage, shapes)
    for blob in blobs:          # the parent unpickles each result (the pipe's copy is not counted)
        w.add(pickle.loads(blob))
    w.finish()
    out = work / "writer-out.h5"
    with h5py.File(seg, "r") as f:
        # assembly's cost: copy every chunk into a second file, as write_dataset does
        with h5py.File(out, "w") as g:
            for name in cfg.storage.arrays:
                src = f[name]
                d = g.create_dataset(name, shape=src.shape, dtype=src.dtype, chunks=src.chunks,
                                     **cfg.storage.filters())
                zeros = (0,) * (src.ndim - 1)
                for row in range(n):
                    mask, data = src.id.read_direct_chunk((row,) + zeros)
                    d.id.write_direct_chunk((row,) + zeros, data, filter_mask=mask)
    dt = time.perf_counter() - t0
    seg.unlink()
    out.unlink()
    return n / dt


if __name__ == "__main__":
    main()
