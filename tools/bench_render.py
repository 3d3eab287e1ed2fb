"""Benchmark the render job: scaling, the write path against the disk, bytes written, peak disk.

Prints, measured in one run on the same presets (the paper's six notes, 4 s each):

* the disk's own sequential write rate (bytes synced to disk, ``fdatasync``) and page-cache rate;
* engine only and the in-process ideal (engine + features, no file), one thread, this process;
* the real command ``dexed-data render --jobs 1`` and ``--jobs 2`` (default storage), wall clock
  of the whole process (start-up, workers, writing, finishing included), and their ratios;
* the coordination ceiling: CPU seconds the main process spends per preset during a ``--jobs 2``
  job (it only hands out segments and counts finished ones) → presets/s it could coordinate;
* the write path a worker runs per segment (rows ``pwrite`` in place + fdatasync + segment file),
  on already-encoded rows, against the disk's synced rate;
* bytes written to disk per byte of the final file (``/proc/PID/io`` of the job and its workers)
  and peak disk over the final size, for the default storage and for ``gzip-4``;
* bytes per preset for each storage choice, the workers' time to encode them, and the projected
  time for 30k presets at 32 and 96 cores, saying whether CPU or disk bounds it.

Usage::

    python tools/bench_render.py [--presets 1000] [--source corpus|bundled|DIR|presets.h5] [--work /tmp/bench_render]

Timings on a shared machine are noisy: compare the ratios printed by one run, not runs. The
steady-state numbers are differences between an N-preset and a 1-preset command: with few presets
the start-up's noise can outweigh them, and then they (and the projections built on them) print
n/a with the reason instead of a meaningless number; at least 4 presets are needed at all.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
N_30K = 30_000
STORAGES = (("mel", "none"), ("audio,mel", "none"), ("mel", "lzf"), ("mel", "gzip-4"), ("audio,mel", "gzip-4"))
MIN_PRESETS = 4   # steady state = (N presets - 1 preset) / (N - 1); coordination = (N - N // 10) presets


def scratch(folder: Path, script: str) -> None:
    """Empty ``folder`` for this run, only if it is new, empty, or one a benchmark made (its marker
    file): ``--work .`` or ``--work ~/project`` deleted whatever was there (audit Y7)."""
    marker = folder / ".benchmark-scratch"
    from _cli import fail   # this folder

    if folder.is_symlink():
        fail(f"--work {folder} is a link; give the folder itself (it is emptied before each run)")
    if folder.exists() and not folder.is_dir():
        fail(f"--work {folder} is a file; give a scratch folder")
    if folder.is_dir() and any(folder.iterdir()) and not marker.exists():
        fail(f"--work {folder} holds files not marked as this script's (its own, from a version before the mark, or "
             "anyone's): delete the folder if they are not needed, or give a new or empty folder (it is emptied "
             "before each run)")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    marker.write_text(f"a scratch folder of tools/{script}.py: emptied by its next run\n")


def per_extra_preset(total: float, fixed: float, n: int) -> float | None:
    """Seconds per preset past the first, ``(total - fixed) / (n - 1)``, from an ``n``-preset run and a
    1-preset run; ``None`` when that is not positive (the ``n - 1`` extra presets are lost in the noise
    of the start-up: too few presets for a steady-state number)."""
    if n < 2 or total <= fixed:
        return None
    return (total - fixed) / (n - 1)


def _too_few(n: int, what: str) -> str:
    return (f"n/a ({what} of {n} presets was not above that of 1 preset: start-up noise outweighs "
            f"{n - 1} presets; use more --presets)")


def _catalogue(source: str, work: Path) -> Path:
    if source.endswith(".h5"):
        return Path(source)
    from dexed_data.importer import import_sysex

    folder = {"corpus": Path(os.environ.get("DEXED_CORPUS", REPO.parent / "shared" / "corpus" / "dx7-cc0")),
              "bundled": REPO / "presets"}.get(source, Path(source))
    out = work / "presets.h5"
    import_sysex([folder], out, progress=False, force=True)
    return out


def disk_rate(work: Path, mb: int = 512, sync_every_mb: int = 64) -> tuple[float, float]:
    """Sequential write rate of the disk under ``work``: (bytes/s synced, bytes/s into the page cache).

    Synced: 1 MB writes with an ``fdatasync`` every ``sync_every_mb`` MB and at the end, the pattern
    of a render worker (a segment of 64 presets of ~1 MB, then fdatasync).
    """
    block = np.random.default_rng(0).integers(0, 255, 1 << 20, dtype=np.uint8).tobytes()
    rates = []
    for sync in (True, False):
        path = work / "disk-rate.bin"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        t = time.perf_counter()
        for i in range(mb):
            os.write(fd, block)
            if sync and (i + 1) % sync_every_mb == 0:
                os.fdatasync(fd)
        if sync:
            os.fdatasync(fd)
        rates.append(mb * 2**20 / (time.perf_counter() - t))
        os.close(fd)
        path.unlink()
    return rates[0], rates[1]


_WATCH = """
import os, sys, threading, time
folder, peak, done = sys.argv[1], 0, threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
while not done.is_set():
    used = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                used += os.stat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                pass
    peak = max(peak, used)
    time.sleep(0.02)
print(peak)
"""


class PeakDisk:
    """Samples the bytes allocated under a folder every 20 ms and keeps the largest; in a process
    of its own, so that its CPU time does not count as the measured job's."""

    def __init__(self, folder: Path):
        self.folder, self.peak = folder, 0

    def __enter__(self) -> "PeakDisk":
        self._proc = subprocess.Popen([sys.executable, "-c", _WATCH, str(self.folder)], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True)
        return self

    def __exit__(self, *exc) -> None:
        out, _ = self._proc.communicate("")
        self.peak = int(out.strip() or 0)


def _io_written(pid: int) -> int:
    """Bytes ``pid`` sent (or will send) to the storage layer, minus those cancelled by truncation/deletion."""
    try:
        fields = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
    except OSError:
        return 0
    return int(fields["write_bytes"]) - int(fields["cancelled_write_bytes"])


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out += children.get(p, [])
        todo += children.get(p, [])
    return out


def job_in_process(cat: Path, out: Path, n: int, jobs: int, store: str, compression: str) -> dict:
    """A render job in this process (workers as children): wall, main-process CPU, bytes written, peak disk."""
    from dexed_data.render import RenderConfig, render_dataset, shutdown_workers

    folder = out.parent / f"job-{out.stem}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    out = folder / out.name
    cfg = RenderConfig(store=tuple(store.split(",")), compression=compression)
    shutdown_workers()
    before_self = _io_written(os.getpid())
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t = time.perf_counter()
    with PeakDisk(folder) as peak:
        summary = render_dataset(cat, out, cfg, jobs=jobs, progress=False, limit=n)
        wall = time.perf_counter() - t
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        written = _io_written(os.getpid()) - before_self + sum(_io_written(p) for p in _descendants(os.getpid()))
    shutdown_workers()
    final = out.stat().st_size
    main_cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
    shutil.rmtree(folder, ignore_errors=True)
    return dict(wall=wall, startup=summary.startup, main_cpu=main_cpu, written=written, final=final,
                peak=peak.peak, n=summary.rendered)


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
    text = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True,
                          env=dict(os.environ, PYTHONPATH=str(REPO))).stdout
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    m = re.search(r"workers ready after ([\d.]+) s", text)
    return wall, (float(m.group(1)) if m else 0.0), cpu


def write_path(sample, work: Path, writers: int = 1, reps: int = 32) -> tuple[float, float]:
    """The workers' write path on encoded rows (default storage): rows pwritten in place, fdatasync,
    segment file published, as :func:`dexed_data.render._render_segment` does, by ``writers`` threads
    at once (pwrite and fdatasync release the GIL, as separate worker processes would not need to)
    → (presets/s, bytes/s) of them all."""
    from concurrent.futures import ThreadPoolExecutor

    from dexed_data import dataset as ds
    from dexed_data import storage, writer
    from dexed_data.render import RenderConfig, _SegmentOutput

    cfg = RenderConfig()
    enc = storage.ChunkEncoder(cfg.storage)
    k = sample[0][1].shape[0]
    shapes = ds.Shapes(k, sample[0][0].shape[1], sample[0][1].shape[1], sample[0][1].shape[2])
    n = len(sample) * reps
    header = ds.DatasetHeader("dexed", "bench", 22050, cfg.notes, 3.0, 1.0, {}, {}, True, cfg.storage, shapes,
                              "bench", "0", n)
    table = ds.PresetTable(np.zeros((n, 145), np.uint8), np.array([f"{i:016d}" for i in range(n)], "S16"),
                           np.array([b"x"] * n, "S10"), np.arange(n, dtype=np.int32), np.arange(n, dtype=np.int32),
                           {"preset": np.zeros(0, np.int32)})
    partial = work / "write-path.h5"
    writer.create_layout(partial, header, table)
    results = []
    for i in range(n):
        audio, mel = sample[i % len(sample)]
        results.append(writer.RowResult(i, ds.STATUS_OK, "", {"mel": enc.encode("mel", mel)}, np.zeros((k, 6), np.float32),
                                        np.ones((k, 6), bool), np.ones(k, np.float32), np.ones(k, np.float32), False,
                                        -120.0, 0.0, np.zeros(16, np.uint8), np.zeros(16, np.uint8)))
    seg = 64
    slots = writer.row_slots(partial, header)

    def segment(s: int) -> None:
        out = _SegmentOutput(str(work / f"seg-{s}.h5"), s, min(n, s + seg), np.arange(s, min(n, s + seg)), header,
                             (str(partial), slots))
        for r in results[s: s + seg]:
            out.add(r)
        out.finish()

    t = time.perf_counter()
    with ThreadPoolExecutor(writers) as pool:
        list(pool.map(segment, range(0, n, seg)))
    dt = time.perf_counter() - t
    per_preset = len(results[0].chunks["mel"][1])
    for p in work.glob("seg-*.h5"):
        p.unlink()
    partial.unlink()
    return n / dt, n * per_preset / dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", type=int, default=1000,
                    help=f"presets rendered by each measurement (at least {MIN_PRESETS}; steady-state numbers "
                         "need enough to outweigh start-up noise, a few hundred)")
    ap.add_argument("--source", default="corpus", help="corpus, bundled, a SysEx folder, or a presets.h5")
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench_render"),
                    help="scratch folder: a new or empty one, or one this script made before (emptied first)")
    args = ap.parse_args()
    if args.presets < MIN_PRESETS:
        ap.error(f"--presets {args.presets}: at least {MIN_PRESETS} are needed for the steady-state numbers")

    from dexed_data import storage
    from dexed_data.catalogue import read_catalogue
    from dexed_data.engines import make_engine
    from dexed_data.features import compute_features, limit_threads
    from dexed_data.fingerprint import exact_fingerprint, near_fingerprint
    from dexed_data.render import RenderConfig
    from dexed_data.schema import apply_fixed

    scratch(args.work, "bench_render")
    cat_path = _catalogue(args.source, args.work)
    raws = apply_fixed(read_catalogue(cat_path).raw[: args.presets])
    n = len(raws)
    if n < MIN_PRESETS:
        sys.exit(f"error: {n} preset(s) from {args.source}: the steady-state numbers need at least {MIN_PRESETS} "
                 f"(--presets {MIN_PRESETS} or more, from a source that has them)")
    cfg = RenderConfig()
    print(f"{n} presets from {args.source}, notes {len(cfg.notes)} × {cfg.hold + cfg.release:g} s, "
          f"operators={cfg.operators}, default storage {','.join(cfg.storage.arrays)} / {cfg.compression} / "
          f"{cfg.audio_dtype}; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; work folder {args.work}")

    synced, cached = disk_rate(args.work)
    print(f"\ndisk: sequential write {synced / 1e6:.0f} MB/s synced (512 MB, fdatasync every 64 MB), "
          f"{cached / 1e6:.0f} MB/s into the page cache")

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
        exact_fingerprint(r.audio), near_fingerprint(r.audio, cfg.sample_rate)
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
    for name in ("j1.h5", "j2.h5", "f1.h5", "f2.h5"):
        (args.work / name).unlink(missing_ok=True)

    print("\nthroughput (presets/s, 6 notes each)")
    ideal = n / t_ideal
    print(f"  {'engine only':<30}{n / t_engine:8.2f}")
    print(f"  {'ideal (engine + features)':<30}{ideal:8.2f}")
    print(f"  {'command --jobs 1':<30}{n / t_j1[0]:8.2f}   whole command, wall clock")
    print(f"  {'command --jobs 2':<30}{n / t_j2[0]:8.2f}")
    print(f"  --jobs 1 / ideal              {n / t_j1[0] / ideal:8.2f}   (target ≥ 0.85)")
    print(f"  --jobs 2 / --jobs 1           {t_j1[0] / t_j2[0]:8.2f}   (target ≥ 1.80)")
    print(f"  --jobs 1 and --jobs 2 files hold the same data: {same}")
    print(f"  fixed start-up of a run (1 preset): --jobs 1 {f_j1[0]:.1f} s wall, {f_j1[2]:.1f} CPU s; "
          f"--jobs 2 {f_j2[0]:.1f} s wall, {f_j2[2]:.1f} CPU s")
    w1, w2 = per_extra_preset(t_j1[0], f_j1[0], n), per_extra_preset(t_j2[0], f_j2[0], n)
    c1, c2 = per_extra_preset(t_j1[2], f_j1[2], n), per_extra_preset(t_j2[2], f_j2[2], n)
    if w1 is None or w2 is None:
        print(f"  steady state, wall:  {_too_few(n, 'the wall time')}")
    else:
        print(f"  steady state, wall:  --jobs 1 {1 / w1:.2f} presets/s = {1 / w1 / ideal:.2f} × ideal; "
              f"--jobs 2 {1 / w2:.2f} presets/s = {w1 / w2:.2f} × --jobs 1")
    if c1 is None or c2 is None:
        print(f"  steady state, CPU s per preset: ideal {cpu_ideal / n:.3f}, --jobs 1 and 2 {_too_few(n, 'the CPU time')}")
    else:
        print(f"  steady state, CPU s per preset: ideal {cpu_ideal / n:.3f}, --jobs 1 {c1:.3f}, --jobs 2 {c2:.3f} "
              f"(2 × --jobs 1 / --jobs 2 = {2 * c1 / c2:.2f}: the speed-up on 2 free cores)")
    if n < 100:
        print(f"  (only {n} presets: the steady-state numbers are noisy; a few hundred give stable ones)")

    # --- coordination, write path, bytes written, peak disk ----------------------------------------
    print("\nthe write path (default storage: rows written in place by the workers)")
    for writers in (1, 2):
        wp_presets, wp_bytes = write_path(sample, args.work, writers)
        print(f"  write path of {writers} worker(s) at once, encoded rows → pwrite in place + fdatasync + segment "
              f"file: {wp_presets:,.0f} presets/s = {wp_bytes / 1e6:,.0f} MB/s = {wp_bytes / synced:.2f} × the disk's "
              f"synced rate (target ≥ 0.9)")
    jobs = {}
    for store, comp in (("mel", "none"), ("mel", "gzip-4")):
        jobs[comp] = r = job_in_process(cat_path, args.work / f"io-{comp}.h5", n, 2, store, comp)
        print(f"  --jobs 2, --store {store} --compression {comp}: {r['n']} presets, final file {r['final'] / 1e6:,.1f} MB; "
              f"bytes written / final {r['written'] / r['final']:.2f} (target 1.0); peak disk / final "
              f"{r['peak'] / r['final']:.2f} (target ≤ 1.2)")
    r, small = jobs["none"], job_in_process(cat_path, args.work / "io-small.h5", max(2, n // 10), 2, "mel", "none")
    spent = (f"  coordination ceiling: the main process spent {r['main_cpu']:.2f} CPU s on {r['n']} presets and "
             f"{small['main_cpu']:.2f} on {small['n']} (its fixed part: start-up, plan, finishing); ")
    if r["n"] > small["n"] and r["main_cpu"] > small["main_cpu"]:
        per_preset = (r["main_cpu"] - small["main_cpu"]) / (r["n"] - small["n"])
        coord = 1 / per_preset
        print(f"{spent}{1e3 * per_preset:.3f} ms per extra preset → {coord:,.0f} presets/s (target ≥ 2,000)")
    else:
        coord = float("inf")   # not measured: no bound in the projections below
        print(f"{spent}per extra preset n/a (no more CPU for {r['n'] - small['n']} more presets: too few presets "
              f"to measure; use more --presets)")

    # --- storage choices and projections ----------------------------------------------------------
    steady = c1 is not None and c2 is not None
    if steady:
        per_core = 1 / c1          # presets/s of one free core, steady state, default storage
        eff = min(1.0, c1 / c2)    # per-worker efficiency from 1 to 2 workers (CPU s per preset)
    print("\nstorage per preset (6 notes) and projected time for 30,000 presets (steady state, free cores;")
    print("encode = a worker's ms per preset to convert and compress; disk = bytes written at the synced rate)")
    if not steady:
        print(f"  projections: {_too_few(n, 'the CPU time')}")
    print(f"  {'--store':<10}{'compression':<12}{'MB/preset':>10}{'encode ms':>10}{'30k GB':>8}"
          f"{'written':>8}{'32 cores':>16}{'96 cores':>16}")
    for store, comp in STORAGES:
        enc = storage.ChunkEncoder(storage.StorageConfig(tuple(store.split(",")), comp))
        size, ms = 0.0, 0.0
        for audio, mel in sample:
            t = time.perf_counter()
            for name, x in (("audio", audio), ("mel", mel)):
                if name in store:
                    size += len(enc.encode(name, x)[1]) / len(sample)
            ms += 1000 * (time.perf_counter() - t) / len(sample)
        # compressed: segments hold the chunks and are copied into the file at the end (written twice)
        written = 1.0 if comp == "none" else 2.0
        cells = []
        for cores in (32, 96) if steady else ():
            cpu_rate = cores * eff / (1 / per_core + ms / 1000)
            disk_ceiling = synced / (size * written)
            rate = min(cpu_rate, disk_ceiling, coord)
            bound = "disk" if rate == disk_ceiling else ("CPU" if rate == cpu_rate else "main")
            cells.append(f"{N_30K / rate / 60:6.1f} min {bound:<4}")
        cells = cells or ["n/a", "n/a"]
        print(f"  {store:<10}{comp:<12}{size / 1e6:10.3f}{ms:10.1f}{size * N_30K / 1e9:8.1f}{written:7.1f}×"
              + "".join(f"{c:>16}" for c in cells))
    print(f"  load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


def _same_data(a: Path, b: Path) -> bool:
    import h5py

    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        return all(np.array_equal(fa[k][...], fb[k][...], equal_nan=fa[k].dtype.kind == "f")
                   for k in ("mel", "audio", "status", "peak") if k in fa)


if __name__ == "__main__":
    from _cli import run_main   # this folder: errors as one line

    run_main(main)
